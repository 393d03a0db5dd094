//! One behaviour per test; the never-leaks property at the end.

use std::collections::BTreeSet;

use carerecord_fhir::security::ACT_CODE_SYSTEM;
use carerecord_fhir::{SensitiveCategory, patient, security};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::decision::TypeRule;

fn rules() -> FilterRules {
    FilterRules {
        types: TypeRule::Only(BTreeSet::from(["Condition", "Patient"])),
        excluded: BTreeSet::from([SensitiveCategory::HIV]),
        honour_objections: true,
        strip_total: true,
        generic_errors: true,
        caller_base: "https://host/federation/gm/fhir".into(),
        upstream_base_path: "/fhir".into(),
        page_caller: "caller".into(),
        page_route: "agreement:A".into(),
    }
}

fn key() -> PageKey {
    PageKey::from_secret(&[3; 32])
}

fn run(body: Value, objecting: &[&str]) -> Filtered {
    let rules = rules();
    let objecting: BTreeSet<String> = objecting.iter().map(|s| s.to_string()).collect();
    let pages = key();
    filter_response(body, Context { rules: &rules, objecting: &objecting, pages: &pages })
}

fn pass(body: Value, objecting: &[&str]) -> Value {
    match run(body, objecting) {
        Filtered::Pass(v) => v,
        Filtered::Withheld => panic!("withheld"),
    }
}

fn condition(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")}})
}

fn hiv(mut r: Value) -> Value {
    r["meta"] = json!({"security": [{"system": ACT_CODE_SYSTEM, "code": "HIV"}]});
    r
}

fn searchset(resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| json!({"fullUrl": "http://store:8080/fhir/X/1", "resource": r, "search": {"mode": "match"}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": 99, "link": [
        {"relation": "self", "url": "http://store:8080/fhir/Condition?patient=p1"},
        {"relation": "next", "url": "http://store:8080/fhir?_getpages=abc&_getpagesoffset=20&_count=20&_bundletype=searchset"}
    ], "entry": entries})
}

fn ids(bundle: &Value) -> Vec<String> {
    carerecord_fhir::bundle::entry_resources(bundle).filter_map(|r| r["id"].as_str().map(str::to_string)).collect()
}

#[test]
fn unshared_types_are_withheld_from_a_bundle() {
    let out = pass(searchset(vec![condition("c1", "p1"), json!({"resourceType": "Observation", "id": "o1"})]), &[]);
    assert_eq!(ids(&out), vec!["c1"]);
}

#[test]
fn excluded_labels_are_withheld_from_a_bundle() {
    let out = pass(searchset(vec![condition("c1", "p1"), hiv(condition("c2", "p1"))]), &[]);
    assert_eq!(ids(&out), vec!["c1"]);
}

#[test]
fn objecting_patients_are_withheld_from_a_bundle() {
    let out = pass(
        searchset(vec![condition("c1", "p1"), condition("c2", "p2"), json!({"resourceType": "Patient", "id": "p2"})]),
        &["p2"],
    );
    assert_eq!(ids(&out), vec!["c1"]);
}

#[test]
fn a_withheld_read_is_withheld() {
    assert_eq!(run(hiv(condition("c1", "p1")), &[]), Filtered::Withheld);
    assert_eq!(run(json!({"resourceType": "Observation", "id": "o1"}), &[]), Filtered::Withheld);
    assert_eq!(run(condition("c1", "p9"), &["p9"]), Filtered::Withheld);
}

#[test]
fn contained_resources_are_filtered() {
    let mut c = condition("c1", "p1");
    c["contained"] = json!([hiv(json!({"resourceType": "Condition", "id": "x"})), {"resourceType": "Observation", "id": "y"}, {"resourceType": "Patient", "id": "z"}]);
    let out = pass(c, &[]);
    assert_eq!(out["contained"].as_array().unwrap().len(), 1);
    assert_eq!(out["contained"][0]["id"], "z");
}

#[test]
fn total_is_removed() {
    assert!(pass(searchset(vec![]), &[]).get("total").is_none());
}

#[test]
fn full_urls_are_rewritten_to_the_callers_base() {
    let out = pass(searchset(vec![condition("c1", "p1")]), &[]);
    assert_eq!(out["entry"][0]["fullUrl"], "https://host/federation/gm/fhir/Condition/c1");
}

#[test]
fn paging_links_are_rewritten_and_bound_to_the_caller() {
    let out = pass(searchset(vec![]), &[]);
    let next = out["link"][1]["url"].as_str().unwrap();
    assert!(next.starts_with("https://host/federation/gm/fhir?_getpages="), "{next}");
    let token = request::parse_query(next.split_once('?').map(|(_, q)| q))
        .into_iter()
        .find(|(k, _)| k == "_getpages")
        .unwrap()
        .1;
    assert_eq!(key().open(&token, "caller", "agreement:A").as_deref(), Some("abc"));
    assert_eq!(out["link"][0]["url"], "https://host/federation/gm/fhir/Condition?patient=p1");
}

#[test]
fn links_outside_the_store_are_dropped() {
    let mut b = searchset(vec![]);
    b["link"] = json!([{"relation": "next", "url": "http://store:8080/other?_getpages=abc"}]);
    assert!(pass(b, &[])["link"].as_array().unwrap().is_empty());
}

#[test]
fn operation_outcomes_pass_through() {
    let oo =
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]});
    assert_eq!(pass(oo.clone(), &[]), oo);
    let mut b = searchset(vec![]);
    b["entry"] = json!([{"resource": oo, "search": {"mode": "outcome"}}]);
    assert_eq!(pass(b, &[])["entry"].as_array().unwrap().len(), 1);
}

