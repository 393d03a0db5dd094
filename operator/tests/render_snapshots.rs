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
    let facts = Facts {
        database_mode: mode,
        gateway_api,
        active_agreements: Vec::new(),
        hostname_held_by: None,
        organisations: Vec::new(),
        inbound_connectors: Vec::new(),
    };
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
    let mut tenant = example("tenant-statefulset.yaml");
    tenant.spec.gateway.tls_secret_name = Some("cheshire-merseyside-tls".into());
    insta::assert_snapshot!(rendered(&tenant, DatabaseMode::StatefulSet, false));
}

#[test]
fn every_example_passes_the_crd_rules() {
    for name in ["tenant-statefulset.yaml", "tenant-cloudnativepg.yaml", "tenant-external.yaml"] {
        assert_eq!(ics_operator::render::validate::tenant(&example(name)), Ok(()), "{name}");
    }
}

mod connectors {
    use super::*;
    use ics_operator::api::ProviderConnector;
    use ics_operator::catalogue::Catalogue;

    fn connectors() -> Vec<ProviderConnector> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/connectors.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
    }

    fn rendered(name: &str) -> String {
        let tenant = example("tenant-statefulset.yaml");
        let connector = connectors().into_iter().find(|c| c.metadata.name.as_deref() == Some(name)).unwrap();
        let catalogue = Catalogue::built_in();
        let profile = catalogue.get(&connector.spec.system).unwrap();
        let children =
            ics_operator::render::connector::render(&connector, profile, &tenant, &PlatformSettings::default(), true);
        let values: Vec<_> = children.into_children().unwrap().iter().map(|c| c.to_value()).collect();
        ics_operator::yaml::multi_doc(&values).unwrap()
    }

    #[test]
    fn every_example_connector_passes_the_crd_rules() {
        for c in connectors() {
            assert_eq!(ics_operator::render::validate::connector(&c), Ok(()), "{:?}", c.metadata.name);
        }
    }

    /// The connector configuration the operator renders for the example
    /// connector `name`, with `edit` applied to its spec first.
    fn config(name: &str, edit: impl FnOnce(&mut ProviderConnector)) -> carerecord_config::ConnectorConfig {
        let tenant = example("tenant-statefulset.yaml");
        let mut connector = connectors().into_iter().find(|c| c.metadata.name.as_deref() == Some(name)).unwrap();
        edit(&mut connector);
        let catalogue = Catalogue::built_in();
        let profile = catalogue.get(&connector.spec.system).unwrap();
        ics_operator::render::connector::connector_config(&connector, profile, &tenant)
    }

    #[test]
    fn every_example_connector_renders_a_valid_contract() {
        for c in connectors() {
            let name = c.metadata.name.clone().unwrap();
            assert_eq!(config(&name, |_| {}).validate(), Ok(()), "{name}");
        }
    }

    #[test]
    fn no_built_in_profile_names_an_image_so_connectors_run_the_operators_own() {
        assert!(Catalogue::built_in().iter().all(|p| p.image.is_none()));
        let out = rendered("riverside-medical-centre");
        assert!(out.contains(&format!("image: {}", PlatformSettings::default().images.record_gateway)), "{out}");
    }

    #[test]
    fn a_gp_connect_connector_says_it_needs_the_spine_and_moves_nothing() {
        let c = config("riverside-medical-centre", |c| c.spec.system = "gp-connect".into());
        let carerecord_config::Source::Unavailable(u) = c.source else { panic!("{:?}", c.source) };
        assert!(u.reason.contains("Spine"), "{}", u.reason);
    }

    #[test]
    fn an_hl7v2_connector_listens_for_mllp_on_its_profiles_port() {
        let c = config("riverside-medical-centre", |c| {
            c.spec.system = "hl7v2-mllp".into();
            c.spec.endpoint.url = "mllp://pas.example.nhs.uk:2575".into();
        });
        let carerecord_config::Source::Hl7v2Mllp(m) = c.source else { panic!("{:?}", c.source) };
        assert_eq!(m.listen.port(), 2575);
    }

    #[test]
    fn smart_backend_services_auth_reads_the_private_key_from_the_credentials_secret() {
        use ics_operator::api::connector::{AuthMethod, EndpointAuth};
        let c = config("riverside-medical-centre", |c| {
            c.spec.endpoint.auth = Some(EndpointAuth {
                method: AuthMethod::PrivateKeyJwt,
                token_url: Some("https://fhir.emis.example.nhs.uk/oauth2/token".into()),
                client_id: Some("carerecord-cm".into()),
                scope: Some("system/*.rs".into()),
                algorithm: None,
                key_id: Some("k1".into()),
            })
        });
        let carerecord_config::Source::FhirPoll(poll) = c.source else { panic!("{:?}", c.source) };
        assert_eq!(
            poll.auth,
            carerecord_config::SourceAuth::PrivateKeyJwt {
                token_url: "https://fhir.emis.example.nhs.uk/oauth2/token".into(),
                client_id: "carerecord-cm".into(),
                key_file: "/var/run/secrets/connector/private-key.pem".into(),
                key_id: Some("k1".into()),
                algorithm: carerecord_config::AssertionAlgorithm::RS384,
                scope: Some("system/*.rs".into()),
            }
        );
    }

    #[test]
    fn a_fhir_connector_with_an_mllp_endpoint_renders_an_invalid_contract() {
        let c = config("riverside-medical-centre", |c| c.spec.endpoint.url = "mllp://pas.example.nhs.uk:2575".into());
        assert_eq!(c.validate().unwrap_err().field, "source.baseUrl");
    }

    #[test]
    fn a_push_connector_is_forwarded_to_by_the_record_gateway_until_stopped() {
        use ics_operator::api::connector::ConnectorState;
        let catalogue = Catalogue::built_in();
        let profile = catalogue.get("liquidlogic-las").unwrap();
        let mut connector = connectors().into_iter().next().unwrap();
        connector.spec.system = "liquidlogic-las".into();
        let inbound = ics_operator::render::connector::inbound(&connector, profile, "scr-cheshire-merseyside").unwrap();
        assert_eq!(inbound.name, "riverside-medical-centre");
        assert_eq!(inbound.provider_ods_code, "N82054");
        assert_eq!(inbound.upstream_url, "http://riverside-medical-centre.scr-cheshire-merseyside.svc:8080");
        connector.spec.state = ConnectorState::Stopped;
        assert_eq!(ics_operator::render::connector::inbound(&connector, profile, "scr-cheshire-merseyside"), None);
    }

    #[test]
    fn a_polling_connector_is_not_forwarded_to() {
        let catalogue = Catalogue::built_in();
        let connector = connectors().into_iter().next().unwrap();
        let profile = catalogue.get(&connector.spec.system).unwrap();
        assert_eq!(ics_operator::render::connector::inbound(&connector, profile, "scr-cheshire-merseyside"), None);
    }

    #[test]
    fn polling_reads_patients_first() {
        let c = config("mersey-care", |c| c.spec.resources = vec!["Condition".into(), "Patient".into()]);
        let carerecord_config::Source::FhirPoll(poll) = c.source else { panic!("{:?}", c.source) };
        assert_eq!(poll.resources, vec!["Patient".to_string(), "Condition".to_string()]);
    }

    #[test]
    fn emis_web_gp_practice() {
        insta::assert_snapshot!(rendered("riverside-medical-centre"));
    }

    #[test]
    fn systmone_gp_practice() {
        insta::assert_snapshot!(rendered("park-lane-surgery"));
    }

    #[test]
    fn oracle_health_acute_trust() {
        insta::assert_snapshot!(rendered("liverpool-university-hospitals"));
    }

    #[test]
    fn rio_mental_health_trust() {
        insta::assert_snapshot!(rendered("mersey-care"));
    }

    #[test]
    fn paused_mosaic_social_care_has_no_pods() {
        let out = rendered("liverpool-adult-social-care");
        assert!(out.contains("replicas: 0"), "{out}");
        insta::assert_snapshot!(out);
    }
}

