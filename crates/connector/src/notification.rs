//! What a FHIR Subscription rest-hook notification asks of the connector
//! (pure). The provider's server POSTs either nothing (R4 core, no
//! `channel.payload`) or a notification Bundle (the R4 Subscriptions
//! Backport IG: a `history` Bundle whose first entry is the subscription
//! status, a `Parameters` in R4 or a `SubscriptionStatus` in R4B, with
//! payload `empty`, `id-only` or `full-resource`).
//!
//! A notification is only a hint that something changed: the connector
//! never writes what a notification carries, it reads the records from the
//! provider itself (so a forged or stale body can at most make it read).

use std::collections::BTreeSet;

use serde_json::Value;

/// What to do for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something changed, unnamed: an incremental read from the cursor.
    CatchUp,
    /// These records changed: read them (`<type>`, `<id>` in the provider's system).
    Read(BTreeSet<(String, String)>),
    /// A handshake or heartbeat: nothing changed.
    Nothing,
}

/// Why a notification body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the body is not FHIR JSON")]
    NotJson,
    #[error("the body is not a notification Bundle")]
    NotANotification,
}

/// Reads a notification body; `resources` are the types the connector brings
/// (a record of any other type is ignored).
pub fn parse(body: &[u8], resources: &[String]) -> Result<Notice, NotificationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Notice::CatchUp);
    }
    let bundle: Value = serde_json::from_slice(body).map_err(|_| NotificationError::NotJson)?;
    if bundle["resourceType"] != "Bundle" {
        return Err(NotificationError::NotANotification);
    }
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let status = entries.first().map(|e| &e["resource"]).filter(|r| is_status(r));
    if status.and_then(notification_type).is_some_and(|t| t == "handshake" || t == "heartbeat") {
        return Ok(Notice::Nothing);
    }
    let mut named = BTreeSet::new();
    if let Some(status) = status {
        named.extend(focus_references(status).iter().filter_map(|r| type_and_id(r)));
    }
    let skip = usize::from(status.is_some());
    for entry in entries.iter().skip(skip) {
        let reference = entry["resource"]
            .as_object()
            .and_then(|r| Some(format!("{}/{}", r.get("resourceType")?.as_str()?, r.get("id")?.as_str()?)))
            .or_else(|| entry["fullUrl"].as_str().map(str::to_string));
        named.extend(reference.as_deref().and_then(type_and_id));
    }
    if named.is_empty() {
        return Ok(Notice::CatchUp);
    }
    named.retain(|(t, _)| resources.iter().any(|r| r == t));
    Ok(if named.is_empty() { Notice::Nothing } else { Notice::Read(named) })
}

fn is_status(resource: &Value) -> bool {
    resource["resourceType"] == "SubscriptionStatus"
        || (resource["resourceType"] == "Parameters" && !parameters(resource, "subscription").is_empty())
}

/// `type` of the status: handshake, heartbeat, event-notification, query-status, query-event.
fn notification_type(status: &Value) -> Option<&str> {
    if status["resourceType"] == "SubscriptionStatus" {
        return status["type"].as_str();
    }
    parameters(status, "type").first().and_then(|p| p["valueCode"].as_str())
}

/// The `focus` of each notification event.
fn focus_references(status: &Value) -> Vec<String> {
    if status["resourceType"] == "SubscriptionStatus" {
        return status["notificationEvent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["focus"]["reference"].as_str().map(str::to_string))
            .collect();
    }
    parameters(status, "notification-event")
        .iter()
        .flat_map(|event| event["part"].as_array().into_iter().flatten())
        .filter(|part| part["name"] == "focus")
        .filter_map(|part| part["valueReference"]["reference"].as_str().map(str::to_string))
        .collect()
}

fn parameters<'a>(resource: &'a Value, name: &str) -> Vec<&'a Value> {
    resource["parameter"].as_array().into_iter().flatten().filter(|p| p["name"] == name).collect()
}

