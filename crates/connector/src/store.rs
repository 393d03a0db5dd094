//! The tenant's record store: transactions in, the cursor out.

use std::time::Duration;

use serde_json::Value;

use crate::cursor::{Cursor, cursor_url};

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused the content (4xx): writing it again will not help.
    #[error("the store refused the write ({status}): {reason}")]
    Refused { status: u16, reason: String },
    /// The store could not be reached or failed (5xx, timeout): try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A client of one record store.
#[derive(Clone)]
pub struct Store {
    base: String,
    http: reqwest::Client,
}

impl Store {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http })
    }

    /// Commits a transaction Bundle; all of it or nothing.
    pub async fn commit(&self, bundle: &Value) -> Result<Value, StoreError> {
        let response = self
            .http
            .post(&self.base)
            .header("Content-Type", "application/fhir+json")
            .header("Accept", "application/fhir+json")
            // No narrative or echo needed: the connector reads only the outcome.
            .header("Prefer", "return=minimal")
            .json(bundle)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(without_url(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else if status.is_client_error() && status.as_u16() != 429 {
            Err(StoreError::Refused { status: status.as_u16(), reason: outcome_text(&body) })
        } else {
            Err(StoreError::Unavailable(format!("{status}: {}", outcome_text(&body))))
        }
    }

    /// The connector's cursor, or an empty one when it has none yet.
    pub async fn cursor(&self, key: &str) -> Result<Cursor, StoreError> {
        let url = format!("{}/{}", self.base, cursor_url(key));
        let response = self
            .http
            .get(url)
            .header("Accept", "application/fhir+json")
            // HAPI caches searches for a minute by default; a stale cursor would replay.
            .header("Cache-Control", "no-cache")
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(StoreError::Unavailable(format!("reading the cursor: {status}")));
        }
        let bundle: Value = response.json().await.map_err(|e| StoreError::Unavailable(without_url(&e)))?;
        Ok(carerecord_fhir::bundle::entry_resources(&bundle).next().map(Cursor::from_resource).unwrap_or_default())
    }
}

/// The diagnostics of an OperationOutcome, or a short form of the body.
pub fn outcome_text(body: &Value) -> String {
    let issues: Vec<String> = body["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str().or(i["details"]["text"].as_str()).map(str::to_string))
        .collect();
    if issues.is_empty() { "no OperationOutcome".to_string() } else { issues.join("; ") }
}

/// A reqwest error without its URL (a URL may carry a query worth keeping out of logs).
pub fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_outcome_reads_as_its_diagnostics() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "HAPI-0450: Failed to parse"},
            {"severity": "error", "code": "invalid", "details": {"text": "bad date"}},
        ]});
        assert_eq!(outcome_text(&outcome), "HAPI-0450: Failed to parse; bad date");
    }
}
