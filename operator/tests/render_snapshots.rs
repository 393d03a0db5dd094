//! Snapshots of what `render` produces for the shipped examples: a reviewer
//! sees every change to a child object in the diff of these files.

use std::path::Path;

use ics_operator::api::CareRecordTenant;
use ics_operator::api::tenant::DatabaseMode;
use ics_operator::render::tenant::{Facts, render};
use ics_operator::settings::PlatformSettings;

fn example(name: &str) -> CareRecordTenant {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rendered(tenant: &CareRecordTenant, mode: DatabaseMode, gateway_api: bool) -> String {
    let facts = Facts { database_mode: mode, gateway_api };
    let children = render(tenant, &PlatformSettings::default(), &facts).into_children().unwrap();
    let values: Vec<_> = children.iter().map(|c| c.to_value()).collect();
    ics_operator::yaml::multi_doc(&values).unwrap()
}

#[test]
fn statefulset_tenant() {
    insta::assert_snapshot!(rendered(&example("tenant-statefulset.yaml"), DatabaseMode::StatefulSet, true));
}

#[test]
fn cloudnativepg_tenant() {
    insta::assert_snapshot!(rendered(&example("tenant-cloudnativepg.yaml"), DatabaseMode::CloudNativePG, true));
}

#[test]
fn external_database_tenant() {
    insta::assert_snapshot!(rendered(&example("tenant-external.yaml"), DatabaseMode::External, true));
}

#[test]
fn ingress_fallback_tenant() {
    insta::assert_snapshot!(rendered(&example("tenant-statefulset.yaml"), DatabaseMode::StatefulSet, false));
}

#[test]
fn every_example_passes_the_crd_rules() {
    for name in ["tenant-statefulset.yaml", "tenant-cloudnativepg.yaml", "tenant-external.yaml"] {
        assert_eq!(ics_operator::render::validate::tenant(&example(name)), Ok(()), "{name}");
    }
}
