//! The ADT/ORU to FHIR mapping, specified by behaviour and by snapshots of
//! the Bundle for each fixture in `tests/fixtures` (files use `\n` line
//! ends, which the parser accepts like `\r`).

use carerecord_hl7v2::ack::{self, AckCode, ErrorCode};
use carerecord_hl7v2::map::{self, MapContext, MapError};
use carerecord_hl7v2::message::Message;
use carerecord_hl7v2::nhs;
use serde_json::{Value, json};

fn fixture(name: &str) -> Message {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Message::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ctx() -> MapContext {
    let mut ctx = MapContext::new("urn:carerecord:connector:cheshire-merseyside/rbt-pas", "RBT");
    ctx.security = vec![json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "code": "N",
    })];
    ctx
}

fn bundle(name: &str) -> Value {
    map::to_bundle(&fixture(name), &ctx()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn entries<'a>(bundle: &'a Value, resource_type: &str) -> Vec<&'a Value> {
    bundle["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["resourceType"] == resource_type).collect()
}

fn snapshot(name: &str) {
    let bundle = bundle(name);
    insta::with_settings!({ sort_maps => true, snapshot_suffix => name.trim_end_matches(".hl7") }, {
        insta::assert_json_snapshot!(bundle);
    });
}

#[test]
fn snapshot_adt_a01() {
    snapshot("adt_a01.hl7");
}

#[test]
fn snapshot_adt_a03() {
    snapshot("adt_a03.hl7");
}

#[test]
fn snapshot_adt_a04() {
    snapshot("adt_a04.hl7");
}

#[test]
fn snapshot_adt_a08() {
    snapshot("adt_a08.hl7");
}

#[test]
fn snapshot_oru_r01() {
    snapshot("oru_r01.hl7");
}

#[test]
fn the_same_message_gives_a_byte_identical_bundle() {
    for name in ["adt_a01.hl7", "oru_r01.hl7"] {
        let a = serde_json::to_string(&bundle(name)).unwrap();
        let b = serde_json::to_string(&bundle(name)).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn every_entry_is_a_conditional_update_on_a_business_identifier() {
    for name in ["adt_a01.hl7", "adt_a03.hl7", "adt_a04.hl7", "adt_a08.hl7", "oru_r01.hl7"] {
        let bundle = bundle(name);
        assert_eq!(bundle["type"], "transaction");
        for entry in bundle["entry"].as_array().unwrap() {
            let resource = &entry["resource"];
            let resource_type = resource["resourceType"].as_str().unwrap();
            let request = &entry["request"];
            let url = if request["method"] == "PUT" {
                let url = request["url"].as_str().unwrap();
                assert!(url.starts_with(&format!("{resource_type}?identifier=")), "{url}");
                url
            } else {
                // An ORU only makes sure its Patient and Encounter exist.
                assert!(name.starts_with("oru"));
                assert!(matches!(resource_type, "Patient" | "Encounter"));
                assert_eq!(request["method"], "POST");
                assert_eq!(request["url"], resource_type);
                request["ifNoneExist"].as_str().unwrap()
            };
            assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
            // The conditional identifier is one of the resource's identifiers.
            let first = &resource["identifier"][0];
            assert!(url.ends_with(first["value"].as_str().unwrap()), "{url}");
        }
    }
}

#[test]
fn every_resource_carries_source_provider_tag_and_security_labels() {
    let bundle = bundle("oru_r01.hl7");
    for entry in bundle["entry"].as_array().unwrap() {
        let meta = &entry["resource"]["meta"];
        assert_eq!(meta["source"], "urn:carerecord:connector:cheshire-merseyside/rbt-pas");
        assert_eq!(meta["tag"], json!([{ "system": "https://fhir.nhs.uk/Id/ods-organization-code", "code": "RBT" }]));
        assert_eq!(meta["security"][0]["code"], "N");
    }
}

#[test]
fn the_patient_is_keyed_on_the_nhs_number() {
    let bundle = bundle("adt_a01.hl7");
    let patient = entries(&bundle, "Patient")[0];
    assert_eq!(patient["request"]["url"], "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018");
    let resource = &patient["resource"];
    assert_eq!(resource["birthDate"], "1980-01-01");
    assert_eq!(resource["gender"], "female");
    assert_eq!(resource["name"][0]["family"], "SMITH");
    assert_eq!(resource["name"][0]["given"], json!(["JANE", "ANNE"]));
    assert_eq!(resource["address"][0]["postalCode"], "CW1 4QJ");
    assert_eq!(resource["address"][0]["line"][0], "The Rose & Crown");
    assert_eq!(resource["generalPractitioner"][0]["identifier"]["value"], "N81021");
}

#[test]
fn an_a08_for_the_same_nhs_number_targets_the_same_patient() {
    let a01 = bundle("adt_a01.hl7");
    let a08 = bundle("adt_a08.hl7");
    let (p1, p8) = (entries(&a01, "Patient")[0], entries(&a08, "Patient")[0]);
    assert_eq!(p1["request"]["url"], p8["request"]["url"]);
    assert_eq!(p1["fullUrl"], p8["fullUrl"]);
    assert_eq!(p8["resource"]["address"][0]["city"], "NANTWICH");
    // ... and the same Encounter, still in progress.
    let (e1, e8) = (entries(&a01, "Encounter")[0], entries(&a08, "Encounter")[0]);
    assert_eq!(e1["request"]["url"], e8["request"]["url"]);
    assert_eq!(e8["resource"]["status"], "in-progress");
}

#[test]
fn an_a03_finishes_the_admitted_encounter_with_a_period_end() {
    let a01 = bundle("adt_a01.hl7");
    let a03 = bundle("adt_a03.hl7");
    let (e1, e3) = (entries(&a01, "Encounter")[0], entries(&a03, "Encounter")[0]);
    assert_eq!(e1["request"]["url"], e3["request"]["url"]);
    assert_eq!(e1["resource"]["status"], "in-progress");
    assert_eq!(e3["resource"]["status"], "finished");
    assert_eq!(e3["resource"]["period"]["start"], "2026-11-25T09:15:00+00:00");
    assert_eq!(e3["resource"]["period"]["end"], "2026-11-28T14:10:00+00:00");
    assert_eq!(e3["resource"]["class"]["code"], "IMP");
}

#[test]
fn an_a04_registers_a_planned_ambulatory_encounter() {
    let a04 = bundle("adt_a04.hl7");
    let e = &entries(&a04, "Encounter")[0]["resource"];
    assert_eq!(e["status"], "planned");
    assert_eq!(e["class"]["code"], "AMB");
    // Summer: BST.
    assert_eq!(e["period"]["start"], "2026-07-14T10:10:00+01:00");
    let p = &entries(&a04, "Patient")[0]["resource"];
    assert_eq!(p["telecom"][1]["system"], "email");
}

#[test]
fn an_a03_without_pv1_45_ends_the_encounter_when_the_event_occurred() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/adt_a03.hl7", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("|20261125091500|20261128141000", "|20261125091500|");
    let bundle = map::to_bundle(&Message::parse(&text).unwrap(), &ctx()).unwrap();
    let e = &entries(&bundle, "Encounter")[0]["resource"];
    assert_eq!(e["period"]["end"], "2026-11-28T14:10:00+00:00");
}

#[test]
fn an_oru_gives_a_report_per_obr_referencing_its_observations() {
    let bundle = bundle("oru_r01.hl7");
    let reports = entries(&bundle, "DiagnosticReport");
    let observations = entries(&bundle, "Observation");
    assert_eq!(reports.len(), 2);
    assert_eq!(observations.len(), 7);
    let ue = &reports[0]["resource"];
    assert_eq!(ue["status"], "final");
    assert_eq!(ue["effectiveDateTime"], "2026-11-25T07:30:00+00:00");
    assert_eq!(ue["result"].as_array().unwrap().len(), 5);
    let full_urls: Vec<&Value> = observations.iter().map(|o| &o["fullUrl"]).collect();
    for reference in ue["result"].as_array().unwrap() {
        assert!(full_urls.contains(&&reference["reference"]));
    }
    assert_eq!(reports[1]["resource"]["status"], "preliminary");
    let patient_url = &entries(&bundle, "Patient")[0]["fullUrl"];
    assert_eq!(&ue["subject"]["reference"], patient_url);
}

#[test]
fn an_oru_never_overwrites_the_patient_or_encounter_the_pas_sent() {
    let oru = bundle("oru_r01.hl7");
    let patient = entries(&oru, "Patient")[0];
    assert_eq!(
        patient["request"],
        json!({
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": "identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018",
        })
    );
    // Same fullUrl as the ADT's Patient: one patient, whichever came first.
    assert_eq!(patient["fullUrl"], entries(&bundle("adt_a01.hl7"), "Patient")[0]["fullUrl"]);
    assert_eq!(entries(&oru, "Encounter")[0]["request"]["method"], "POST");
}

#[test]
fn observation_values_follow_obx_2() {
    let bundle = bundle("oru_r01.hl7");
    let obs: Vec<&Value> = entries(&bundle, "Observation").into_iter().map(|e| &e["resource"]).collect();
    // NM with UCUM units, range and flag.
    assert_eq!(
        obs[1]["valueQuantity"],
        json!({ "value": 5.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L" })
    );
    assert_eq!(obs[1]["referenceRange"][0]["low"]["value"], json!(3.5));
    assert_eq!(obs[1]["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(obs[1]["note"][0]["text"], "Sample slightly haemolysed; please repeat.");
    // NM with a comparator.
    assert_eq!(obs[3]["valueQuantity"]["comparator"], "<");
    // SN.
    assert_eq!(obs[4]["valueQuantity"]["comparator"], ">");
    assert_eq!(obs[4]["valueQuantity"]["code"], "mL/min/{1.73_m2}");
    // CWE.
    assert_eq!(
        obs[5]["valueCodeableConcept"]["coding"][0],
        json!({ "system": "http://snomed.info/sct", "code": "264868006", "display": "No growth" })
    );
    // FT, with its line break.
    assert_eq!(obs[6]["valueString"], "No significant growth.\nPlease send a repeat sample if symptoms persist.");
    assert_eq!(obs[0]["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(obs[0]["identifier"][0]["value"], "25L123456-1", "filler order number + OBX-1");
}

#[test]
fn an_invalid_nhs_number_is_an_ae_with_a_data_type_error() {
    let msg = fixture("adt_a01_invalid_nhs.hl7");
    let error = map::to_bundle(&msg, &ctx()).unwrap_err();
    assert_eq!(error, MapError::InvalidNhsNumber { value: "9990000019".into() });
    assert_eq!(error.ack_code(), AckCode::AE);
    let ack = ack::build_ack(&msg, error.ack_code(), Some(&error.to_ack_error()), "ACK1", "20261125093001");
    let ack = Message::parse(&ack).unwrap();
    assert_eq!(ack.value("MSA", 1), Some("AE"));
    assert_eq!(ack.value("MSA", 2), Some("MSG00005"));
    assert_eq!(ack.component("ERR", 3, 1), Some("102"));
    assert!(ack.value("ERR", 8).unwrap().contains("9990000019"));
}

#[test]
fn a_missing_nhs_number_is_an_ae_unless_local_identifiers_are_allowed() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/adt_a01.hl7", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("9990000018^^^NHS^NH~", "");
    let msg = Message::parse(&text).unwrap();
    let error = map::to_bundle(&msg, &ctx()).unwrap_err();
    assert_eq!(error, MapError::MissingNhsNumber);
    assert_eq!(error.ack_code(), AckCode::AE);
    assert_eq!(error.error_code(), ErrorCode::RequiredFieldMissing);

    let mut lenient = ctx();
    lenient.require_nhs_number = false;
    let bundle = map::to_bundle(&msg, &lenient).unwrap();
    assert_eq!(
        entries(&bundle, "Patient")[0]["request"]["url"],
        "Patient?identifier=urn:carerecord:id:RBT:MR|RBT1234567"
    );
    assert_eq!(map::patient_key(&msg).as_deref(), Some("RBT|RBT1234567"));
}

#[test]
fn unsupported_message_types_and_versions_are_ar() {
    let base = "MSH|^~\\&|PAS|RBT|ICS|ICS|20261125093000||ADT^A28^ADT_A05|M1|P|2.4\rPID|1||9990000018^^^NHS^NH\r";
    let cases = [
        (base.to_owned(), ErrorCode::UnsupportedEventCode),
        (base.replace("ADT^A28^ADT_A05", "SIU^S12"), ErrorCode::UnsupportedMessageType),
        (base.replace("ADT^A28^ADT_A05", "ADT^A01").replace("|2.4", "|3.0"), ErrorCode::UnsupportedVersionId),
    ];
    for (text, code) in cases {
        let msg = Message::parse(&text).unwrap();
        let error = map::to_bundle(&msg, &ctx()).unwrap_err();
        assert_eq!(error.ack_code(), AckCode::AR, "{error}");
        assert_eq!(error.error_code(), code, "{error}");
    }
}

#[test]
fn a_missing_visit_number_on_an_admission_is_an_ae() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/adt_a01.hl7", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("V00012345^^^RBT^VN", "");
    let error = map::to_bundle(&Message::parse(&text).unwrap(), &ctx()).unwrap_err();
    assert_eq!(error.ack_code(), AckCode::AE);
    let location = error.location().unwrap();
    assert_eq!((location.segment, location.field), ("PV1", Some(19)));
}

#[test]
fn patient_key_is_the_nhs_number() {
    assert_eq!(map::patient_key(&fixture("oru_r01.hl7")).as_deref(), Some("9990000018"));
    assert!(nhs::is_valid("9990000018"));
}
