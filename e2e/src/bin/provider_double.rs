//! A GP practice system's FHIR R4 API, as a test double (the real ones,
//! EMIS Web and SystmOne, are proprietary). It serves synthetic, UK
//! Core-shaped records for a practice's patients (valid NHS numbers in the
//! 999 test range) the way such APIs behave: OAuth 2.0 client credentials,
//! searches by `_lastUpdated` sorted and paged, and on request the awkward
//! parts: `429` with `Retry-After`, slow pages, changes committed late
//! (a `lastUpdated` earlier than records already served), and records a
//! store will refuse.
//!
//!   provider_double --listen 127.0.0.1:0 --ods N81001 --patients 20 --nhs-seed 1000
//!       --client-id emis --client-secret s3cret
//!
//! It also runs Bulk Data (v2) exports as such systems do: `GET
//! /fhir/Patient/$export` or `/fhir/$export` with `Prefer: respond-async`,
//! `_type` and `_since` (records changed after it) answers `202` with a
//! status URL, which answers `202` with `Retry-After` and `X-Progress` a
//! few times, then the manifest (`requiresAccessToken: true`) naming NDJSON
//! files that need the bearer token; `DELETE` on the status URL drops the
//! job. And it plays a FHIR Subscription's server side: on request it sends
//! rest-hook notifications (R4: an empty body; the R4 Backport IG: an
//! id-only notification Bundle) to a URL with the header the Subscription's
//! `channel.header` would carry.
//!
//! It prints `listening on <addr>` once ready. Control endpoints (tests only,
//! no auth): `POST /_control/throttle {"count": n, "retryAfter": s}`,
//! `POST /_control/change {"type": "...", "id": "...", "lateSeconds": s}`,
//! `POST /_control/add {resource}`, `POST /_control/delay {"ms": n}`,
//! `POST /_control/export {"polls": n, "fileSize": n, "fileDelayMs": n, "errors": ["..."]}`,
//! `POST /_control/notify {"url": "...", "authorization": "...", "payload":
//! "empty"|"id-only", "change": {like /_control/change}}`, `GET /_control/stats`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Resource types served, in the order a GP system's API lists them.
const TYPES: [&str; 6] =
    ["Patient", "AllergyIntolerance", "MedicationStatement", "Condition", "Immunization", "Observation"];

struct Args {
    listen: SocketAddr,
    ods: String,
    patients: usize,
    nhs_seed: u64,
    client_id: String,
    client_secret: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        listen: "127.0.0.1:0".parse()?,
        ods: "N81001".into(),
        patients: 20,
        nhs_seed: 1000,
        client_id: "gp-system".into(),
        client_secret: "gp-secret".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => a.listen = value.parse()?,
            "--ods" => a.ods = value,
            "--patients" => a.patients = value.parse()?,
            "--nhs-seed" => a.nhs_seed = value.parse()?,
            "--client-id" => a.client_id = value,
            "--client-secret" => a.client_secret = value,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// A valid NHS number in the 999 test range, or None when `n`'s check digit would be 10.
pub fn nhs_number(n: u64) -> Option<String> {
    let body = format!("999{:06}", n % 1_000_000);
    let sum: u32 = body.chars().zip((2..=10).rev()).map(|(c, w)| c.to_digit(10).unwrap_or(0) * w).sum();
    let check = (11 - sum % 11) % 11;
    (check != 10).then(|| format!("{body}{check}"))
}

struct Record {
    resource: Value,
    version: u64,
    last_updated: Timestamp,
}

#[derive(Default)]
struct Throttle {
    remaining: u32,
    retry_after: u64,
    /// When the last 429 said the client may come back.
    not_before: Option<Instant>,
}

struct Double {
    records: BTreeMap<(String, String), Record>,
    tokens: HashSet<String>,
    client: (String, String),
    throttle: Throttle,
    page_delay: Duration,
    requests: u64,
    throttled: u64,
    /// Requests that came back before a Retry-After had passed.
    early: u64,
    next_token: u64,
    export: ExportSettings,
    jobs: BTreeMap<u64, ExportJob>,
    next_job: u64,
    kick_offs: u64,
    deleted_jobs: u64,
    /// Records written into export files (every file download counts).
    exported_records: u64,
    notifications: u64,
}

/// How exports behave, set by `/_control/export`.
struct ExportSettings {
    /// Status requests answered 202 before the manifest.
    polls: u32,
    /// Records per NDJSON file.
    file_size: usize,
    /// Delay before each file is served.
    file_delay: Duration,
    /// OperationOutcome diagnostics listed in the manifest's error file.
    errors: Vec<String>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self { polls: 2, file_size: 50, file_delay: Duration::ZERO, errors: Vec::new() }
    }
}

