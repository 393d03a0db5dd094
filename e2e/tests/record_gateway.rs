//! The record gateway on a real data plane: a real HAPI FHIR JPA server as
//! the provider tenant's record store, a real OpenID Connect server
//! (Keycloak) issuing the tokens, and `ics-operator gateway` configured from
//! what `ics-operator render` renders for the example agreement between
//! Cheshire and Merseyside (provider) and Greater Manchester (consumer).
//! `e2e/dataplane up` starts all three and writes the environment these
//! tests read (e2e/.dataplane/env, or DATAPLANE_ENV).
//!
//! One behaviour per test. The expiry test rewrites the policy file and the
//! reload test the configuration file, so each takes the data plane alone;
//! the others share it.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::RwLock;

static POLICY: RwLock<()> = RwLock::const_new(());

struct Plane {
    env: HashMap<String, String>,
    http: reqwest::Client,
}

fn plane() -> Plane {
    let env = e2e::dataplane_env();
    assert_eq!(env.get("GATEWAY_STATUS").map(String::as_str), Some("running"), "the gateway is not running");
    let _ = rustls::crypto::ring::default_provider().install_default();
    Plane { env, http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client") }
}

impl Plane {
    fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} missing from the data plane's env file"))
    }

    /// An access token for one of the data plane's clients (PROVIDER,
    /// CONSUMER, CONSUMER_NARROW, OUTSIDER), by client credentials.
    async fn token(&self, who: &str) -> String {
        let form = [("grant_type", "client_credentials")];
        let response = self
            .http
            .post(self.var("TOKEN_URL"))
            .basic_auth(self.var(&format!("{who}_CLIENT_ID")), Some(self.var(&format!("{who}_CLIENT_SECRET"))))
            .form(&form)
            .send()
            .await
            .expect("token endpoint answers");
        assert!(response.status().is_success(), "token for {who}: {}", response.status());
        let body: Value = response.json().await.expect("token response");
        body["access_token"].as_str().expect("access_token").to_string()
    }

    async fn get(&self, url: &str, token: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.get(url).header("Accept", "application/fhir+json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("gateway answers");
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn federation(&self, who: &str, path: &str) -> (StatusCode, Value) {
        let token = self.token(who).await;
        let (status, _, body) = self.get(&format!("{}/{path}", self.var("FEDERATION_BASE")), Some(&token)).await;
        (status, body)
    }

    /// The store's own answer, past the gateway: for checks only.
    /// `gateway_config_reloads_total{result="ok"}` from the gateway's metrics.
    async fn config_reloads(&self) -> f64 {
        let url = format!("{}/metrics", self.var("GATEWAY_ADMIN_URL"));
        let text = self.http.get(url).send().await.expect("metrics answer").text().await.expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix("gateway_config_reloads_total{result=\"ok\"} "))
            .map_or(0.0, |v| v.trim().parse().expect("a counter value"))
    }

    async fn store(&self, path: &str) -> Value {
        let url = format!("{}/{path}", self.var("STORE_URL"));
        let response = self.http.get(url).header("Cache-Control", "no-cache").send().await.expect("store answers");
        response.json().await.expect("store JSON")
    }
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().map(|e| e.iter().filter_map(|e| e.get("resource")).collect()).unwrap_or_default()
}

fn is_outcome(body: &Value) -> bool {
    body["resourceType"] == "OperationOutcome"
}

const SHARED: [&str; 3] = ["MedicationStatement", "AllergyIntolerance", "CarePlan"];
const EXCLUDED_CODES: [&str; 5] = ["SEX", "STD", "HIV", "GENDER", "GDIS"];

/// Every resource in a response is of a shared type, carries no excluded
/// label and is not about the objecting patient.
fn assert_within_agreement(plane: &Plane, body: &Value) {
    let objecting = format!("Patient/{}", plane.var("OBJECTING_PATIENT_ID"));
    for r in resources(body) {
        let t = r["resourceType"].as_str().unwrap_or_default();
        assert!(SHARED.contains(&t) || t == "OperationOutcome", "a {t} left the gateway");
        let labels = r["meta"]["security"].as_array().cloned().unwrap_or_default();
        for l in labels {
            let code = l["code"].as_str().unwrap_or_default();
            assert!(!EXCLUDED_CODES.contains(&code), "a resource labelled {code} left the gateway");
        }
        assert!(!r.to_string().contains(&objecting), "a record of the objecting patient left the gateway");
    }
}

