//! The checked-in JSON Schemas are what the types generate. Run with
//! `UPDATE_SCHEMA=1` to rewrite them after a deliberate change.

use carerecord_config::{ConnectorConfig, ConnectorStatus, GatewayConfig, SharingPolicy};

fn check(file: &str, schema: schemars::Schema) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(file);
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run with UPDATE_SCHEMA=1", path.display()));
    assert!(
        checked_in == generated,
        "{} drifted from the types; run `UPDATE_SCHEMA=1 cargo test -p carerecord-config` and commit it",
        path.display()
    );
}

#[test]
fn gateway_schema_matches_the_checked_in_file() {
    check("gateway-v1.json", schemars::schema_for!(GatewayConfig));
}

#[test]
fn sharing_policy_schema_matches_the_checked_in_file() {
    check("sharing-policy-v1.json", schemars::schema_for!(SharingPolicy));
}

#[test]
fn connector_schema_matches_the_checked_in_file() {
    check("connector-v1.json", schemars::schema_for!(ConnectorConfig));
}

#[test]
fn connector_status_schema_matches_the_checked_in_file() {
    check("connector-status-v1.json", schemars::schema_for!(ConnectorStatus));
}