#[test]
fn nested_bundles_are_filtered() {
    let rules = FilterRules { types: TypeRule::Only(BTreeSet::from(["Bundle", "Condition"])), ..rules() };
    let objecting = BTreeSet::new();
    let pages = key();
    let inner = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": hiv(condition("c1", "p1"))}, {"resource": condition("c2", "p1")}]});
    let Filtered::Pass(out) = filter_response(inner, Context { rules: &rules, objecting: &objecting, pages: &pages })
    else {
        panic!()
    };
    assert_eq!(ids(&out), vec!["c2"]);
}

#[test]
fn operation_output_is_filtered() {
    let rules = FilterRules { types: TypeRule::Only(BTreeSet::from(["Parameters", "Condition"])), ..rules() };
    let objecting = BTreeSet::new();
    let pages = key();
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "a", "resource": hiv(condition("c1", "p1"))},
        {"name": "b", "part": [{"name": "c", "resource": {"resourceType": "Observation", "id": "o"}}]}
    ]});
    let Filtered::Pass(out) = filter_response(params, Context { rules: &rules, objecting: &objecting, pages: &pages })
    else {
        panic!()
    };
    assert_eq!(out["parameter"].as_array().unwrap().len(), 1);
    assert!(out["parameter"][0]["part"].as_array().unwrap().is_empty());
}

#[test]
fn entries_without_a_resource_are_dropped() {
    let mut b = searchset(vec![]);
    b["entry"] = json!([{"request": {"method": "DELETE", "url": "Condition/c1"}}]);
    assert!(pass(b, &[])["entry"].as_array().unwrap().is_empty());
}

// ---- the property: nothing withheld ever leaves ----

fn arb_resource(depth: u32) -> BoxedStrategy<Value> {
    let leaf = (
        prop_oneof![
            Just("Condition"),
            Just("Patient"),
            Just("Observation"),
            Just("Bundle"),
            Just("Parameters"),
            Just("AllergyIntolerance")
        ],
        "[a-c][0-9]",
        prop_oneof![Just("p1"), Just("p2"), Just("p3")],
        prop::collection::vec(
            prop_oneof![
                Just(json!({"system": ACT_CODE_SYSTEM, "code": "HIV"})),
                Just(json!({"system": ACT_CODE_SYSTEM, "code": "PSY"})),
                Just(json!({"code": "HIV"})),
                Just(json!({"system": "https://carerecord.dev/fhir/CodeSystem/sensitive-category", "code": "HIV"})),
                Just(json!({"system": "http://other", "code": "HIV"})),
            ],
            0..2,
        ),
        prop_oneof![Just("subject"), Just("patient")],
    )
        .prop_map(|(t, id, p, labels, element)| {
            let mut r = json!({"resourceType": t, "id": id});
            if t != "Patient" {
                r[element] = json!({"reference": format!("Patient/{p}")});
            } else {
                r["id"] = json!(p);
            }
            if !labels.is_empty() {
                r["meta"] = json!({"security": labels});
            }
            r
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (leaf, prop::collection::vec(arb_resource(depth - 1), 0..3), prop::collection::vec(arb_resource(depth - 1), 0..3))
        .prop_map(|(mut r, contained, nested)| {
            if !contained.is_empty() {
                r["contained"] = Value::Array(contained);
            }
            match r["resourceType"].as_str() {
                Some("Bundle") => {
                    r["entry"] = Value::Array(nested.into_iter().map(|n| json!({"resource": n})).collect())
                }
                Some("Parameters") => {
                    r["parameter"] = Value::Array(
                        nested
                            .into_iter()
                            .map(|n| json!({"name": "x", "part": [{"name": "y", "resource": n}]}))
                            .collect(),
                    )
                }
                _ => {}
            }
            r
        })
        .boxed()
}

/// Every resource anywhere in a body: entries, contained, parameters, parts.
fn every_resource(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("resourceType") {
                out.push(v.clone());
            }
            for child in map.values() {
                every_resource(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| every_resource(i, out)),
        _ => {}
    }
}

proptest! {
    #[test]
    fn no_withheld_resource_ever_leaves(
        resources in prop::collection::vec(arb_resource(2), 0..6),
        shared in prop::collection::btree_set(prop_oneof![Just("Condition"), Just("Patient"), Just("Bundle"), Just("Parameters")], 0..4),
        excluded in prop::collection::btree_set(prop_oneof![Just(SensitiveCategory::HIV), Just(SensitiveCategory::MentalHealthDetention)], 0..2),
        objecting in prop::collection::btree_set(prop_oneof![Just("p1".to_string()), Just("p2".to_string())], 0..2),
        as_bundle in any::<bool>(),
    ) {
        let rules = FilterRules { types: TypeRule::Only(shared.clone()), excluded: excluded.clone(), ..rules() };
        let pages = key();
        let body = if as_bundle || resources.is_empty() { searchset(resources) } else { resources[0].clone() };
        if let Filtered::Pass(out) = filter_response(body, Context { rules: &rules, objecting: &objecting, pages: &pages }) {
            prop_assert!(out.get("total").is_none());
            let mut found = Vec::new();
            every_resource(&out, &mut found);
            for r in found {
                let t = r["resourceType"].as_str().unwrap();
                if t == "OperationOutcome" { continue; }
                // The top searchset is the gateway's answer, not a record.
                if t == "Bundle" && r.get("type") == Some(&json!("searchset")) { continue; }
                prop_assert!(shared.contains(t), "unshared {t} left: {r}");
                prop_assert!(!security::is_in_any(&r, &excluded), "excluded label left: {r}");
                prop_assert!(!patient::patient_ids(&r).iter().any(|p| objecting.contains(p)), "objecting patient left: {r}");
            }
        }
    }
}
