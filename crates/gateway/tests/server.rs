//! The gateway over real HTTP, against a fake issuer and a fake record
//! store on loopback: authentication, filtering, audit and fail-closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use carerecord_gateway::audit::writer::AuditWriter;
use carerecord_gateway::auth::Authenticator;
use carerecord_gateway::metrics::Metrics;
use carerecord_gateway::objections::Objections;
use carerecord_gateway::paging::PageKey;
use carerecord_gateway::policy::Policy;
use carerecord_gateway::reload::{PolicyHandle, SettingsHandle};
use carerecord_gateway::server::{Gateway, router};
use carerecord_gateway::settings::Settings;
use serde_json::{Value, json};

const KEY: &str = include_str!("fixtures/test-issuer-key.pem");
const MODULUS: &str = include_str!("fixtures/test-issuer-n.txt");

#[derive(Default)]
struct Store {
    audits: Mutex<Vec<Value>>,
    audit_down: AtomicBool,
    searches: AtomicUsize,
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn issuer() -> String {
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let b = b.lock().unwrap().clone();
                async move { Json(json!({"issuer": b, "jwks_uri": format!("{b}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            get(|| async {
                Json(json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": MODULUS.trim(), "e": "AQAB"}]}))
            }),
        );
    let url = serve(app).await;
    *base.lock().unwrap() = url.clone();
    url
}

fn condition(id: &str, patient: &str, label: Option<&str>) -> Value {
    let mut c = json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")}});
    if let Some(code) = label {
        c["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}]});
    }
    c
}

async fn store(state: Arc<Store>) -> String {
    async fn audit(State(s): State<Arc<Store>>, Json(body): Json<Value>) -> impl IntoResponse {
        if s.audit_down.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        s.audits.lock().unwrap().push(body);
        (StatusCode::CREATED, Json(json!({"resourceType": "AuditEvent", "id": "1"}))).into_response()
    }
    let app = axum::Router::new()
        .route(
            "/fhir/Condition",
            get(|State(s): State<Arc<Store>>| async move {
                s.searches.fetch_add(1, Ordering::SeqCst);
                (
                    [("content-type", "application/fhir+json")],
                    Json(json!({"resourceType": "Bundle", "type": "searchset", "total": 3, "link": [
                        {"relation": "next", "url": "http://internal-store:8080/fhir?_getpages=pg1&_getpagesoffset=3"}
                    ], "entry": [
                        {"fullUrl": "http://internal-store:8080/fhir/Condition/c1", "resource": condition("c1", "p1", None)},
                        {"resource": condition("c2", "p1", Some("HIV"))},
                        {"resource": condition("c3", "objector", None)}
                    ]})),
                )
            }),
        )
        .route(
            "/fhir/Consent",
            get(|| async {
                (
                    [("content-type", "application/fhir+json")],
                    Json(json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/objector"},
                        "provision": {"type": "deny"}
                    }}]})),
                )
            }),
        )
        .route("/fhir/AuditEvent", post(audit))
        // Audit batches are transactions posted to the base, as HAPI takes them.
        .route("/fhir", post(audit))
        .route("/fhir/", post(audit))
        .with_state(state);
    serve(app).await
}

const POLICY: &str = r#"
apiVersion: carerecord.dev/sharing-policy/v1
agreements:
  - agreementId: DSA-1
    consumerTenant: greater-manchester
    consumerOrganisations: [QOP]
    resources: [Condition]
    excludedCategories: [HIV]
    validFrom: "2020-01-01T00:00:00Z"
    expires: "2100-01-01T00:00:00Z"
    purpose: DirectCare
"#;

struct Harness {
    gateway: String,
    issuer: String,
    store: Arc<Store>,
    http: reqwest::Client,
}

