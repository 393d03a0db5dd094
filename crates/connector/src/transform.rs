//! What a source record becomes in the tenant's store: pure functions, no I/O.
//!
//! Every record is written as a conditional update on a business identifier,
//! so writing it twice changes nothing (a replay after a crash, the overlap
//! window re-reading what it read before):
//! - a Patient on its NHS number, when it has one;
//! - anything else (and a Patient without an NHS number) on the source's own
//!   identity: system `https://carerecord.dev/fhir/sid/source/<ODS code>`,
//!   value `<type>/<id>` in the provider's system. The connector adds that
//!   identifier to the record.
//!
//! References to a patient become conditional references on the NHS number
//! (the store resolves them to its own Patient); references to anything else
//! become logical references (`Reference.identifier`, the source identity),
//! so no write depends on another type having been written first.

use std::collections::{BTreeSet, HashMap};

use carerecord_config::SecurityRule;
use carerecord_fhir::SensitiveCategory;
use serde_json::{Value, json};

/// The NHS number identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// The ODS organisation code system, for the provenance tag.
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// Prefix of the source-identity identifier system; the provider's ODS code follows.
pub const SOURCE_ID_SYSTEM_PREFIX: &str = "https://carerecord.dev/fhir/sid/source/";

/// Who writes, and what labels records get.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// `meta.source` of every record: the connector's identity.
    pub source: String,
    /// The provider's ODS code.
    pub provider_ods: String,
    /// Security rules from the profile and the ProviderConnector.
    pub rules: Vec<SecurityRule>,
}

impl Provenance {
    /// The identifier system naming records of this provider's system.
    pub fn source_id_system(&self) -> String {
        format!("{SOURCE_ID_SYSTEM_PREFIX}{}", self.provider_ods)
    }

    /// `meta` of every record the connector writes: who wrote it (`source`)
    /// and for which provider (a tag with its ODS code).
    pub fn meta(&self) -> Value {
        json!({
            "source": self.source,
            "tag": [{"system": ODS_SYSTEM, "code": self.provider_ods}],
        })
    }

    /// The `meta.security` labels a record of `resource_type` gets.
    pub fn labels_for(&self, resource_type: &str) -> Vec<Value> {
        let categories: BTreeSet<SensitiveCategory> = self
            .rules
            .iter()
            .filter(|r| r.resource_types.is_empty() || r.resource_types.iter().any(|t| t == resource_type))
            .flat_map(|r| r.categories.iter().filter_map(|c| fhir_category(*c)))
            .collect();
        categories.into_iter().flat_map(SensitiveCategory::labels).collect()
    }
}

/// The FHIR crate's category of the contract's: both spell them as the
/// SharingAgreement CRD does.
fn fhir_category(category: carerecord_config::SensitiveCategory) -> Option<SensitiveCategory> {
    serde_json::to_value(category).ok()?.as_str().and_then(SensitiveCategory::from_name)
}

/// Why a source record cannot be written at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the record has no resourceType")]
    NoType,
    #[error("{0} is not a FHIR R4 resource type")]
    UnknownType(String),
    #[error("the {0} has no id")]
    NoId(String),
}

/// A source record ready for the store: the record itself and the
/// conditional URL it is written to.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `<type>/<id>` in the provider's system, for logs, dead letters and de-duplication.
    pub source_ref: String,
    /// `versionId` in the provider's system, when it says.
    pub source_version: Option<String>,
    /// `meta.lastUpdated` in the provider's system, when it says.
    pub source_last_updated: Option<String>,
    /// `<type>?identifier=<system>|<value>`: the transaction entry's `request.url`.
    pub conditional_url: String,
    /// The record as the store gets it.
    pub resource: Value,
}

/// The NHS number of a Patient, if it carries one.
pub fn nhs_number(patient: &Value) -> Option<&str> {
    patient["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"] == NHS_NUMBER_SYSTEM)
        .and_then(|i| i["value"].as_str())
        .filter(|v| !v.is_empty())
}

/// Turns one source record into what the store gets. `patients` maps the
/// source's Patient ids to NHS numbers (the caller learns them from the
/// source); a reference to a patient not in it becomes a conditional
/// reference on the patient's source identity.
pub fn prepare(
    mut resource: Value,
    provenance: &Provenance,
    patients: &HashMap<String, String>,
) -> Result<Prepared, TransformError> {
    let resource_type = resource["resourceType"].as_str().ok_or(TransformError::NoType)?.to_string();
    let resource_type =
        carerecord_fhir::canonical_resource_type(&resource_type).ok_or(TransformError::UnknownType(resource_type))?;
    let id = resource["id"].as_str().filter(|id| !id.is_empty()).ok_or(TransformError::NoId(resource_type.into()))?;
    let source_ref = format!("{resource_type}/{id}");
    let source_version = resource["meta"]["versionId"].as_str().map(str::to_string);
    let source_last_updated = resource["meta"]["lastUpdated"].as_str().map(str::to_string);
    let source_system = provenance.source_id_system();

    add_identifier(&mut resource, &source_system, &source_ref);
    let conditional_url = match (resource_type, nhs_number(&resource)) {
        ("Patient", Some(nhs)) => format!("Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"),
        _ => format!("{resource_type}?identifier={source_system}|{source_ref}"),
    };
    if let Some(object) = resource.as_object_mut() {
        // The store assigns its own id and version; text is regenerated by readers.
        object.remove("id");
        object.remove("meta");
    }
    rewrite_references(&mut resource, &source_system, patients);
    let security = provenance.labels_for(resource_type);
    let mut meta = provenance.meta();
    if !security.is_empty() {
        meta["security"] = Value::Array(security);
    }
    resource["meta"] = meta;
    Ok(Prepared { source_ref, source_version, source_last_updated, conditional_url, resource })
}