#[tokio::test]
async fn a_request_without_a_token_is_refused_with_401_and_www_authenticate() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, headers, body) =
        plane.get(&format!("{}/MedicationStatement", plane.var("FEDERATION_BASE")), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap_or_default().starts_with("Bearer")));
    assert!(is_outcome(&body), "{body}");
}

#[tokio::test]
async fn a_tampered_token_is_refused_with_401() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let token = plane.token("CONSUMER").await;
    // Change one character of the payload: the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let payload = &mut parts[1];
    let last = payload.pop().unwrap();
    payload.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _, _) =
        plane.get(&format!("{}/MedicationStatement", plane.var("FEDERATION_BASE")), Some(&parts.join("."))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_from_an_untrusted_issuer_is_refused_with_401() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let key = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/gateway/tests/fixtures/test-issuer-key.pem"),
    )
    .unwrap();
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "iss": "https://idp.evil.example/realms/carerecord", "aud": "carerecord-gateway", "sub": "mallory",
        "ods": "QOP", "scope": "system/*.rs", "iat": now, "exp": now + 300,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("evil".into());
    let token =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap()).unwrap();
    let (status, _, _) =
        plane.get(&format!("{}/MedicationStatement", plane.var("FEDERATION_BASE")), Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Keycloak's `cm-provider-expiring` client is issued tokens that live one
/// second. The gateway allows 30 s of clock skew, so the token works at
/// first and is refused, as `invalid_token`, once its `exp` (plus the skew)
/// has passed.
#[tokio::test]
async fn an_expired_token_is_refused_with_401() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let token = plane.token("EXPIRING").await;
    let url = format!("{}/Patient/{}", plane.var("TENANT_BASE"), plane.var("OTHER_PATIENT_ID"));
    let (status, _, body) = plane.get(&url, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "a fresh token is accepted: {body}");
    let mut refused = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (status, headers, body) = plane.get(&url, Some(&token)).await;
        if status != StatusCode::OK {
            refused = Some((status, headers, body));
            break;
        }
    }
    let (status, headers, body) = refused.expect("the gateway kept accepting a token 80 s after it expired");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(is_outcome(&body), "{body}");
}

#[tokio::test]
async fn an_unsigned_token_is_refused_with_401() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let token = plane.token("CONSUMER").await;
    let parts: Vec<&str> = token.split('.').collect();
    // {"alg":"none"} with the real claims and no signature.
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
    let (status, _, _) =
        plane.get(&format!("{}/MedicationStatement", plane.var("FEDERATION_BASE")), Some(&unsigned)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_organisation_in_neither_tenant_is_refused() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, body) = plane.federation("OUTSIDER", "MedicationStatement").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(is_outcome(&body));
}

#[tokio::test]
async fn the_consumer_cannot_use_the_providers_own_fhir_base() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let token = plane.token("CONSUMER").await;
    let (status, _, body) = plane.get(&format!("{}/MedicationStatement", plane.var("TENANT_BASE")), Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn the_provider_reads_its_own_records_on_its_fhir_base() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let token = plane.token("PROVIDER").await;
    let (status, _, body) = plane.get(&format!("{}/Condition", plane.var("TENANT_BASE")), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!resources(&body).is_empty(), "the provider sees its Conditions");
}

#[tokio::test]
async fn a_consumer_without_the_scope_for_a_type_is_refused() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, body) = plane.federation("CONSUMER_NARROW", "MedicationStatement").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn the_consumer_reads_an_agreed_type_within_the_agreement() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, body) = plane.federation("CONSUMER", "MedicationStatement").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!resources(&body).is_empty(), "shared records are returned");
    assert_within_agreement(&plane, &body);
}

#[tokio::test]
async fn a_type_outside_the_agreement_is_refused() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, body) = plane.federation("CONSUMER", "Condition").await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, body) =
        plane.federation("CONSUMER", &format!("Condition/{}", plane.var("UNSHARED_CONDITION_ID"))).await;
    assert!(status.is_client_error(), "{status} {body}");
}