mod every_profile {
    use super::*;
    use ics_operator::api::ProviderConnector;
    use ics_operator::catalogue::{Catalogue, Protocol};

    /// One connector per catalogue profile, rendered with the profile's defaults.
    #[test]
    fn each_catalogue_profile_renders_its_connector() {
        let tenant = example("tenant-statefulset.yaml");
        let catalogue = Catalogue::built_in();
        for profile in catalogue.iter() {
            let url = match profile.protocol {
                Protocol::Hl7v2Mllp => "mllp://adt.example.nhs.uk:2575".to_string(),
                Protocol::FhirR4 => format!("https://{}.example.nhs.uk/fhir", profile.name),
            };
            let connector: ProviderConnector = serde_yaml::from_str(&format!(
                "apiVersion: carerecord.dev/v1alpha1\nkind: ProviderConnector\nmetadata: {{name: {name}, namespace: scr-cheshire-merseyside, uid: 00000000-0000-0000-0000-000000000001}}\nspec:\n  provider: {{odsCode: N82054, name: Riverside, kind: GPPractice}}\n  system: {name}\n  endpoint: {{url: '{url}'}}\n",
                name = profile.name
            ))
            .unwrap();
            assert_eq!(ics_operator::render::validate::connector(&connector), Ok(()), "{}", profile.name);
            let children = ics_operator::render::connector::render(
                &connector,
                profile,
                &tenant,
                &PlatformSettings::default(),
                true,
            );
            let values: Vec<_> = children.into_children().unwrap().iter().map(|c| c.to_value()).collect();
            insta::assert_snapshot!(
                format!("profile_{}", profile.name.replace('-', "_")),
                ics_operator::yaml::multi_doc(&values).unwrap()
            );
        }
    }
}

mod agreements {
    use super::*;
    use ics_operator::api::SharingAgreement;
    use ics_operator::render::agreement::offline;

    fn example_agreements() -> Vec<SharingAgreement> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agreement-cheshire-greater-manchester.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
    }

    #[test]
    fn both_sides_in_the_input_make_the_example_agreement_active_in_the_preview() {
        let tenants = vec![example("tenant-statefulset.yaml"), example("tenant-cloudnativepg.yaml")];
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let decided = offline::decisions(&example_agreements(), &tenants, now);
        let active = offline::active_for_provider(&tenants[0], &decided, &tenants);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].consumer_organisations, ["QOP"]);
        assert!(active[0].excluded_categories.contains(&"HIV".to_string()));
        assert!(
            offline::active_for_provider(&tenants[1], &decided, &tenants).is_empty(),
            "the consumer shares nothing"
        );
    }

    #[test]
    fn one_side_alone_is_never_active_in_the_preview() {
        let tenants = vec![example("tenant-statefulset.yaml"), example("tenant-cloudnativepg.yaml")];
        let provider_side: Vec<_> = example_agreements()
            .into_iter()
            .filter(|a| a.spec.role == ics_operator::api::agreement::Role::Provider)
            .collect();
        let decided = offline::decisions(&provider_side, &tenants, "2026-12-01T00:00:00Z".parse().unwrap());
        assert!(offline::active_for_provider(&tenants[0], &decided, &tenants).is_empty());
    }
}
