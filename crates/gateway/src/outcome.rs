//! Errors as FHIR OperationOutcomes.

use serde_json::{Value, json};

use crate::decision::Reason;

/// The OperationOutcome a caller gets for `reason`: a fixed message, nothing more.
pub fn operation_outcome(reason: Reason) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": reason.issue_code(),
            "details": {"text": reason.message()},
            "diagnostics": reason.as_str(),
        }]
    })
}

/// The `WWW-Authenticate` challenge for a 401 (RFC 6750).
pub fn bearer_challenge(reason: Reason) -> String {
    match reason {
        Reason::InvalidToken => {
            "Bearer error=\"invalid_token\", error_description=\"The bearer token is not valid here\"".into()
        }
        _ => "Bearer".into(),
    }
}
