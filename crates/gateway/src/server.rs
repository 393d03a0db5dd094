//! The HTTP side: authenticate, decide, forward, filter, audit, answer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::Value;

use crate::audit::event::{AuditFacts, audit_event};
use crate::audit::writer::AuditWriter;
use crate::auth::Authenticator;
use crate::caller::Caller;
use crate::decision::{self, Decision, FilterRules, Forward, Reason, Target};
use crate::filter::{self, Filtered};
use crate::metrics::{Metrics, RequestLabels};
use crate::objections::Objections;
use crate::outcome::{bearer_challenge, operation_outcome};
use crate::reload::{PolicyHandle, SettingsHandle};
use crate::request::{self, HttpRequest, Method};
use crate::settings::Settings;

/// Largest request body forwarded (a transaction Bundle from a connector).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Patients named per audit event at most.
const MAX_AUDITED_PATIENTS: usize = 50;

/// Request headers forwarded to the store for the tenant's own writes; every
/// other header (above all `Authorization`) stays here.
const FORWARDED_HEADERS: &[header::HeaderName] =
    &[header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];
const FORWARDED_FHIR_HEADERS: &[&str] = &["if-none-exist", "prefer"];

/// Everything a request needs.
pub struct Gateway {
    pub settings: SettingsHandle,
    pub policy: PolicyHandle,
    pub auth: Authenticator,
    pub http: reqwest::Client,
    pub audit: AuditWriter,
    pub objections: Objections,
    pub metrics: Metrics,
}

/// The public router: every path goes through [`handle`].
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new().fallback(handle).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)).with_state(gateway)
}

async fn handle(State(gw): State<Arc<Gateway>>, request: Request<Body>) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let method = Method::parse(parts.method.as_str());
    let route = route_label(&path);
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return finish(&gw, started, &path, method, route, None, Reason::NotAnInteraction.into()).await,
    };
    let token = bearer(&parts.headers);
    let Some(token) = token else {
        return finish(&gw, started, &path, method, route, None, Reason::NoToken.into()).await;
    };
    let caller = match gw.auth.authenticate(token).await {
        Ok(c) => c,
        Err(error) => {
            tracing::info!(%error, "bearer token refused");
            return finish(&gw, started, &path, method, route, None, Reason::InvalidToken.into()).await;
        }
    };
    let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let http_request = HttpRequest { method, path: &path, query: query.as_deref(), accept };
    let (settings, policy) = (gw.settings.current(), gw.policy.current());
    let decision = decision::decide(&http_request, &caller, &settings, &policy, Timestamp::now());
    let outcome = match decision {
        Decision::Deny { reason, .. } => Outcome {
            // The audit names what was asked for, even when it is refused.
            action: attempted(method, &path, query.as_deref()),
            forwarded_query: query.clone(),
            ..Outcome::refused(reason)
        },
        Decision::Allow { forward, filter } => serve(&gw, &settings, None, forward, filter, &parts.headers, body).await,
        Decision::AllowFederated { agreement, forward, filter } => {
            serve(&gw, &settings, Some(agreement), forward, filter, &parts.headers, body).await
        }
    };
    finish(&gw, started, &path, method, route, Some(&caller), outcome).await
}

/// What a refused request asked for, as far as it can be read.
fn attempted(method: Method, path: &str, query: Option<&str>) -> Option<request::FhirAction> {
    let rest = match request::Route::of(request::normalise_path(path).ok()?) {
        request::Route::Tenant(rest)
        | request::Route::Federation { rest, .. }
        | request::Route::Inbound { rest, .. } => rest,
        request::Route::Unknown => return None,
    };
    let has_page = request::parse_query(query).iter().any(|(k, _)| k == "_getpages");
    request::classify(method, &rest, has_page).ok()
}

/// The result of serving a request, before audit.
struct Outcome {
    response: Result<Response, Reason>,
    agreement: Option<String>,
    action: Option<request::FhirAction>,
    forwarded_query: Option<String>,
    patients: Vec<String>,
    /// Federation: nothing leaves until its audit is written.
    confirm_audit: bool,
}

impl Outcome {
    fn refused(reason: Reason) -> Self {
        Self {
            response: Err(reason),
            agreement: None,
            action: None,
            forwarded_query: None,
            patients: Vec::new(),
            confirm_audit: false,
        }
    }
}

impl From<Reason> for Outcome {
    fn from(reason: Reason) -> Self {
        Self::refused(reason)
    }
}

