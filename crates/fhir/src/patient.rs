//! Which patient a resource is about.

use serde_json::Value;

/// Elements that reference the patient a resource is about, across R4
/// resources (`subject` for most clinical resources, `patient` for
/// AllergyIntolerance, Immunization, Consent and others, `beneficiary` for
/// Coverage). A Group `subject` is not a patient and is ignored.
const PATIENT_ELEMENTS: &[&str] = &["subject", "patient", "beneficiary"];

/// Logical ids of the patients `resource` is about: its own id for a
/// Patient, else the Patient references of its subject-like elements.
pub fn patient_ids(resource: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            ids.push(id.to_string());
        }
        return ids;
    }
    for element in PATIENT_ELEMENTS {
        let Some(value) = resource.get(*element) else { continue };
        // Most are a single Reference; a few (e.g. Account.subject) are lists.
        let references: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for reference in references {
            if let Some(id) = reference.get("reference").and_then(Value::as_str).and_then(patient_id_of_reference) {
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The logical id in a Patient reference: `Patient/1`, `Patient/1/_history/2`
/// or an absolute `https://host/fhir/Patient/1`. `None` for other types and
/// for contained (`#p1`) references.
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let reference = reference.split(['?', '#']).next()?;
    let segments: Vec<&str> = reference.split('/').collect();
    // The last "Patient" segment followed by an id: relative or absolute.
    let position = segments.iter().rposition(|s| *s == "Patient")?;
    let id = segments.get(position + 1)?;
    match segments.get(position + 2) {
        None => {}
        Some(&"_history") => {}
        Some(_) => return None,
    }
    (!id.is_empty()).then_some(*id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patient_is_about_itself() {
        assert_eq!(patient_ids(&json!({"resourceType": "Patient", "id": "p1"})), vec!["p1"]);
    }

    #[test]
    fn subject_and_patient_elements_name_the_patient() {
        let condition = json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}});
        let allergy = json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2/_history/3"}});
        assert_eq!(patient_ids(&condition), vec!["p1"]);
        assert_eq!(patient_ids(&allergy), vec!["p2"]);
    }

    #[test]
    fn absolute_references_name_the_patient() {
        assert_eq!(patient_id_of_reference("https://h/fhir/Patient/9"), Some("9"));
    }

    #[test]
    fn a_group_subject_is_not_a_patient() {
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Group/g1"}});
        assert!(patient_ids(&obs).is_empty());
    }

    #[test]
    fn list_valued_subjects_are_read() {
        let account =
            json!({"resourceType": "Account", "subject": [{"reference": "Patient/a"}, {"reference": "Patient/b"}]});
        assert_eq!(patient_ids(&account), vec!["a", "b"]);
    }
}
