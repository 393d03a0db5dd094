//! The record gateway: the only way into a tenant's records. Every public
//! route points at it; it authenticates, authorizes, filters and audits, then
//! forwards to the record store. It runs the operator's own image and reads
//! the typed contract (`carerecord-config`) rendered here.

use std::collections::BTreeMap;

use carerecord_config::{
    Agreement, AuditSettings, GatewayApiVersion, GatewayConfig, PolicyApiVersion, Purpose, SensitiveCategory,
    SharingPolicy, Tenant,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Ctx;
use super::record_store::{RECORD_STORE, RECORD_STORE_PORT};
use crate::render::labels;
use crate::render::pod::{restricted_container, restricted_pod};

/// Pod component label and object name of the record gateway.
pub const RECORD_GATEWAY: &str = "record-gateway";
/// The gateway's public port, which every route points at.
pub const RECORD_GATEWAY_PORT: i32 = 8080;
/// The gateway's health and metrics port.
const ADMIN_PORT: i32 = 9090;
/// The key that binds paging links to their caller, shared by the replicas
/// so that a link issued by one is honoured by another. Generated once.
pub const PAGE_KEY_SECRET: &str = "record-gateway-page-key";
/// ConfigMap holding the gateway's configuration (a change rolls the pods).
const CONFIG: &str = "record-gateway";
/// Annotation on the pod template: hash of the configuration.
const CONFIG_HASH: &str = "carerecord.dev/config-hash";
/// The operator image's non-root user.
const GATEWAY_UID: i64 = 65532;
const REPLICAS: i32 = 2;

const CONFIG_DIR: &str = "/etc/record-gateway";
const POLICY_DIR: &str = "/etc/record-gateway/policy";
const PAGE_KEY_DIR: &str = "/etc/record-gateway/page-key";
/// Key of the sharing policy in its ConfigMap (`policy::SHARING_POLICY`).
pub const POLICY_KEY: &str = "policy.yaml";

/// The gateway's configuration, as the gateway reads it.
pub(crate) fn config(ctx: &Ctx) -> GatewayConfig {
    let mut organisations = vec![ctx.tenant.spec.ods_code.clone()];
    organisations.extend(ctx.facts.organisations.iter().cloned());
    organisations.sort();
    organisations.dedup();
    GatewayConfig {
        api_version: GatewayApiVersion::V1,
        tenant: Tenant { name: ctx.name.clone(), organisations },
        public_base_url: format!("https://{}", ctx.tenant.spec.gateway.hostname),
        upstream_url: format!("http://{RECORD_STORE}.{}.svc:{RECORD_STORE_PORT}/fhir", ctx.namespace),
        listen: ([0, 0, 0, 0], RECORD_GATEWAY_PORT as u16).into(),
        admin_listen: ([0, 0, 0, 0], ADMIN_PORT as u16).into(),
        issuers: ctx.settings.trusted_issuers.clone(),
        audit: AuditSettings::default(),
        policy_file: Some(format!("{POLICY_DIR}/{POLICY_KEY}")),
        inbound_connectors: ctx.facts.inbound_connectors.clone(),
    }
}

/// The sharing policy the gateway enforces: every Active agreement under
/// which this tenant provides records. Dates travel with it, so expiry holds
/// at the gateway even while the operator is down.
pub(crate) fn sharing_policy(ctx: &Ctx) -> SharingPolicy {
    let mut agreements: Vec<Agreement> = ctx
        .facts
        .active_agreements
        .iter()
        .map(|a| Agreement {
            agreement_id: a.agreement_id.clone(),
            consumer_tenant: a.consumer_tenant.clone(),
            consumer_organisations: a.consumer_organisations.clone(),
            resources: a.resources.clone(),
            excluded_categories: a
                .excluded_categories
                .iter()
                .filter_map(|c| serde_json::from_value::<SensitiveCategory>(serde_json::Value::String(c.clone())).ok())
                .collect(),
            valid_from: a.valid_from.clone(),
            expires: a.until.clone(),
            purpose: Purpose::DirectCare,
        })
        .collect();
    agreements.sort_by(|a, b| a.agreement_id.cmp(&b.agreement_id).then(a.consumer_tenant.cmp(&b.consumer_tenant)));
    SharingPolicy { api_version: PolicyApiVersion::V1, agreements }
}

fn yaml<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

pub(super) fn config_map(ctx: &Ctx) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta(CONFIG, RECORD_GATEWAY),
        data: Some(BTreeMap::from([("gateway.yaml".to_string(), yaml(&config(ctx)))])),
        ..ConfigMap::default()
    }
}

