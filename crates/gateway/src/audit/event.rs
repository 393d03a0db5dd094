//! One AuditEvent per request, in the shape of IHE Basic Audit Log Patterns
//! (BALP): who (user, client, organisation), what (interaction, type, id or
//! query), which patient, which agreement, and the outcome.

use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::consent::ODS_SYSTEM;
use crate::decision::Reason;

/// Identifier system of agreement ids in audit events.
pub const AGREEMENT_SYSTEM: &str = "https://carerecord.dev/fhir/Id/sharing-agreement";

/// Everything an audit event records about one request.
#[derive(Clone, Debug, Default)]
pub struct AuditFacts<'a> {
    pub recorded: Option<Timestamp>,
    pub caller: Option<&'a Caller>,
    /// RESTful interaction code (`read`, `search-type`, ...), if known.
    pub interaction: Option<&'static str>,
    pub method: &'a str,
    pub resource_type: Option<&'a str>,
    pub id: Option<&'a str>,
    /// The query forwarded (decoded pairs re-encoded), for searches.
    pub query: Option<&'a str>,
    pub patients: Vec<String>,
    pub agreement: Option<&'a str>,
    /// `None`: success. Otherwise why it failed or was refused.
    pub failure: Option<Reason>,
    /// The tenant whose gateway recorded it.
    pub tenant: &'a str,
}

fn action(method: &str) -> &'static str {
    match method {
        "POST" => "C",
        "PUT" | "PATCH" => "U",
        "DELETE" => "D",
        _ => "R",
    }
}

/// The AuditEvent for a request.
pub fn audit_event(f: &AuditFacts<'_>) -> Value {
    let is_query = matches!(f.interaction, Some("search-type" | "search-system" | "history-instance"));
    let profile = match (is_query, action(f.method)) {
        (true, _) => "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Query",
        (false, "R") => "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read",
        (false, "C") => "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Create",
        (false, "U") => "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Update",
        _ => "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Delete",
    };
    let action = if is_query { "E" } else { action(f.method) };
    // 0 success, 4 minor failure (refused), 8 serious failure (could not serve).
    let outcome = match f.failure {
        None => "0",
        Some(r) if r.status() >= 500 => "8",
        Some(_) => "4",
    };
    let mut agents = Vec::new();
    if let Some(caller) = f.caller {
        agents.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
            "who": {"identifier": {"system": caller.issuer, "value": caller.subject}},
            "requestor": true,
        }));
        if let Some(client) = &caller.client_id {
            agents.push(json!({
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"system": caller.issuer, "value": client}},
                "requestor": false,
            }));
        }
        if let Some(org) = &caller.organisation {
            agents.push(json!({
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "code": "PROV", "display": "healthcare provider"}]},
                "who": {"identifier": {"system": ODS_SYSTEM, "value": org}},
                "requestor": false,
            }));
        }
    } else {
        agents.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "who": {"display": "unauthenticated"},
            "requestor": true,
        }));
    }
    agents.push(json!({
        "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153", "display": "Source Role ID"}]},
        "who": {"display": format!("record-gateway/{}", f.tenant)},
        "requestor": false,
    }));
    let mut entities = Vec::new();
    match (f.resource_type, f.id) {
        (Some(t), Some(id)) => entities.push(json!({
            "what": {"reference": format!("{t}/{id}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"},
        })),
        (Some(t), None) => entities.push(json!({
            "what": {"display": t},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        })),
        _ => {}
    }
    if let Some(query) = f.query.filter(|q| !q.is_empty())
        && is_query
    {
        entities.push(json!({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }
    for patient in &f.patients {
        entities.push(json!({
            "what": {"reference": format!("Patient/{patient}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    if let Some(agreement) = f.agreement {
        entities.push(json!({
            "what": {"identifier": {"system": AGREEMENT_SYSTEM, "value": agreement}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "description": "data-sharing agreement",
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "meta": {"profile": [profile]},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "action": action,
        "recorded": f.recorded.unwrap_or_else(Timestamp::now).to_string(),
        "outcome": outcome,
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT", "display": "treatment"}]}],
        "agent": agents,
        "source": {
            "observer": {"display": format!("record-gateway/{}", f.tenant)},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
    });
    if let Some(code) = f.interaction {
        event["subtype"] = json!([{"system": "http://hl7.org/fhir/restful-interaction", "code": code}]);
    }
    if let Some(reason) = f.failure {
        event["outcomeDesc"] = Value::String(reason.as_str().to_string());
    }
    if !entities.is_empty() {
        event["entity"] = Value::Array(entities);
    }
    event
}

#[cfg(test)]
mod tests {
    use carerecord_fhir::ScopeSet;

    use super::*;

    fn caller() -> Caller {
        Caller {
            issuer: "https://idp".into(),
            subject: "svc-1".into(),
            client_id: Some("gm-client".into()),
            organisation: Some("QOP".into()),
            scopes: ScopeSet::parse("system/*.rs"),
        }
    }

    #[test]
    fn a_federated_read_records_who_what_patient_and_agreement() {
        let caller = caller();
        let event = audit_event(&AuditFacts {
            caller: Some(&caller),
            interaction: Some("read"),
            method: "GET",
            resource_type: Some("Condition"),
            id: Some("c1"),
            patients: vec!["p1".into()],
            agreement: Some("DSA-1"),
            tenant: "cheshire",
            ..Default::default()
        });
        let text = event.to_string();
        assert_eq!(event["outcome"], "0");
        assert_eq!(event["action"], "R");
        for expected in ["svc-1", "gm-client", "QOP", "Condition/c1", "Patient/p1", "DSA-1"] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }

    #[test]
    fn a_refusal_is_a_minor_failure_with_its_reason() {
        let event = audit_event(&AuditFacts {
            method: "GET",
            failure: Some(Reason::NoToken),
            tenant: "cheshire",
            ..Default::default()
        });
        assert_eq!(event["outcome"], "4");
        assert_eq!(event["outcomeDesc"], "no_token");
    }

    #[test]
    fn a_search_records_its_query() {
        let event = audit_event(&AuditFacts {
            method: "GET",
            interaction: Some("search-type"),
            resource_type: Some("Condition"),
            query: Some("patient=p1"),
            tenant: "cheshire",
            ..Default::default()
        });
        assert_eq!(event["action"], "E");
        assert!(event["entity"].as_array().unwrap().iter().any(|e| e["query"] == "cGF0aWVudD1wMQ=="));
    }
}