/// One kicked-off export: its records as of its transactionTime.
struct ExportJob {
    transaction_time: Timestamp,
    request: String,
    polls_left: u32,
    /// (type, the file's records as NDJSON lines)
    files: Vec<(String, Vec<String>)>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Double>>;

const FAMILIES: [&str; 10] =
    ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright"];
const GIVEN: [&str; 10] = ["Olivia", "Harry", "Amelia", "George", "Isla", "Noah", "Ava", "Leo", "Mia", "Arthur"];
const STREETS: [&str; 5] = ["Bold Street", "Lark Lane", "Allerton Road", "Smithdown Road", "Church Road"];

fn seed(a: &Args) -> BTreeMap<(String, String), Record> {
    let mut records = BTreeMap::new();
    // Records last changed over the past 30 days, oldest first.
    let start = Timestamp::now() - SignedDuration::from_hours(24 * 30);
    let mut minute = 0i64;
    let mut add = |resource: Value| {
        minute += 7;
        let t = resource["resourceType"].as_str().unwrap_or_default().to_string();
        let id = resource["id"].as_str().unwrap_or_default().to_string();
        records
            .insert((t, id), Record { resource, version: 1, last_updated: start + SignedDuration::from_mins(minute) });
    };
    let mut n = a.nhs_seed;
    for i in 0..a.patients {
        let nhs = loop {
            n += 1;
            if let Some(nhs) = nhs_number(n) {
                break nhs;
            }
        };
        let pid = format!("{}-p{i}", a.ods.to_lowercase());
        let patient = format!("Patient/{pid}");
        add(json!({
            "resourceType": "Patient", "id": pid,
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
            "name": [{"use": "official", "family": FAMILIES[i % 10], "given": [GIVEN[(i / 10) % 10]]}],
            "gender": if i % 2 == 0 { "female" } else { "male" },
            "birthDate": format!("{}-{:02}-{:02}", 1940 + (i * 7) % 70, 1 + i % 12, 1 + i % 28),
            "address": [{"line": [format!("{} {}", 1 + i, STREETS[i % 5])], "city": "Liverpool", "postalCode": format!("L{} {}AB", 1 + i % 25, i % 10)}],
            "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": a.ods}}],
        }));
        add(json!({
            "resourceType": "AllergyIntolerance", "id": format!("{pid}-allergy"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005", "display": "Allergy to penicillin"}]},
            "patient": {"reference": patient}, "recordedDate": "2019-03-14",
        }));
        add(json!({
            "resourceType": "MedicationStatement", "id": format!("{pid}-med"),
            "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "318420003", "display": "Atorvastatin 20mg tablets"}]},
            "subject": {"reference": patient}, "dateAsserted": "2025-06-02",
            "dosage": [{"text": "One tablet at night"}],
        }));
        add(json!({
            "resourceType": "Condition", "id": format!("{pid}-condition"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertensive disorder"}]},
            "subject": {"reference": patient}, "recordedDate": "2021-09-20",
        }));
        add(json!({
            "resourceType": "Immunization", "id": format!("{pid}-flu"),
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://snomed.info/sct", "code": "39114911000001105", "display": "Influenza vaccine"}]},
            "patient": {"reference": patient}, "occurrenceDateTime": "2025-10-08",
        }));
        add(json!({
            "resourceType": "Observation", "id": format!("{pid}-bp"),
            "status": "final",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "75367002", "display": "Blood pressure"}]},
            "subject": {"reference": patient}, "effectiveDateTime": "2025-11-01T09:30:00Z",
            "component": [
                {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "271649006", "display": "Systolic blood pressure"}]},
                 "valueQuantity": {"value": 128 + (i % 20), "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "271650006", "display": "Diastolic blood pressure"}]},
                 "valueQuantity": {"value": 78 + (i % 10), "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            ],
        }));
    }
    records
}

