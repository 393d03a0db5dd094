//! Push: a provider POSTs a transaction or batch Bundle to
//! `/inbound/<connector>` on the tenant host; the record gateway
//! authenticates it (its organisation must be the connector's provider) and
//! forwards it here. Each record is written as a poll would write it
//! (conditional update on its business identifier, provenance, labels), all
//! in one transaction: the provider gets 200 only once everything is
//! committed, and may send the same Bundle again harmlessly.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::transform::{self, Provenance};

/// Largest Bundle accepted, in bytes.
const MAX_BUNDLE: usize = 32 * 1024 * 1024;

pub struct Receiver {
    pub store: Store,
    pub provenance: Provenance,
    pub status: Arc<StatusBoard>,
}

pub fn router(receiver: Arc<Receiver>) -> axum::Router {
    axum::Router::new()
        .route("/", post(receive))
        .route("/{*rest}", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BUNDLE))
        .with_state(receiver)
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]});
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], Json(body)).into_response()
}

/// The store's transaction for a pushed Bundle, or why it cannot be taken.
pub fn to_transaction(bundle: &Value, provenance: &Provenance) -> Result<(Value, usize), String> {
    if bundle["resourceType"] != "Bundle" || !matches!(bundle["type"].as_str(), Some("transaction" | "batch")) {
        return Err("send a transaction or batch Bundle".into());
    }
    let resources: Vec<&Value> =
        bundle["entry"].as_array().into_iter().flatten().filter_map(|e| e.get("resource")).collect();
    let patients: HashMap<String, String> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .filter_map(|r| Some((r["id"].as_str()?.to_string(), transform::nhs_number(r)?.to_string())))
        .collect();
    let mut entries = Vec::with_capacity(resources.len());
    for (i, resource) in resources.into_iter().enumerate() {
        let prepared = transform::prepare(resource.clone(), provenance, &patients)
            .map_err(|e| format!("entry {i}: {e} (each record carries its id in the provider's system)"))?;
        entries.push(transform::transaction_entry(&prepared));
    }
    let count = entries.len();
    Ok((transform::transaction(entries), count))
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: axum::body::Bytes) -> Response {
    let now = Timestamp::now();
    let Ok(bundle) = serde_json::from_slice::<Value>(&body) else {
        return outcome(StatusCode::BAD_REQUEST, "structure", "the body is not FHIR JSON");
    };
    let (transaction, count) = match to_transaction(&bundle, &receiver.provenance) {
        Ok(t) => t,
        Err(problem) => return outcome(StatusCode::BAD_REQUEST, "invalid", &problem),
    };
    match receiver.store.commit(&transaction).await {
        Ok(response) => {
            receiver.status.written(count as u64);
            receiver.status.succeeded(now);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], Json(response)).into_response()
        }
        Err(StoreError::Refused { status, reason }) => {
            receiver.status.failed(now, format!("the store refused a pushed Bundle: {reason}"));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            outcome(status, "processing", &reason)
        }
        Err(StoreError::Unavailable(reason)) => {
            receiver.status.failed(now, format!("record store unavailable: {reason}"));
            outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "the record store is unavailable; send the Bundle again",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance { source: "https://carerecord.dev/connector/t/c".into(), provider_ods: "RBT".into(), rules: vec![] }
    }

    #[test]
    fn a_pushed_patient_and_its_allergy_become_conditional_updates() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1", "identifier": [{"system": transform::NHS_NUMBER_SYSTEM, "value": "9990000018"}]}},
            {"resource": {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}}},
        ]});
        let (tx, count) = to_transaction(&bundle, &provenance()).unwrap();
        assert_eq!(count, 2);
        assert_eq!(tx["entry"][0]["request"]["url"], "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018");
        assert_eq!(
            tx["entry"][1]["resource"]["patient"]["reference"],
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018"
        );
    }

    #[test]
    fn a_bundle_that_is_not_a_transaction_or_batch_is_refused() {
        let bundle = json!({"resourceType": "Bundle", "type": "searchset"});
        assert!(to_transaction(&bundle, &provenance()).is_err());
    }

    #[test]
    fn a_record_without_its_provider_id_is_refused_naming_the_entry() {
        let bundle =
            json!({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Patient"}}]});
        let error = to_transaction(&bundle, &provenance()).unwrap_err();
        assert!(error.starts_with("entry 0:"), "{error}");
    }
}