fn add_identifier(resource: &mut Value, system: &str, value: &str) {
    let identifier = json!({"system": system, "value": value});
    match resource.get_mut("identifier").and_then(Value::as_array_mut) {
        Some(list) if list.iter().any(|i| i["system"] == system) => {
            list.retain(|i| i["system"] != system);
            list.push(identifier);
        }
        Some(list) => list.push(identifier),
        None => resource["identifier"] = json!([identifier]),
    }
}

/// Rewrites every `reference` to a record in the provider's system.
fn rewrite_references(value: &mut Value, source_system: &str, patients: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("reference")
                && let Some(rewritten) = rewrite_reference(reference, source_system, patients)
            {
                object.remove("reference");
                for (k, v) in rewritten {
                    object.insert(k, v);
                }
            }
            for (key, child) in object.iter_mut() {
                // Contained resources keep their local (#id) references.
                if key != "contained" {
                    rewrite_references(child, source_system, patients);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_references(i, source_system, patients)),
        _ => {}
    }
}

/// The fields replacing `reference`, or None to keep it (local `#id`,
/// `urn:` and absolute references to other servers).
fn rewrite_reference(
    reference: &str,
    source_system: &str,
    patients: &HashMap<String, String>,
) -> Option<serde_json::Map<String, Value>> {
    let relative = relative_reference(reference)?;
    let (resource_type, id) = relative.split_once('/')?;
    let mut fields = serde_json::Map::new();
    if resource_type == "Patient" {
        let url = match patients.get(id) {
            Some(nhs) => format!("Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"),
            None => format!("Patient?identifier={source_system}|Patient/{id}"),
        };
        fields.insert("reference".into(), Value::String(url));
    } else {
        fields.insert("type".into(), Value::String(resource_type.into()));
        fields.insert("identifier".into(), json!({"system": source_system, "value": format!("{resource_type}/{id}")}));
    }
    Some(fields)
}

/// `Type/id` from a relative reference (dropping `/_history/n`); None for
/// anything else.
fn relative_reference(reference: &str) -> Option<String> {
    if reference.starts_with('#') || reference.contains(':') || reference.contains('?') {
        return None;
    }
    let mut parts = reference.split('/');
    let (resource_type, id) = (parts.next()?, parts.next()?);
    carerecord_fhir::canonical_resource_type(resource_type)?;
    if id.is_empty() {
        return None;
    }
    Some(format!("{resource_type}/{id}"))
}

/// The source Patient id a reference points at, if it is a patient reference.
pub fn patient_reference_id(reference: &str) -> Option<&str> {
    reference.strip_prefix("Patient/").map(|rest| rest.split('/').next().unwrap_or(rest)).filter(|id| !id.is_empty())
}

/// Source Patient ids a record refers to that `known` does not map yet.
pub fn unknown_patients(resource: &Value, known: &HashMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_patient_refs(resource, &mut out);
    out.retain(|id| !known.contains_key(id));
    out
}

fn collect_patient_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            if let Some(id) = object.get("reference").and_then(Value::as_str).and_then(patient_reference_id) {
                out.insert(id.to_string());
            }
            for (key, child) in object {
                if key != "contained" {
                    collect_patient_refs(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_patient_refs(i, out)),
        _ => {}
    }
}

/// A transaction entry writing `prepared` by conditional update.
pub fn transaction_entry(prepared: &Prepared) -> Value {
    json!({
        "resource": prepared.resource,
        "request": {"method": "PUT", "url": prepared.conditional_url},
    })
}