/// The page key's shape; the controller adds the key when it creates it.
pub(super) fn page_key(ctx: &Ctx) -> Secret {
    Secret { metadata: ctx.meta(PAGE_KEY_SECRET, RECORD_GATEWAY), type_: Some("Opaque".into()), ..Secret::default() }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..VolumeMount::default() }
}

pub(super) fn deployment(ctx: &Ctx) -> Deployment {
    let pod_labels = labels::pod_labels(&ctx.name, RECORD_GATEWAY);
    let replicas = if ctx.tenant.spec.suspend { 0 } else { REPLICAS };
    // The gateway rereads the policy and the configuration's reloadable part
    // itself (both are mounted as directories, which the kubelet updates in
    // place): only a change to what it reads at start-up needs new pods, so
    // a provider joining the tenant restarts nothing.
    let start_up = ConfigMap {
        data: Some(BTreeMap::from([("gateway.yaml".to_string(), yaml(&config(ctx).start_up_part()))])),
        ..ConfigMap::default()
    };
    let hash = crate::render::pod::config_hash(&start_up);
    let q = |s: &str| Quantity(s.into());
    let container = Container {
        name: "gateway".into(),
        image: Some(ctx.settings.images.record_gateway.clone()),
        args: Some(
            [
                "gateway",
                "--config",
                &format!("{CONFIG_DIR}/gateway.yaml"),
                "--page-key-file",
                &format!("{PAGE_KEY_DIR}/key"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: RECORD_GATEWAY_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("100m")),
                ("memory".to_string(), q("64Mi")),
                ("ephemeral-storage".to_string(), q("16Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), q("1")),
                ("memory".to_string(), q("128Mi")),
                ("ephemeral-storage".to_string(), q("64Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR),
            mount("policy", POLICY_DIR),
            mount("page-key", PAGE_KEY_DIR),
        ]),
        ..Container::default()
    };
    let config_volume = |name: &str, config_map: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map.into(), ..ConfigMapVolumeSource::default() }),
        ..Volume::default()
    };
    Deployment {
        metadata: ctx.meta(RECORD_GATEWAY, RECORD_GATEWAY),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // The gateway never talks to Kubernetes.
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod(GATEWAY_UID)),
                    containers: vec![container],
                    volumes: Some(vec![
                        config_volume("config", CONFIG),
                        config_volume("policy", super::policy::SHARING_POLICY),
                        Volume {
                            name: "page-key".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(PAGE_KEY_SECRET.into()),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub(super) fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta(RECORD_GATEWAY, RECORD_GATEWAY),
        spec: Some(ServiceSpec {
            selector: Some(labels::pod_labels(&ctx.name, RECORD_GATEWAY)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: RECORD_GATEWAY_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// One replica at least stays up through voluntary disruptions.
pub(super) fn disruption_budget(ctx: &Ctx) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ctx.meta(RECORD_GATEWAY, RECORD_GATEWAY),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::pod_labels(&ctx.name, RECORD_GATEWAY)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ActiveAgreement, Facts, fixtures, render};
    use crate::api::tenant::DatabaseMode;
    use crate::settings::{PlatformSettings, TrustedIssuer};

    fn settings() -> PlatformSettings {
        PlatformSettings {
            trusted_issuers: vec![TrustedIssuer {
                issuer: "https://idp.example.nhs.uk/realms/carerecord".into(),
                audience: "carerecord-gateway".into(),
                organisation_claim: "ods".into(),
                jwks_uri: None,
            }],
            ..PlatformSettings::default()
        }
    }

    fn facts() -> Facts {
        Facts {
            organisations: vec!["G3472185".into()],
            inbound_connectors: Vec::new(),
            active_agreements: vec![ActiveAgreement {
                agreement_id: "DSA-1".into(),
                consumer_tenant: "greater-manchester".into(),
                consumer_organisations: vec!["QOP".into()],
                purpose: "DirectCare".into(),
                resources: vec!["AllergyIntolerance".into()],
                excluded_categories: vec!["HIV".into()],
                access: "ReadOnly".into(),
                valid_from: "2026-11-01T00:00:00Z".into(),
                until: "2027-10-31T23:59:59Z".into(),
            }],
            ..fixtures::facts(DatabaseMode::StatefulSet)
        }
    }

    #[test]
    fn the_gateway_acts_for_the_icb_and_its_providers_and_trusts_the_platform_issuers() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let config = render(&t, &settings(), &facts()).record_gateway.config;
        let text = &config.data.unwrap()["gateway.yaml"];
        let parsed: carerecord_config::GatewayConfig = serde_yaml::from_str(text).expect("the gateway reads it");
        assert_eq!(parsed.tenant.organisations, ["G3472185", "QYG"]);
        assert_eq!(parsed.issuers[0].audience, "carerecord-gateway");
        assert_eq!(parsed.upstream_url, "http://record-store.scr-cheshire-merseyside.svc:8080/fhir");
        assert_eq!(parsed.public_base_url, "https://cheshire-merseyside.scr.example.nhs.uk");
    }

    #[test]
    fn the_sharing_policy_carries_dates_consumers_and_exclusions() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let policy = render(&t, &settings(), &facts()).sharing_policy;
        let parsed: carerecord_config::SharingPolicy =
            serde_yaml::from_str(&policy.data.unwrap()[super::POLICY_KEY]).expect("the gateway reads it");
        let a = &parsed.agreements[0];
        assert_eq!((a.valid_from.as_str(), a.expires.as_str()), ("2026-11-01T00:00:00Z", "2027-10-31T23:59:59Z"));
        assert_eq!(a.consumer_organisations, ["QOP"]);
        assert_eq!(a.excluded_categories, [carerecord_config::SensitiveCategory::HIV]);
    }

    fn gateway_hash(settings: &PlatformSettings, f: &Facts) -> String {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let d = render(&t, settings, f).record_gateway.deployment;
        d.spec.unwrap().template.metadata.unwrap().annotations.unwrap()[super::CONFIG_HASH].clone()
    }

    #[test]
    fn a_changed_policy_does_not_roll_the_gateway() {
        let fewer_agreements = Facts { active_agreements: Vec::new(), ..facts() };
        assert_eq!(gateway_hash(&settings(), &facts()), gateway_hash(&settings(), &fewer_agreements));
    }

    #[test]
    fn a_provider_joining_the_tenant_does_not_roll_the_gateway() {
        let more_organisations = Facts { organisations: vec!["G1".into(), "G2".into()], ..facts() };
        assert_eq!(gateway_hash(&settings(), &facts()), gateway_hash(&settings(), &more_organisations));
    }

    #[test]
    fn a_changed_start_up_setting_rolls_the_gateway() {
        let mut other_issuers = settings();
        other_issuers.trusted_issuers.clear();
        assert_ne!(gateway_hash(&settings(), &facts()), gateway_hash(&other_issuers, &facts()));
    }

    #[test]
    fn the_gateway_runs_two_restricted_replicas_without_a_service_account_token() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let d = render(&t, &settings(), &facts()).record_gateway.deployment;
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.containers[0].args.as_ref().unwrap()[0], "gateway");
    }
}