/// `(<type>, <id>)` of a relative or absolute reference (`/_history/n` dropped).
fn type_and_id(reference: &str) -> Option<(String, String)> {
    let path = reference.split(['?', '#']).next()?;
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(at) = segments.iter().position(|s| *s == "_history") {
        segments.truncate(at);
    }
    let [.., resource_type, id] = segments.as_slice() else {
        return None;
    };
    carerecord_fhir::canonical_resource_type(resource_type)?;
    let id_ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    id_ok.then(|| (resource_type.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resources() -> Vec<String> {
        vec!["Patient".into(), "Condition".into()]
    }

    fn status(kind: &str, focus: &[&str]) -> Value {
        let events: Vec<Value> = focus
            .iter()
            .enumerate()
            .map(|(i, f)| {
                json!({"name": "notification-event", "part": [
                    {"name": "event-number", "valueString": (i + 1).to_string()},
                    {"name": "focus", "valueReference": {"reference": f}},
                ]})
            })
            .collect();
        let mut parameter = vec![
            json!({"name": "subscription", "valueReference": {"reference": "https://ehr.example.nhs.uk/fhir/Subscription/s1"}}),
            json!({"name": "status", "valueCode": "active"}),
            json!({"name": "type", "valueCode": kind}),
        ];
        parameter.extend(events);
        json!({"resourceType": "Parameters", "parameter": parameter})
    }

    fn bundle(status: Value, more: Vec<Value>) -> Vec<u8> {
        let mut entry = vec![json!({"fullUrl": "urn:uuid:1", "resource": status})];
        entry.extend(more);
        serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "history", "entry": entry})).unwrap()
    }

    fn read(names: &[(&str, &str)]) -> Notice {
        Notice::Read(names.iter().map(|(t, i)| (t.to_string(), i.to_string())).collect())
    }

    #[test]
    fn an_empty_body_asks_for_a_catch_up() {
        assert_eq!(parse(b"", &resources()), Ok(Notice::CatchUp));
    }

    #[test]
    fn an_empty_payload_notification_asks_for_a_catch_up() {
        assert_eq!(parse(&bundle(status("event-notification", &[]), vec![]), &resources()), Ok(Notice::CatchUp));
    }

    #[test]
    fn an_id_only_notification_names_its_focus() {
        let body = bundle(
            status("event-notification", &["https://ehr.example.nhs.uk/fhir/Condition/c1/_history/2"]),
            vec![
                json!({"fullUrl": "https://ehr.example.nhs.uk/fhir/Patient/p1", "request": {"method": "PUT", "url": "Patient/p1"}}),
            ],
        );
        assert_eq!(parse(&body, &resources()), Ok(read(&[("Condition", "c1"), ("Patient", "p1")])));
    }

    #[test]
    fn a_full_resource_notification_names_its_records_but_they_are_read_from_the_source() {
        let body = bundle(
            status("event-notification", &[]),
            vec![
                json!({"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Condition", "id": "c7", "code": {"text": "forged"}}}),
            ],
        );
        assert_eq!(parse(&body, &resources()), Ok(read(&[("Condition", "c7")])));
    }

    #[test]
    fn an_r4b_subscription_status_is_read_too() {
        let status = json!({"resourceType": "SubscriptionStatus", "type": "event-notification",
            "notificationEvent": [{"eventNumber": "3", "focus": {"reference": "Patient/p9"}}]});
        assert_eq!(parse(&bundle(status, vec![]), &resources()), Ok(read(&[("Patient", "p9")])));
    }

    #[test]
    fn handshakes_and_heartbeats_ask_for_nothing() {
        assert_eq!(parse(&bundle(status("handshake", &[]), vec![]), &resources()), Ok(Notice::Nothing));
        assert_eq!(parse(&bundle(status("heartbeat", &[]), vec![]), &resources()), Ok(Notice::Nothing));
    }

    #[test]
    fn records_of_types_the_connector_does_not_bring_are_ignored() {
        let body = bundle(status("event-notification", &["Encounter/e1"]), vec![]);
        assert_eq!(parse(&body, &resources()), Ok(Notice::Nothing));
    }

    #[test]
    fn a_body_that_is_not_a_bundle_is_refused() {
        assert_eq!(parse(b"{\"resourceType\": \"Patient\"}", &resources()), Err(NotificationError::NotANotification));
        assert_eq!(parse(b"<xml/>", &resources()), Err(NotificationError::NotJson));
    }

    #[test]
    fn an_id_that_is_not_a_fhir_id_is_ignored() {
        let body = bundle(status("event-notification", &["Patient/../../admin"]), vec![]);
        assert_eq!(parse(&body, &resources()), Ok(Notice::CatchUp));
    }
}