fn view(r: &Record) -> Value {
    let mut resource = r.resource.clone();
    resource["meta"]["versionId"] = json!(r.version.to_string());
    resource["meta"]["lastUpdated"] = json!(r.last_updated.to_string());
    resource
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]});
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], Json(body)).into_response()
}

/// Counts the request, then refuses it if unauthenticated or throttled.
fn admit(double: &mut Double, headers: &HeaderMap) -> Option<Response> {
    double.requests += 1;
    if let Some(not_before) = double.throttle.not_before
        && Instant::now() < not_before
    {
        double.early += 1;
    }
    if double.throttle.remaining > 0 {
        double.throttle.remaining -= 1;
        double.throttled += 1;
        let retry = double.throttle.retry_after;
        double.throttle.not_before = Some(Instant::now() + Duration::from_secs(retry));
        let mut response = outcome(StatusCode::TOO_MANY_REQUESTS, "throttled", "rate limit exceeded");
        response.headers_mut().insert(header::RETRY_AFTER, retry.into());
        return Some(response);
    }
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| double.tokens.contains(t)) {
        let mut response = outcome(StatusCode::UNAUTHORIZED, "login", "a valid bearer token is required");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        return Some(response);
    }
    None
}

async fn token(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    use base64::Engine as _;
    let mut double = shared.lock().unwrap();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{}:{}", double.client.0, double.client.1);
    if !body.contains("grant_type=client_credentials") || basic.as_deref() != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    double.next_token += 1;
    let token = format!("gp-token-{}-{}", double.next_token, Timestamp::now().as_nanosecond());
    double.tokens.insert(token.clone());
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 600, "scope": "system/*.rs"}))
        .into_response()
}

async fn metadata() -> Response {
    let body = json!({
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"], "software": {"name": "GP system test double", "version": "1.0"},
        "date": "2026-11-25",
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], Json(body)).into_response()
}

async fn read(State(shared): State<Shared>, headers: HeaderMap, Path((t, id)): Path<(String, String)>) -> Response {
    let mut double = shared.lock().unwrap();
    if let Some(refused) = admit(&mut double, &headers) {
        return refused;
    }
    match double.records.get(&(t.clone(), id.clone())) {
        Some(r) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], Json(view(r))).into_response(),
        None => outcome(StatusCode::NOT_FOUND, "not-found", &format!("{t}/{id} is not known")),
    }
}