/// A transaction Bundle of `entries`.
pub fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[cfg(test)]
mod tests {
    use carerecord_config::SensitiveCategory as Category;

    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            source: "https://carerecord.dev/connector/cheshire-merseyside/alder-practice".into(),
            provider_ods: "N81001".into(),
            rules: vec![SecurityRule {
                resource_types: vec!["Condition".into()],
                categories: vec![Category::SexualHealth],
            }],
        }
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:00:00Z"},
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}],
            "name": [{"family": "Smith", "given": ["Jane"]}],
        })
    }

    #[test]
    fn a_patient_is_written_on_its_nhs_number() {
        let p = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        assert_eq!(p.conditional_url, "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018");
        assert_eq!(p.source_ref, "Patient/p1");
        assert_eq!(p.source_version.as_deref(), Some("3"));
        assert!(p.resource.get("id").is_none(), "the store assigns ids");
    }

    #[test]
    fn every_record_carries_its_source_and_the_providers_ods_tag() {
        let p = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        assert_eq!(p.resource["meta"]["source"], provenance().source);
        assert_eq!(p.resource["meta"]["tag"][0], json!({"system": ODS_SYSTEM, "code": "N81001"}));
        let ids = p.resource["identifier"].as_array().unwrap();
        assert!(
            ids.contains(&json!({"system": "https://carerecord.dev/fhir/sid/source/N81001", "value": "Patient/p1"}))
        );
    }

    #[test]
    fn a_record_without_an_nhs_number_is_written_on_its_source_identity() {
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "a9", "patient": {"reference": "Patient/p1"}});
        let p = prepare(allergy, &provenance(), &HashMap::new()).unwrap();
        assert_eq!(
            p.conditional_url,
            "AllergyIntolerance?identifier=https://carerecord.dev/fhir/sid/source/N81001|AllergyIntolerance/a9"
        );
    }

    #[test]
    fn a_patient_reference_becomes_a_conditional_reference_on_the_nhs_number() {
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "a9", "patient": {"reference": "Patient/p1/_history/2"}});
        let patients = HashMap::from([("p1".to_string(), "9990000018".to_string())]);
        let p = prepare(allergy, &provenance(), &patients).unwrap();
        assert_eq!(
            p.resource["patient"]["reference"],
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018"
        );
    }

    #[test]
    fn other_references_become_logical_references_to_the_source() {
        let condition = json!({"resourceType": "Condition", "id": "c1", "encounter": {"reference": "Encounter/e7"}});
        let p = prepare(condition, &provenance(), &HashMap::new()).unwrap();
        assert_eq!(
            p.resource["encounter"],
            json!({"type": "Encounter", "identifier": {"system": "https://carerecord.dev/fhir/sid/source/N81001", "value": "Encounter/e7"}})
        );
    }

    #[test]
    fn contained_and_external_references_are_kept() {
        let statement = json!({
            "resourceType": "MedicationStatement", "id": "m1",
            "contained": [{"resourceType": "Medication", "id": "med"}],
            "medicationReference": {"reference": "#med"},
            "informationSource": {"reference": "https://directory.example.nhs.uk/Practitioner/1"},
        });
        let p = prepare(statement, &provenance(), &HashMap::new()).unwrap();
        assert_eq!(p.resource["medicationReference"]["reference"], "#med");
        assert_eq!(p.resource["informationSource"]["reference"], "https://directory.example.nhs.uk/Practitioner/1");
    }

    #[test]
    fn security_rules_label_the_types_they_name() {
        let condition = json!({"resourceType": "Condition", "id": "c1"});
        let labelled = prepare(condition, &provenance(), &HashMap::new()).unwrap();
        let codes: Vec<&str> = labelled.resource["meta"]["security"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["code"].as_str())
            .collect();
        assert!(codes.contains(&"SexualHealth") && codes.contains(&"SEX"), "{codes:?}");
        let unlabelled = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        assert!(unlabelled.resource["meta"].get("security").is_none());
    }

    #[test]
    fn the_source_identity_is_not_added_twice() {
        let once = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        let mut again = once.resource.clone();
        again["id"] = json!("p1");
        let twice = prepare(again, &provenance(), &HashMap::new()).unwrap();
        assert_eq!(once.resource["identifier"], twice.resource["identifier"]);
    }

    #[test]
    fn a_record_without_a_known_type_or_id_is_refused() {
        assert_eq!(prepare(json!({"id": "x"}), &provenance(), &HashMap::new()), Err(TransformError::NoType));
        assert_eq!(
            prepare(json!({"resourceType": "Nonsense", "id": "x"}), &provenance(), &HashMap::new()),
            Err(TransformError::UnknownType("Nonsense".into()))
        );
        assert_eq!(
            prepare(json!({"resourceType": "Patient"}), &provenance(), &HashMap::new()),
            Err(TransformError::NoId("Patient".into()))
        );
    }

    #[test]
    fn unknown_patients_lists_referenced_patients_not_yet_mapped() {
        let allergy = json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2"}, "recorder": {"reference": "Patient/p1"}});
        let known = HashMap::from([("p1".to_string(), "9990000018".to_string())]);
        assert_eq!(unknown_patients(&allergy, &known), BTreeSet::from(["p2".to_string()]));
    }

    #[test]
    fn preparing_is_deterministic() {
        let a = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        let b = prepare(patient(), &provenance(), &HashMap::new()).unwrap();
        assert_eq!(serde_json::to_string(&a.resource).unwrap(), serde_json::to_string(&b.resource).unwrap());
    }
}