#[tokio::test]
async fn queries_that_reach_beyond_the_agreement_are_refused() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let patient = plane.var("OTHER_PATIENT_ID").to_string();
    for path in [
        "MedicationStatement?_include=*".to_string(),
        "MedicationStatement?_revinclude=*".to_string(),
        "MedicationStatement?_has:Condition:subject:code=1234".to_string(),
        "MedicationStatement?subject.name=Smith".to_string(),
        "MedicationStatement?subject:Patient.name=Smith".to_string(),
        "MedicationStatement/_history".to_string(),
        "_history".to_string(),
        format!("Patient/{patient}/$everything"),
        format!("Patient/{patient}/Condition"),
        format!("Patient/{patient}/MedicationStatement"),
        "$graphql?query={PatientList{name{family}}}".to_string(),
        "MedicationStatement?_format=xml".to_string(),
        "MedicationStatement?_contained=true".to_string(),
        "MedicationStatement/../Condition".to_string(),
        "MedicationStatement/%2e%2e/Condition".to_string(),
    ] {
        let (status, body) = plane.federation("CONSUMER", &path).await;
        assert!(status.is_client_error(), "{path}: {status} {body}");
        assert!(resources(&body).iter().all(|r| r["resourceType"] == "OperationOutcome"), "{path}: {body}");
    }
}

#[tokio::test]
async fn included_resources_of_unshared_types_are_filtered_out() {
    let _shared = POLICY.read().await;
    let plane = plane();
    // The store would include each statement's Patient; Patient is not shared.
    let direct = plane.store("MedicationStatement?_include=MedicationStatement:subject").await;
    assert!(resources(&direct).iter().any(|r| r["resourceType"] == "Patient"), "fixture: the store includes Patients");
    let (status, body) = plane.federation("CONSUMER", "MedicationStatement?_include=MedicationStatement:subject").await;
    assert!(status == StatusCode::OK || status.is_client_error(), "{status}");
    assert!(!resources(&body).iter().any(|r| r["resourceType"] == "Patient"), "an included Patient left the gateway");
    assert_within_agreement(&plane, &body);
}

#[tokio::test]
async fn a_resource_with_an_excluded_sensitive_category_is_never_returned() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let labelled = plane.var("LABELLED_RESOURCE").to_string();
    // The store holds it, labelled.
    let direct = plane.store(&labelled).await;
    assert!(direct["meta"]["security"].is_array(), "fixture: {direct}");
    let (status, body) = plane.federation("CONSUMER", &labelled).await;
    assert!(status.is_client_error(), "{labelled}: {status} {body}");
    let (_, search) = plane.federation("CONSUMER", "MedicationStatement?_count=100").await;
    let id = labelled.rsplit('/').next().unwrap();
    assert!(!resources(&search).iter().any(|r| r["id"] == id), "the labelled record was in a search");
    assert_within_agreement(&plane, &search);
}

#[tokio::test]
async fn the_records_of_a_patient_who_objected_are_never_returned() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let objecting = plane.var("OBJECTING_PATIENT_ID").to_string();
    let direct = plane.store(&format!("MedicationStatement?subject=Patient/{objecting}")).await;
    assert!(!resources(&direct).is_empty(), "fixture: the objecting patient has records in the store");
    let (status, body) =
        plane.federation("CONSUMER", &format!("MedicationStatement?subject=Patient/{objecting}")).await;
    assert!(status == StatusCode::OK || status.is_client_error(), "{status}");
    assert!(resources(&body).iter().all(|r| r["resourceType"] == "OperationOutcome"), "{body}");
    assert_within_agreement(&plane, &body);
}