async fn serve(
    gw: &Gateway,
    settings: &Settings,
    agreement: Option<String>,
    forward: Forward,
    rules: FilterRules,
    headers: &HeaderMap,
    body: Bytes,
) -> Outcome {
    let federated = agreement.is_some();
    let mut outcome = Outcome {
        response: Err(Reason::UpstreamUnavailable),
        agreement: agreement.clone(),
        action: forward.action.clone(),
        forwarded_query: Some(request::encode_query(&forward.query)),
        patients: requested_patients(&forward),
        confirm_audit: federated,
    };
    // Objections are read before the store is asked, so a failure discloses nothing.
    let objecting = if rules.honour_objections {
        let consumer_organisations = agreement
            .as_ref()
            .and_then(|id| {
                gw.policy.current().agreements.iter().find(|a| &a.id == id).map(|a| a.consumer_organisations.clone())
            })
            .unwrap_or_default();
        match gw.objections.consents().await {
            Ok(consents) => crate::consent::objecting_patients(consents.iter(), &consumer_organisations),
            Err(error) => {
                tracing::error!(%error, "cannot read patients' objections; refusing federation");
                outcome.response = Err(Reason::ObjectionsUnavailable);
                return outcome;
            }
        }
    } else {
        BTreeSet::new()
    };
    let upstream = match upstream_request(gw, settings, &forward, headers, body, federated) {
        Some(r) => r,
        None => {
            outcome.response = Err(Reason::UnknownRoute);
            return outcome;
        }
    };
    let response = match upstream.send().await {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "the upstream did not answer");
            return outcome;
        }
    };
    let status = response.status();
    let upstream_headers = response.headers().clone();
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(error) => {
            tracing::error!(%error, "the upstream answer was cut short");
            return outcome;
        }
    };
    if rules.generic_errors && !status.is_success() {
        // The store's own wording could tell what exists: say only what class of failure.
        outcome.response = Err(match status.as_u16() {
            404 | 410 => Reason::Withheld,
            400..=499 => Reason::ParameterNotAllowed,
            _ => Reason::UpstreamUnavailable,
        });
        return outcome;
    }
    let is_json =
        upstream_headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    let cx = filter::Context { rules: &rules, objecting: &objecting, pages: &settings.page_key };
    let body = if bytes.is_empty() {
        bytes
    } else if is_json {
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            tracing::error!("the upstream answered JSON that does not parse");
            return outcome;
        };
        match filter::filter_response(value, cx) {
            Filtered::Pass(value) => {
                collect_patients(&value, &mut outcome.patients);
                Bytes::from(value.to_string())
            }
            Filtered::Withheld => {
                outcome.response = Err(Reason::Withheld);
                return outcome;
            }
        }
    } else if federated {
        // Only JSON can be filtered; anything else does not leave on federation.
        tracing::error!("the upstream answered a federation request with something other than JSON");
        return outcome;
    } else {
        bytes
    };
    let mut builder = Response::builder().status(status.as_u16());
    if is_json {
        builder = builder.header(header::CONTENT_TYPE, "application/fhir+json;charset=utf-8");
    } else if let Some(ct) = upstream_headers.get(header::CONTENT_TYPE) {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = upstream_headers.get(&name) {
            builder = builder.header(name, v);
        }
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(rewritten) =
            upstream_headers.get(&name).and_then(|v| v.to_str().ok()).and_then(|l| filter::rewrite_location(l, cx))
            && let Ok(value) = HeaderValue::from_str(&rewritten)
        {
            builder = builder.header(name, value);
        }
    }
    outcome.response = Ok(builder.body(Body::from(body)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()));
    outcome
}

