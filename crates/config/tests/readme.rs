//! The shapes documented in README.md are the shapes the types read.

use carerecord_config::{GatewayApiVersion, GatewayConfig, PolicyApiVersion, SensitiveCategory, SharingPolicy};

fn yaml_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    readme.split("```yaml\n").skip(1).map(|rest| rest.split("```").next().unwrap().to_string()).collect()
}

#[test]
fn readme_gateway_example_loads_and_validates() {
    let config: GatewayConfig = serde_yaml::from_str(&yaml_blocks()[0]).unwrap();
    assert_eq!(config.api_version, GatewayApiVersion::V1);
    assert_eq!(config.issuers[0].organisation_claim, "ods");
    config.validate().unwrap();
}

#[test]
fn readme_policy_example_loads_and_validates() {
    let policy: SharingPolicy = serde_yaml::from_str(&yaml_blocks()[1]).unwrap();
    assert_eq!(policy.api_version, PolicyApiVersion::V1);
    assert_eq!(policy.agreements[0].excluded_categories, vec![SensitiveCategory::SexualHealth, SensitiveCategory::HIV]);
    policy.validate().unwrap();
}

#[test]
fn unknown_fields_are_rejected() {
    let text = yaml_blocks()[1].replace("purpose: DirectCare", "purpose: DirectCare\n    porpose: typo");
    assert!(serde_yaml::from_str::<SharingPolicy>(&text).is_err());
}

#[test]
fn another_api_version_is_rejected() {
    let text = yaml_blocks()[0].replace("carerecord.dev/gateway/v1", "carerecord.dev/gateway/v2");
    let error = serde_yaml::from_str::<GatewayConfig>(&text).unwrap_err().to_string();
    assert!(error.contains("carerecord.dev/gateway/v2"), "{error}");
}

#[test]
fn organisation_claim_defaults_to_ods() {
    let text = yaml_blocks()[0].replace("organisationClaim: ods", "");
    let config: GatewayConfig = serde_yaml::from_str(&text).unwrap();
    assert_eq!(config.issuers[0].organisation_claim, "ods");
}

#[test]
fn a_gateway_without_issuers_is_invalid() {
    let mut config: GatewayConfig = serde_yaml::from_str(&yaml_blocks()[0]).unwrap();
    config.issuers.clear();
    assert_eq!(config.validate().unwrap_err().field, "issuers");
}

#[test]
fn a_lower_case_ods_code_is_invalid() {
    let mut policy: SharingPolicy = serde_yaml::from_str(&yaml_blocks()[1]).unwrap();
    policy.agreements[0].consumer_organisations = vec!["r0a".into()];
    assert_eq!(policy.validate().unwrap_err().field, "agreements[0].consumerOrganisations[0]");
}

#[test]
fn readme_connector_example_loads_and_validates() {
    let config: carerecord_config::ConnectorConfig = serde_yaml::from_str(&yaml_blocks()[2]).unwrap();
    assert_eq!(config.api_version, carerecord_config::ConnectorApiVersion::V1);
    assert!(matches!(config.source, carerecord_config::Source::FhirPoll(_)));
    config.validate().unwrap();
}

#[test]
fn a_connector_polling_no_resource_type_is_invalid() {
    let text =
        yaml_blocks()[2].replace("resources: [Patient, AllergyIntolerance, MedicationStatement]", "resources: []");
    let config: carerecord_config::ConnectorConfig = serde_yaml::from_str(&text).unwrap();
    assert_eq!(config.validate().unwrap_err().field, "source.resources");
}

#[test]
fn readme_connector_status_example_loads() {
    let status: carerecord_config::ConnectorStatus = serde_yaml::from_str(&yaml_blocks()[3]).unwrap();
    assert_eq!(status.api_version, carerecord_config::ConnectorStatusApiVersion::V1);
    assert_eq!((status.records_written, status.source), (1204, carerecord_config::SourceKind::FhirPoll));
}

#[test]
fn a_connector_status_with_a_field_this_reader_does_not_know_is_still_read() {
    let text = yaml_blocks()[3].replace("throttled: 2", "throttled: 2\nsomethingNew: 7");
    let status: carerecord_config::ConnectorStatus = serde_yaml::from_str(&text).unwrap();
    assert_eq!(status.throttled, 2);
}

#[test]
fn a_connector_status_of_another_version_is_rejected() {
    let text = yaml_blocks()[3].replace("connector-status/v1", "connector-status/v2");
    assert!(serde_yaml::from_str::<carerecord_config::ConnectorStatus>(&text).is_err());
}

#[test]
fn the_start_up_part_leaves_out_only_what_a_running_gateway_reloads() {
    let config: GatewayConfig = serde_yaml::from_str(&yaml_blocks()[0]).unwrap();
    let part = config.start_up_part();
    assert!(part.tenant.organisations.is_empty());
    assert!(part.inbound_connectors.is_empty());
    let reloaded = GatewayConfig {
        tenant: carerecord_config::Tenant { organisations: vec!["QHM".into()], ..config.tenant.clone() },
        inbound_connectors: Vec::new(),
        ..config.clone()
    };
    assert_eq!(reloaded.start_up_part(), part);
    let moved = GatewayConfig { upstream_url: "http://elsewhere:8080/fhir".into(), ..config.clone() };
    assert_ne!(moved.start_up_part(), part);
}