#[tokio::test]
async fn paging_links_point_at_the_callers_base_and_totals_never_count_withheld_records() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let (status, body) = plane.federation("CONSUMER", "MedicationStatement?_count=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let store = plane.var("STORE_URL");
    for link in body["link"].as_array().cloned().unwrap_or_default() {
        let url = link["url"].as_str().unwrap_or_default();
        assert!(!url.contains(store), "link to the store: {url}");
        if let Some(page) = url.split("_getpages=").nth(1) {
            // The page id travels with a MAC binding it to this caller.
            assert!(page.split('&').next().unwrap().contains('.'), "unbound page id: {url}");
        }
        assert!(url.contains("/federation/greater-manchester/fhir"), "link outside the caller's base: {url}");
    }
    for entry in body["entry"].as_array().cloned().unwrap_or_default() {
        let full = entry["fullUrl"].as_str().unwrap_or_default();
        assert!(full.contains("/federation/greater-manchester/fhir/"), "fullUrl: {full}");
    }
    if let Some(total) = body["total"].as_u64() {
        let all = plane.store("MedicationStatement?_summary=count").await["total"].as_u64().unwrap_or_default();
        assert!(total < all, "Bundle.total {total} counts withheld records (store holds {all})");
    }
    // The next page is served, within the agreement, to the caller it was
    // issued to, and to no one else.
    if let Some(next) = body["link"].as_array().and_then(|l| l.iter().find(|l| l["relation"] == "next")) {
        let url = next["url"].as_str().unwrap().to_string();
        let path = url.split("/federation/greater-manchester/fhir").nth(1).unwrap().trim_start_matches('/');
        let (status, page) = plane.federation("CONSUMER", path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_within_agreement(&plane, &page);
        let (status, _) = plane.federation("CONSUMER_NARROW", path).await;
        assert!(status.is_client_error(), "a page id served another caller: {status}");
    }
}

#[tokio::test]
async fn every_request_leaves_an_audit_event_in_the_providers_store() {
    let _shared = POLICY.read().await;
    let plane = plane();
    let count = || async { plane.store("AuditEvent?_summary=count").await["total"].as_u64().unwrap_or_default() };
    let before = count().await;
    let _ = plane.federation("CONSUMER", "AllergyIntolerance").await;
    let _ = plane.federation("OUTSIDER", "AllergyIntolerance").await;
    let mut after = before;
    for _ in 0..40 {
        after = count().await;
        if after >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(after >= before + 2, "audit events: {before} -> {after}");
    let recent = plane.store("AuditEvent?_sort=-_lastUpdated&_count=20").await;
    let text = recent.to_string();
    assert!(text.contains("DSA-2026-CM-GM-001"), "no audit event names the agreement");
    assert!(text.contains("QOP"), "no audit event names the consumer's organisation");
}

#[tokio::test]
async fn an_agreement_whose_expiry_passes_while_the_gateway_runs_stops_sharing() {
    let _alone = POLICY.write().await;
    let plane = plane();
    let path = plane.var("GATEWAY_POLICY_FILE").to_string();
    let original = std::fs::read_to_string(&path).unwrap();
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6)).to_string();
    let mut policy: serde_yaml::Value = serde_yaml::from_str(&original).unwrap();
    policy["agreements"][0]["expires"] = serde_yaml::Value::String(soon);
    std::fs::write(&path, serde_yaml::to_string(&policy).unwrap()).unwrap();

    // Before the instant the gateway shares (once it has read the file)...
    let mut shared = false;
    for _ in 0..16 {
        if plane.federation("CONSUMER", "MedicationStatement").await.0 == StatusCode::OK {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ... and after it, with no operator and no route change, it refuses.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (after, body) = plane.federation("CONSUMER", "MedicationStatement").await;
    std::fs::write(&path, &original).unwrap();
    // Let the gateway read the original policy again before others run.
    for _ in 0..40 {
        if plane.federation("CONSUMER", "MedicationStatement").await.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(shared, "the agreement was not honoured before it expired");
    assert_eq!(after, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn an_organisation_added_to_the_configuration_is_served_without_a_restart() {
    let _alone = POLICY.write().await;
    let plane = plane();
    let path = plane.var("GATEWAY_CONFIG_FILE").to_string();
    let original = std::fs::read_to_string(&path).unwrap();
    let joining = plane.var("OUTSIDER_ODS").to_string();
    let url = format!("{}/Condition", plane.var("TENANT_BASE"));
    let token = plane.token("OUTSIDER").await;
    let reloads_before = plane.config_reloads().await;
    let before = plane.get(&url, Some(&token)).await.0;

    let mut config: serde_yaml::Value = serde_yaml::from_str(&original).unwrap();
    let organisations = config["tenant"]["organisations"].as_sequence_mut().expect("tenant.organisations");
    organisations.push(serde_yaml::Value::String(joining));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut after = before;
    for _ in 0..40 {
        after = plane.get(&url, Some(&token)).await.0;
        if after == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::write(&path, &original).unwrap();
    // Let the gateway read the original configuration again before others run.
    let mut restored = after;
    for _ in 0..40 {
        restored = plane.get(&url, Some(&token)).await.0;
        if restored == StatusCode::FORBIDDEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Counters start at zero in a new process: two more reloads mean the
    // same gateway took up both changes.
    let reloads_after = plane.config_reloads().await;
    assert!(
        reloads_after >= reloads_before + 2.0,
        "reloads {reloads_before} -> {reloads_after}: the gateway restarted"
    );
    assert_eq!(before, StatusCode::FORBIDDEN, "the organisation acted for the tenant before it joined");
    assert_eq!(after, StatusCode::OK, "the organisation that joined was not served");
    assert_eq!(restored, StatusCode::FORBIDDEN, "the organisation removed again is still served");
}