fn upstream_request(
    gw: &Gateway,
    settings: &Settings,
    forward: &Forward,
    headers: &HeaderMap,
    body: Bytes,
    federated: bool,
) -> Option<reqwest::RequestBuilder> {
    let base = match &forward.target {
        Target::Store => settings.upstream.clone(),
        Target::Connector(name) => settings.inbound.get(name)?.upstream.clone(),
    };
    let mut url = base;
    {
        let mut segments = url.path_segments_mut().ok()?;
        segments.pop_if_empty();
        // Each segment is percent-encoded by `url`: a checked segment stays one segment.
        segments.extend(&forward.path);
    }
    if !forward.query.is_empty() {
        url.set_query(Some(&request::encode_query(&forward.query)));
    }
    let method = reqwest::Method::from_bytes(forward.method.as_str().as_bytes()).ok()?;
    let mut builder = gw
        .http
        .request(method, url)
        .header(header::ACCEPT, "application/fhir+json")
        // The store's search cache would serve a result computed before a write or an objection.
        .header(header::CACHE_CONTROL, "no-cache");
    if !federated {
        for name in FORWARDED_HEADERS {
            if let Some(v) = headers.get(name) {
                builder = builder.header(name, v);
            }
        }
        for name in FORWARDED_FHIR_HEADERS {
            if let Some(v) = headers.get(*name) {
                builder = builder.header(*name, v);
            }
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
    }
    Some(builder)
}

/// Patients a request names: a Patient read, or a `patient`/`subject` parameter.
fn requested_patients(forward: &Forward) -> Vec<String> {
    let mut patients = Vec::new();
    if let Some(request::FhirAction::Read { resource_type: "Patient", id }) = &forward.action {
        patients.push(id.clone());
    }
    for (k, v) in &forward.query {
        let name = k.split(':').next().unwrap_or("");
        if name == "patient"
            || name == "subject"
            || (name == "_id" && forward.path.first().is_some_and(|t| t == "Patient"))
        {
            for value in v.split(',') {
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                if request::is_fhir_id(id) {
                    patients.push(id.to_string());
                }
            }
        }
    }
    patients
}

/// Adds the patients of what is returned, for the audit.
fn collect_patients(body: &Value, patients: &mut Vec<String>) {
    let resources: Vec<&Value> = if carerecord_fhir::bundle::is_bundle(body) {
        carerecord_fhir::bundle::entry_resources(body).collect()
    } else {
        vec![body]
    };
    for resource in resources {
        patients.extend(carerecord_fhir::patient::patient_ids(resource));
    }
    patients.sort();
    patients.dedup();
    patients.truncate(MAX_AUDITED_PATIENTS);
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn route_label(path: &str) -> &'static str {
    match request::normalise_path(path).map(request::Route::of) {
        Ok(request::Route::Tenant(_)) => "tenant",
        Ok(request::Route::Federation { .. }) => "federation",
        Ok(request::Route::Inbound { .. }) => "inbound",
        _ => "other",
    }
}

/// Audits, logs, counts and answers.
async fn finish(
    gw: &Gateway,
    started: Instant,
    path: &str,
    method: Method,
    route: &'static str,
    caller: Option<&Caller>,
    outcome: Outcome,
) -> Response {
    let mut failure = outcome.response.as_ref().err().copied();
    let action = outcome.action.as_ref();
    let facts = AuditFacts {
        recorded: Some(Timestamp::now()),
        caller,
        interaction: action.map(|a| a.code()),
        method: method.as_str(),
        resource_type: action.and_then(|a| a.resource_type()),
        id: action.and_then(|a| a.id()),
        query: outcome.forwarded_query.as_deref(),
        patients: outcome.patients.clone(),
        agreement: outcome.agreement.as_deref(),
        failure,
        tenant: &gw.settings.current().tenant,
    };
    let event = audit_event(&facts);
    let audited = if outcome.confirm_audit && failure.is_none() {
        gw.audit.write_confirmed(event).await
    } else {
        gw.audit.write(event).await
    };
    let mut response = outcome.response;
    if let Err(error) = audited {
        tracing::error!(%error, "audit event not written");
        // No audit, no disclosure: whatever was about to leave does not.
        if response.is_ok() {
            response = Err(Reason::AuditUnavailable);
            failure = Some(Reason::AuditUnavailable);
        }
    }
    let response = response.unwrap_or_else(refusal);
    let labels = RequestLabels {
        route,
        decision: if failure.is_none() { "allow" } else { "deny" },
        reason: failure.map_or("none", Reason::as_str),
    };
    let elapsed = started.elapsed();
    gw.metrics.requests.get_or_create(&labels).inc();
    gw.metrics.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    // Path only: queries carry identifiers (NHS numbers), tokens never appear here.
    tracing::info!(
        target: "access",
        method = method.as_str(),
        path,
        status = response.status().as_u16(),
        decision = labels.decision,
        reason = labels.reason,
        subject = caller.map(|c| c.subject.as_str()),
        client = caller.and_then(|c| c.client_id.as_deref()),
        organisation = caller.and_then(|c| c.organisation.as_deref()),
        agreement = outcome.agreement.as_deref(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

fn refusal(reason: Reason) -> Response {
    let mut response =
        (StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::FORBIDDEN), operation_outcome(reason).to_string())
            .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json;charset=utf-8"));
    if reason.status() == 401
        && let Ok(value) = HeaderValue::from_str(&bearer_challenge(reason))
    {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
