//! The checked-in CRDs are exactly what the binary generates.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = ics_operator::yaml::multi_doc(&ics_operator::api::crds()).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/carerecord.dev.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/carerecord.dev.yaml is out of date; regenerate it with\n  cargo run -q -p ics-operator -- crds > crds/carerecord.dev.yaml"
    );
}

#[test]
fn every_crd_is_in_the_carerecord_category_with_a_status_subresource() {
    for crd in ics_operator::api::crds() {
        assert_eq!(crd.spec.names.categories, Some(vec!["carerecord".to_string()]), "{:?}", crd.metadata.name);
        for version in &crd.spec.versions {
            assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
    }
}

#[test]
fn status_conditions_merge_by_type_under_server_side_apply() {
    let yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/carerecord.dev.yaml")).unwrap();
    let conditions = yaml.split("conditions:").nth(1).expect("a status has conditions");
    let block: String = conditions.lines().take(80).collect::<Vec<_>>().join("\n");
    assert!(block.contains("x-kubernetes-list-type: map"), "{block}");
    assert!(block.contains("x-kubernetes-list-map-keys:"), "{block}");
}