async fn search(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let delay = {
        let mut double = shared.lock().unwrap();
        if let Some(refused) = admit(&mut double, &headers) {
            return refused;
        }
        double.page_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let double = shared.lock().unwrap();
    if !TYPES.contains(&t.as_str()) {
        return outcome(StatusCode::NOT_FOUND, "not-supported", &format!("{t} is not served"));
    }
    let count: usize = query.get("_count").and_then(|c| c.parse().ok()).unwrap_or(50).clamp(1, 500);
    let offset: usize = query.get("_offset").and_then(|c| c.parse().ok()).unwrap_or(0);
    let since = match query.get("_lastUpdated").map(|s| s.strip_prefix("ge").unwrap_or(s).parse::<Timestamp>()) {
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return outcome(StatusCode::BAD_REQUEST, "invalid", "_lastUpdated must be ge<instant>"),
        None => None,
    };
    let mut matches: Vec<&Record> = double
        .records
        .iter()
        .filter(|((rt, _), r)| rt == &t && since.is_none_or(|s| r.last_updated >= s))
        .map(|(_, r)| r)
        .collect();
    matches.sort_by_key(|r| (r.last_updated, r.resource["id"].as_str().map(str::to_string)));
    let total = matches.len();
    let page: Vec<Value> = matches
        .iter()
        .skip(offset)
        .take(count)
        .map(|r| {
            let resource = view(r);
            let full_url = format!("{t}/{}", resource["id"].as_str().unwrap_or_default());
            json!({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
        })
        .collect();
    let base =
        format!("http://{}/fhir/{t}", headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"));
    let mut params: Vec<(String, String)> =
        query.iter().filter(|(k, _)| *k != "_offset").map(|(k, v)| (k.clone(), v.clone())).collect();
    let link = |offset: usize, params: &mut Vec<(String, String)>| {
        params.retain(|(k, _)| k != "_offset");
        params.push(("_offset".into(), offset.to_string()));
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
        format!("{base}?{}", q.join("&"))
    };
    let mut links = vec![json!({"relation": "self", "url": link(offset, &mut params)})];
    if offset + count < total {
        links.push(json!({"relation": "next", "url": link(offset + count, &mut params)}));
    }
    let bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": page});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], Json(bundle)).into_response()
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn control_throttle(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut double = shared.lock().unwrap();
    double.throttle.remaining = body["count"].as_u64().unwrap_or(1) as u32;
    double.throttle.retry_after = body["retryAfter"].as_u64().unwrap_or(1);
    StatusCode::NO_CONTENT.into_response()
}

async fn control_delay(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    shared.lock().unwrap().page_delay = Duration::from_millis(body["ms"].as_u64().unwrap_or(0));
    StatusCode::NO_CONTENT.into_response()
}

/// A change at the source: a new version. With `lateSeconds`, the change
/// is stamped that far in the past, as a transaction committed late would be.
async fn control_change(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut double = shared.lock().unwrap();
    match change(&mut double, &body) {
        Some(changed) => Json(changed).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Applies a change (`type`, `id`, `set`, `lateSeconds`); the new version, or None for an unknown record.
fn change(double: &mut Double, body: &Value) -> Option<Value> {
    let key =
        (body["type"].as_str().unwrap_or_default().to_string(), body["id"].as_str().unwrap_or_default().to_string());
    let late = SignedDuration::from_secs(body["lateSeconds"].as_i64().unwrap_or(0));
    let record = double.records.get_mut(&key)?;
    record.version += 1;
    record.last_updated = Timestamp::now() - late;
    if let Some(patch) = body["set"].as_object() {
        for (k, v) in patch {
            record.resource[k] = v.clone();
        }
    }
    Some(view(record))
}

fn host_base(headers: &HeaderMap) -> String {
    format!("http://{}/fhir", headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"))
}

async fn export_patients(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    kick_off(&shared, &headers, &query, "Patient/$export")
}

async fn export_system(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    kick_off(&shared, &headers, &query, "$export")
}

/// A Bulk Data kick-off: the job takes its records now (transactionTime),
/// and is followed at its status URL.
fn kick_off(shared: &Shared, headers: &HeaderMap, query: &BTreeMap<String, String>, path: &str) -> Response {
    let mut double = shared.lock().unwrap();
    if let Some(refused) = admit(&mut double, headers) {
        return refused;
    }
    let async_asked = headers.get("prefer").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("respond-async"));
    if !async_asked {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "an export needs Prefer: respond-async");
    }
    let types: Vec<String> = match query.get("_type") {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => TYPES.iter().map(|t| t.to_string()).collect(),
    };
    if let Some(unknown) = types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return outcome(StatusCode::BAD_REQUEST, "not-supported", &format!("{unknown} is not exported"));
    }
    let since = match query.get("_since").map(|s| s.parse::<Timestamp>()) {
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return outcome(StatusCode::BAD_REQUEST, "invalid", "_since must be an instant"),
        None => None,
    };
    let transaction_time = Timestamp::now();
    let file_size = double.export.file_size.max(1);
    let mut files = Vec::new();
    for t in &types {
        // Changed after _since, up to and including transactionTime (Bulk Data v2).
        let lines: Vec<String> = double
            .records
            .iter()
            .filter(|((rt, _), r)| {
                rt == t && since.is_none_or(|s| r.last_updated > s) && r.last_updated <= transaction_time
            })
            .map(|(_, r)| view(r).to_string())
            .collect();
        files.extend(lines.chunks(file_size).map(|chunk| (t.clone(), chunk.to_vec())));
    }
    double.next_job += 1;
    double.kick_offs += 1;
    let id = double.next_job;
    let base = host_base(headers);
    let query_text: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
    let job = ExportJob {
        transaction_time,
        request: format!("{base}/{path}?{}", query_text.join("&")),
        polls_left: double.export.polls,
        files,
        errors: double.export.errors.clone(),
    };
    double.jobs.insert(id, job);
    let mut response = StatusCode::ACCEPTED.into_response();
    response.headers_mut().insert(header::CONTENT_LOCATION, format!("{base}/_export/{id}").parse().unwrap());
    response
}

async fn export_status(State(shared): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let mut double = shared.lock().unwrap();
    if let Some(refused) = admit(&mut double, &headers) {
        return refused;
    }
    let base = host_base(&headers);
    let Some(job) = double.jobs.get_mut(&id) else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such export");
    };
    if job.polls_left > 0 {
        job.polls_left -= 1;
        let mut response = StatusCode::ACCEPTED.into_response();
        response.headers_mut().insert(header::RETRY_AFTER, 1.into());
        response.headers_mut().insert("x-progress", format!("{} polls to go", job.polls_left + 1).parse().unwrap());
        return response;
    }
    let output: Vec<Value> = job
        .files
        .iter()
        .enumerate()
        .map(|(n, (t, lines))| json!({"type": t, "url": format!("{base}/_export/{id}/{n}.ndjson"), "count": lines.len()}))
        .collect();
    let error: Vec<Value> = if job.errors.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "OperationOutcome", "url": format!("{base}/_export/{id}/errors.ndjson")})]
    };
    let manifest = json!({
        "transactionTime": job.transaction_time.to_string(), "request": job.request,
        "requiresAccessToken": true, "output": output, "error": error,
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Json(manifest)).into_response()
}

async fn export_delete(State(shared): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let mut double = shared.lock().unwrap();
    if let Some(refused) = admit(&mut double, &headers) {
        return refused;
    }
    if double.jobs.remove(&id).is_none() {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such export");
    }
    double.deleted_jobs += 1;
    StatusCode::ACCEPTED.into_response()
}

async fn export_file(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((id, file)): Path<(u64, String)>,
) -> Response {
    let delay = {
        let mut double = shared.lock().unwrap();
        if let Some(refused) = admit(&mut double, &headers) {
            return refused;
        }
        double.export.file_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut double = shared.lock().unwrap();
    let Some(job) = double.jobs.get(&id) else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such export");
    };
    let lines: Vec<String> = if file == "errors.ndjson" {
        job.errors
            .iter()
            .map(|e| json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": e}]}).to_string())
            .collect()
    } else {
        let n: Option<usize> = file.strip_suffix(".ndjson").and_then(|n| n.parse().ok());
        match n.and_then(|n| job.files.get(n)) {
            Some((_, lines)) => lines.clone(),
            None => return outcome(StatusCode::NOT_FOUND, "not-found", "no such file"),
        }
    };
    if file != "errors.ndjson" {
        double.exported_records += lines.len() as u64;
    }
    let mut body = lines.join("\n");
    body.push('\n');
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+ndjson")], body).into_response()
}

async fn control_export(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut double = shared.lock().unwrap();
    let settings = &mut double.export;
    if let Some(polls) = body["polls"].as_u64() {
        settings.polls = polls as u32;
    }
    if let Some(size) = body["fileSize"].as_u64() {
        settings.file_size = size as usize;
    }
    if let Some(ms) = body["fileDelayMs"].as_u64() {
        settings.file_delay = Duration::from_millis(ms);
    }
    if let Some(errors) = body["errors"].as_array() {
        settings.errors = errors.iter().filter_map(|e| e.as_str().map(str::to_string)).collect();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A Subscription's notification: the change (if any) is made first, then
/// the notification is sent to `url` with `authorization` as its header.
/// Answers with what the receiver answered (or that it could not be reached).
async fn control_notify(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let (payload, event) = {
        let mut double = shared.lock().unwrap();
        let changed = if body["change"].is_object() {
            match change(&mut double, &body["change"]) {
                Some(changed) => Some(changed),
                None => return StatusCode::NOT_FOUND.into_response(),
            }
        } else {
            None
        };
        double.notifications += 1;
        let focus =
            changed.map(|c| format!("{}/{}", c["resourceType"].as_str().unwrap_or(""), c["id"].as_str().unwrap_or("")));
        let payload = match (body["payload"].as_str(), focus) {
            (Some("id-only"), Some(focus)) => Some(id_only_notification(double.notifications, &focus)),
            _ => None,
        };
        (payload, double.notifications)
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut request = client.post(body["url"].as_str().unwrap_or_default());
    if let Some(authorization) = body["authorization"].as_str() {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    if let Some(payload) = payload {
        request = request.header(header::CONTENT_TYPE, "application/fhir+json").body(payload.to_string());
    }
    let delivered = match request.send().await {
        Ok(response) => json!(response.status().as_u16()),
        Err(_) => json!("unreachable"),
    };
    Json(json!({"event": event, "delivered": delivered})).into_response()
}

/// An id-only notification of the R4 Subscriptions Backport IG.
fn id_only_notification(event: u64, focus: &str) -> Value {
    json!({
        "resourceType": "Bundle", "type": "history", "timestamp": Timestamp::now().to_string(),
        "entry": [
            {"fullUrl": "urn:uuid:notification-status", "resource": {
                "resourceType": "Parameters",
                "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]},
                "parameter": [
                    {"name": "subscription", "valueReference": {"reference": "Subscription/carerecord"}},
                    {"name": "topic", "valueCanonical": "http://example.nhs.uk/SubscriptionTopic/record-changed"},
                    {"name": "status", "valueCode": "active"},
                    {"name": "type", "valueCode": "event-notification"},
                    {"name": "events-since-subscription-start", "valueString": event.to_string()},
                    {"name": "notification-event", "part": [
                        {"name": "event-number", "valueString": event.to_string()},
                        {"name": "focus", "valueReference": {"reference": focus}},
                    ]},
                ],
            }},
            {"fullUrl": focus, "request": {"method": "PUT", "url": focus}, "response": {"status": "200"}},
        ],
    })
}

async fn control_add(State(shared): State<Shared>, Json(resource): Json<Value>) -> Response {
    let mut double = shared.lock().unwrap();
    let key = (
        resource["resourceType"].as_str().unwrap_or_default().to_string(),
        resource["id"].as_str().unwrap_or_default().to_string(),
    );
    double.records.insert(key, Record { resource, version: 1, last_updated: Timestamp::now() });
    StatusCode::NO_CONTENT.into_response()
}

async fn control_stats(State(shared): State<Shared>) -> Response {
    let double = shared.lock().unwrap();
    let mut per_type: BTreeMap<&str, usize> = BTreeMap::new();
    for (t, _) in double.records.keys() {
        *per_type.entry(t.as_str()).or_default() += 1;
    }
    Json(json!({
        "requests": double.requests, "throttled": double.throttled, "early": double.early, "records": per_type,
        "exportKickOffs": double.kick_offs, "exportJobs": double.jobs.len(), "exportJobsDeleted": double.deleted_jobs,
        "exportedRecords": double.exported_records, "notifications": double.notifications,
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> Result<()> {
    // reqwest (notifications) is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args()?;
    let double = Double {
        records: seed(&a),
        tokens: HashSet::new(),
        client: (a.client_id.clone(), a.client_secret.clone()),
        throttle: Throttle::default(),
        page_delay: Duration::ZERO,
        requests: 0,
        throttled: 0,
        early: 0,
        next_token: 0,
        export: ExportSettings::default(),
        jobs: BTreeMap::new(),
        next_job: 0,
        kick_offs: 0,
        deleted_jobs: 0,
        exported_records: 0,
        notifications: 0,
    };
    let app = axum::Router::new()
        .route("/token", post(token))
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/$export", get(export_system))
        .route("/fhir/Patient/$export", get(export_patients))
        .route("/fhir/_export/{id}", get(export_status).delete(export_delete))
        .route("/fhir/_export/{id}/{file}", get(export_file))
        .route("/fhir/{t}", get(search))
        .route("/fhir/{t}/{id}", get(read))
        .route("/_control/throttle", post(control_throttle))
        .route("/_control/delay", post(control_delay))
        .route("/_control/change", post(control_change))
        .route("/_control/add", post(control_add))
        .route("/_control/export", post(control_export))
        .route("/_control/notify", post(control_notify))
        .route("/_control/stats", get(control_stats))
        .with_state(Arc::new(Mutex::new(double)));
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_carry_a_valid_check_digit() {
        // 943 476 5919 is the NHS's own published example.
        let sum: u32 = "943476591".chars().zip((2..=10).rev()).map(|(c, w)| c.to_digit(10).unwrap() * w).sum();
        assert_eq!((11 - sum % 11) % 11, 9);
        assert_eq!(nhs_number(1).as_deref(), Some("9990000018"));
    }
}
