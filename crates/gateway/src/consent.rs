//! Patients' objections, read from Consent resources in the provider's store.
//!
//! A patient objects to sharing with a consumer when an active Consent about
//! them has a `deny` provision (at the top or nested) that names no actor
//! (everyone) or names one of the consumer's organisations. Ambiguity
//! withholds: an actor the gateway cannot identify as some other
//! organisation counts as this consumer, and a provision's period or data
//! scope is not used to narrow the objection.

use std::collections::BTreeSet;

use carerecord_fhir::patient::patient_id_of_reference;
use serde_json::Value;

/// FHIR identifier system of ODS organisation codes.
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// Ids of the patients who object to sharing with a consumer acting as one
/// of `consumer_organisations`, from a set of Consent resources.
pub fn objecting_patients<'a>(
    consents: impl IntoIterator<Item = &'a Value>,
    consumer_organisations: &BTreeSet<String>,
) -> BTreeSet<String> {
    consents
        .into_iter()
        .filter(|c| c.get("resourceType").and_then(Value::as_str) == Some("Consent"))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("active"))
        .filter(|c| c.get("provision").is_some_and(|p| denies(p, consumer_organisations)))
        .filter_map(|c| c.pointer("/patient/reference")?.as_str().and_then(patient_id_of_reference))
        .map(str::to_string)
        .collect()
}

fn denies(provision: &Value, consumers: &BTreeSet<String>) -> bool {
    let is_deny = provision.get("type").and_then(Value::as_str) == Some("deny");
    let actors: Vec<&Value> =
        provision.get("actor").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    if is_deny && (actors.is_empty() || actors.iter().any(|a| actor_may_be(a, consumers))) {
        return true;
    }
    provision
        .get("provision")
        .and_then(Value::as_array)
        .is_some_and(|nested| nested.iter().any(|p| denies(p, consumers)))
}

/// Whether a provision actor may be one of the consumer's organisations.
fn actor_may_be(actor: &Value, consumers: &BTreeSet<String>) -> bool {
    let Some(reference) = actor.get("reference") else { return true };
    if let Some(identifier) = reference.get("identifier") {
        let system = identifier.get("system").and_then(Value::as_str);
        let value = identifier.get("value").and_then(Value::as_str);
        return match (system, value) {
            (Some(ODS_SYSTEM), Some(code)) => consumers.contains(code),
            // Another identifier system: cannot be told apart from the consumer.
            _ => true,
        };
    }
    match reference.get("reference").and_then(Value::as_str) {
        // `Organization/<ODS code>` names an organisation by its code.
        Some(r) => match r.strip_prefix("Organization/") {
            Some(id) => consumers.contains(id) || !carerecord_config::is_ods_code(id),
            None => true,
        },
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn consumers() -> BTreeSet<String> {
        BTreeSet::from(["QOP".to_string(), "R0A".to_string()])
    }

    fn consent(status: &str, provision: Value) -> Value {
        json!({"resourceType": "Consent", "status": status, "patient": {"reference": "Patient/p1"}, "provision": provision})
    }

    #[test]
    fn a_deny_for_everyone_is_an_objection() {
        let c = consent("active", json!({"type": "deny"}));
        assert_eq!(objecting_patients([&c], &consumers()), BTreeSet::from(["p1".to_string()]));
    }

    #[test]
    fn a_deny_naming_the_consumer_is_an_objection() {
        let actor = json!({"reference": {"identifier": {"system": ODS_SYSTEM, "value": "QOP"}}});
        let c = consent("active", json!({"type": "deny", "actor": [actor]}));
        assert_eq!(objecting_patients([&c], &consumers()).len(), 1);
    }

    #[test]
    fn a_deny_naming_another_organisation_is_not_an_objection_here() {
        let actor = json!({"reference": {"identifier": {"system": ODS_SYSTEM, "value": "RXX"}}});
        let c = consent("active", json!({"type": "deny", "actor": [actor]}));
        assert!(objecting_patients([&c], &consumers()).is_empty());
    }

    #[test]
    fn an_inactive_consent_is_not_an_objection() {
        let c = consent("inactive", json!({"type": "deny"}));
        assert!(objecting_patients([&c], &consumers()).is_empty());
    }

    #[test]
    fn a_permit_is_not_an_objection() {
        let c = consent("active", json!({"type": "permit"}));
        assert!(objecting_patients([&c], &consumers()).is_empty());
    }

    #[test]
    fn a_nested_deny_is_an_objection() {
        let c = consent("active", json!({"type": "permit", "provision": [{"type": "deny"}]}));
        assert_eq!(objecting_patients([&c], &consumers()).len(), 1);
    }

    #[test]
    fn an_unidentifiable_actor_counts_as_the_consumer() {
        let c = consent("active", json!({"type": "deny", "actor": [{"reference": {"reference": "Practitioner/x"}}]}));
        assert_eq!(objecting_patients([&c], &consumers()).len(), 1);
    }
}