async fn harness() -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let issuer = issuer().await;
    let state = Arc::new(Store::default());
    let store_url = store(state.clone()).await;
    let config: carerecord_config::GatewayConfig = serde_yaml::from_str(&format!(
        r#"
apiVersion: carerecord.dev/gateway/v1
tenant: {{name: cheshire, organisations: [R0A]}}
publicBaseUrl: https://cheshire.example
upstreamUrl: {store_url}/fhir
listen: 127.0.0.1:0
adminListen: 127.0.0.1:0
issuers: [{{issuer: "{issuer}", audience: record-gateway}}]
audit: {{bufferSize: 16, flushBoundMs: 500}}
"#
    ))
    .unwrap();
    let settings = Settings::compile(&config, PageKey::from_secret(&[9; 32])).unwrap();
    let http = reqwest::Client::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let gateway = Gateway {
        audit: AuditWriter::spawn(
            http.clone(),
            settings.upstream.clone(),
            16,
            Duration::from_millis(500),
            metrics.clone(),
        ),
        auth: Authenticator::new(&config.issuers, http.clone(), Duration::from_secs(10)),
        objections: Objections::new(http.clone(), settings.upstream.clone(), Duration::from_secs(5)),
        policy: PolicyHandle::new(Policy::from_yaml(POLICY).unwrap()),
        settings: SettingsHandle::new(settings),
        http: http.clone(),
        metrics,
    };
    let gateway = serve(router(Arc::new(gateway))).await;
    Harness { gateway, issuer, store: state, http }
}

fn token(issuer: &str, org: &str, scope: &str, expires_in: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "iss": issuer, "aud": "record-gateway", "sub": "svc-gm", "client_id": "gm-client",
        "ods": org, "scope": scope, "iat": now, "exp": now + expires_in,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap()).unwrap()
}

impl Harness {
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.gateway));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
}

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge() {
    let h = harness().await;
    let r = h.get("/federation/greater-manchester/fhir/Condition", None).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let h = harness().await;
    let t = token(&h.issuer, "QOP", "system/*.rs", -3600);
    assert_eq!(h.get("/federation/greater-manchester/fhir/Condition", Some(&t)).await.status(), 401);
}

#[tokio::test]
async fn a_token_from_an_untrusted_issuer_is_401() {
    let h = harness().await;
    let t = token("https://evil.example", "QOP", "system/*.rs", 300);
    assert_eq!(h.get("/federation/greater-manchester/fhir/Condition", Some(&t)).await.status(), 401);
}

#[tokio::test]
async fn a_federated_search_is_filtered_rewritten_and_audited() {
    let h = harness().await;
    let t = token(&h.issuer, "QOP", "system/*.rs", 300);
    let r = h.get("/federation/greater-manchester/fhir/Condition?patient=p1", Some(&t)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<&str> =
        body["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["c1"], "the HIV-labelled and the objector's conditions are withheld");
    assert!(body.get("total").is_none());
    assert_eq!(body["entry"][0]["fullUrl"], "https://cheshire.example/federation/greater-manchester/fhir/Condition/c1");
    assert!(
        body["link"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://cheshire.example/federation/greater-manchester/fhir?_getpages=pg1.")
    );
    let audits = h.store.audits.lock().unwrap();
    let text = serde_json::to_string(&*audits).unwrap();
    assert!(text.contains("DSA-1") && text.contains("QOP") && text.contains("svc-gm"), "{text}");
}

#[tokio::test]
async fn an_outsider_is_403() {
    let h = harness().await;
    let t = token(&h.issuer, "RXX", "system/*.rs", 300);
    assert_eq!(h.get("/federation/greater-manchester/fhir/Condition", Some(&t)).await.status(), 403);
    assert_eq!(h.store.searches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn federation_fails_closed_when_audit_cannot_be_written() {
    let h = harness().await;
    h.store.audit_down.store(true, Ordering::SeqCst);
    let t = token(&h.issuer, "QOP", "system/*.rs", 300);
    let r = h.get("/federation/greater-manchester/fhir/Condition", Some(&t)).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
}
