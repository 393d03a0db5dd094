//! Children of a `ProviderConnector`: its rendered configuration, the
//! connector Deployment, its Service, its network policy and, for push
//! connectors, the inbound route on the tenant host.

use std::collections::BTreeMap;

use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
    HttpRouteSpec,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use std::net::SocketAddr;

use carerecord_config::{
    ChangeFeed, ConnectorApiVersion, ConnectorConfig, ConnectorProvider, ExportLevel, FhirPoll, InboundConnector, Mllp,
    Push, Source, SourceAuth, Unavailable,
};

use crate::api::connector::{
    AssertionAlgorithm, AuthMethod, ConnectorState, Direction, ProviderConnector, Schedule, ScheduleMode,
};
use crate::api::tenant::CareRecordTenant;
use crate::catalogue::{Profile, Protocol};
use crate::render::child::{Child, ChildError, ChildKind, controller_reference};
use crate::render::labels;
use crate::render::pod::{restricted_container, restricted_pod};
use crate::render::tenant::{RECORD_STORE, RECORD_STORE_PORT};
use crate::settings::PlatformSettings;

/// Pod annotation holding the hash of the rendered configuration: a change
/// rolls the Deployment.
pub const CONFIG_HASH: &str = "carerecord.dev/config-hash";
const CONNECTOR_UID: i64 = 65532;

/// Everything a connector owns; destructured without `..` when applied.
#[derive(Clone, Debug)]
pub struct ConnectorChildren {
    pub config: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    pub inbound_route: Option<HttpRoute>,
    pub disruption_budget: k8s_openapi::api::policy::v1::PodDisruptionBudget,
}

impl ConnectorChildren {
    pub fn into_children(self) -> Result<Vec<Child>, ChildError> {
        let ConnectorChildren { config, deployment, service, network_policy, inbound_route, disruption_budget } = self;
        let mut out = vec![
            Child::new(ChildKind::ConfigMap, &config, false)?,
            Child::new(ChildKind::NetworkPolicy, &network_policy, false)?,
            Child::new(ChildKind::Deployment, &deployment, false)?,
            Child::new(ChildKind::Service, &service, false)?,
            Child::new(ChildKind::PodDisruptionBudget, &disruption_budget, false)?,
        ];
        if let Some(route) = inbound_route {
            out.push(Child::new(ChildKind::HttpRoute, &route, false)?);
        }
        Ok(out)
    }
}

/// The schedule in effect: the spec's, else the profile's.
pub fn effective_schedule(connector: &ProviderConnector, profile: &Profile) -> Schedule {
    let mut schedule = connector.spec.schedule.clone().unwrap_or_else(|| profile.schedule.clone());
    if schedule.mode == ScheduleMode::Poll && schedule.interval_seconds.is_none() {
        schedule.interval_seconds = profile.schedule.interval_seconds.or(Some(900));
    }
    schedule
}

/// The resource types in effect: the spec's, else the profile's.
pub fn effective_resources(connector: &ProviderConnector, profile: &Profile) -> Vec<String> {
    if connector.spec.resources.is_empty() { profile.resources.clone() } else { connector.spec.resources.clone() }
}

struct Ctx<'a> {
    connector: &'a ProviderConnector,
    profile: &'a Profile,
    tenant: &'a CareRecordTenant,
    name: String,
    namespace: String,
    tenant_name: String,
}

impl<'a> Ctx<'a> {
    fn new(connector: &'a ProviderConnector, profile: &'a Profile, tenant: &'a CareRecordTenant) -> Self {
        Ctx {
            connector,
            profile,
            tenant,
            name: connector.name_any(),
            namespace: connector.namespace().unwrap_or_else(|| tenant.target_namespace()),
            tenant_name: tenant.name_any(),
        }
    }

    fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        let mut l = labels::tenant_labels(&self.tenant_name, component);
        l.insert(labels::CONNECTOR.into(), self.name.clone());
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(l),
            owner_references: controller_reference(self.connector).map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        let mut l = labels::pod_labels(&self.tenant_name, crate::render::tenant::CONNECTOR_COMPONENT);
        l.insert(labels::CONNECTOR.into(), self.name.clone());
        l
    }

    /// Whether the provider sends to the connector (pushes, Subscription
    /// notifications, MLLP messages) rather than only being read.
    fn receives(&self) -> bool {
        receives(self.connector, self.profile)
    }
}

/// Renders a connector of `tenant` from its catalogue `profile`.
pub fn render(
    connector: &ProviderConnector,
    profile: &Profile,
    tenant: &CareRecordTenant,
    settings: &PlatformSettings,
    gateway_api: bool,
) -> ConnectorChildren {
    let ctx = Ctx::new(connector, profile, tenant);
    let image = connector
        .spec
        .image
        .clone()
        .or_else(|| profile.image.clone())
        .unwrap_or_else(|| settings.images.record_gateway.clone());
    let config = config_map(&ctx);
    let hash = crate::render::pod::config_hash(&config);
    let inbound = connector.spec.state != ConnectorState::Stopped
        && ctx.receives()
        && profile.protocol == Protocol::FhirR4
        && gateway_api;
    ConnectorChildren {
        deployment: deployment(&ctx, &hash, image),
        service: service(&ctx),
        network_policy: network_policy(&ctx, settings),
        inbound_route: inbound.then(|| inbound_route(&ctx, settings)),
        disruption_budget: crate::render::pod::one_at_a_time(ctx.meta(&ctx.name, "connector"), ctx.pod_labels()),
        config,
    }
}

/// Where the connector's pod mounts its configuration and credentials.
const CONFIG_DIR: &str = "/etc/connector";
const CREDENTIALS_DIR: &str = "/var/run/secrets/connector";
/// The connector's `/healthz`, `/readyz`, `/metrics` and `/status`.
pub const CONNECTOR_ADMIN_PORT: i32 = 9090;
/// Re-read before the cursor on every poll: servers commit late.
const POLL_OVERLAP_SECONDS: u64 = 300;
const POLL_REQUESTS_PER_SECOND: u32 = 10;

fn any_address(port: i32) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], u16::try_from(port).unwrap_or(0)))
}

/// How the connector authenticates to the provider, from `endpoint.auth`
/// and the credentials Secret (mounted at CREDENTIALS_DIR).
fn source_auth(endpoint: &crate::api::connector::Endpoint) -> SourceAuth {
    let file = |key: &str| format!("{CREDENTIALS_DIR}/{key}");
    let Some(auth) = &endpoint.auth else {
        return match endpoint.credentials_secret_ref {
            Some(_) => SourceAuth::BearerToken { token_file: file("token") },
            None => SourceAuth::None,
        };
    };
    let token_url = auth.token_url.clone().unwrap_or_default();
    let client_id = auth.client_id.clone().unwrap_or_default();
    match auth.method {
        AuthMethod::BearerToken => SourceAuth::BearerToken { token_file: file("token") },
        AuthMethod::ClientSecret => SourceAuth::ClientSecret {
            token_url,
            client_id,
            client_secret_file: file("client-secret"),
            scope: auth.scope.clone(),
        },
        AuthMethod::PrivateKeyJwt => SourceAuth::PrivateKeyJwt {
            token_url,
            client_id,
            key_file: file("private-key.pem"),
            key_id: auth.key_id.clone(),
            algorithm: match auth.algorithm {
                Some(AssertionAlgorithm::ES384) => carerecord_config::AssertionAlgorithm::ES384,
                Some(AssertionAlgorithm::RS384) | None => carerecord_config::AssertionAlgorithm::RS384,
            },
            scope: auth.scope.clone(),
        },
        AuthMethod::MutualTls => SourceAuth::MutualTls { cert_file: file("tls.crt"), key_file: file("tls.key") },
    }
}

/// Where the connector's records come from, or why they cannot come.
fn source(ctx: &Ctx) -> Source {
    let spec = &ctx.connector.spec;
    let unavailable = |reason: &str| Source::Unavailable(Unavailable { reason: reason.to_string() });
    if let Some(reason) = &ctx.profile.unavailable {
        return unavailable(reason);
    }
    if spec.direction == Direction::Consume {
        return unavailable(
            "direction Consume (records into the provider's system) is not supported by this connector version",
        );
    }
    let schedule = effective_schedule(ctx.connector, ctx.profile);
    let listen = any_address(ctx.profile.port);
    match (ctx.profile.protocol, schedule.mode) {
        (Protocol::Hl7v2Mllp, _) => Source::Hl7v2Mllp(Mllp { listen, max_message_bytes: MLLP_MAX_MESSAGE_BYTES }),
        (Protocol::FhirR4, ScheduleMode::Push) => Source::Push(Push { listen }),
        // Notifications come through the record gateway's /inbound/<connector>
        // route; the interval is the safety-net catch-up.
        (Protocol::FhirR4, ScheduleMode::Subscription) => {
            Source::FhirPoll(fhir_source(ctx, &schedule, ChangeFeed::Subscription { listen }))
        }
        (Protocol::FhirR4, ScheduleMode::Poll) => {
            let changes = if ctx.profile.config["bulkExport"].as_bool() == Some(true) {
                ChangeFeed::BulkExport { level: ExportLevel::Patient, timeout_seconds: EXPORT_TIMEOUT_SECONDS }
            } else {
                ChangeFeed::Search
            };
            Source::FhirPoll(fhir_source(ctx, &schedule, changes))
        }
    }
}

/// A FHIR R4 source reading the connector's endpoint, finding changes as `changes` says.
fn fhir_source(ctx: &Ctx, schedule: &Schedule, changes: ChangeFeed) -> FhirPoll {
    let spec = &ctx.connector.spec;
    let mut resources = effective_resources(ctx.connector, ctx.profile);
    // Patients first, so that references to them resolve.
    resources.sort_by_key(|t| t != "Patient");
    FhirPoll {
        base_url: spec.endpoint.url.trim_end_matches('/').to_string(),
        resources,
        interval_seconds: schedule.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS).max(1) as u64,
        overlap_seconds: POLL_OVERLAP_SECONDS,
        page_size: ctx.profile.config["pageSize"].as_u64().map_or(100, |n| n.clamp(1, 1000) as u32),
        requests_per_second: POLL_REQUESTS_PER_SECOND,
        auth: source_auth(&spec.endpoint),
        ca_file: spec.endpoint.ca_config_map_ref.as_ref().map(|_| format!("{CONFIG_DIR}/ca/ca.crt")),
        changes,
    }
}

/// Between polls or exports when neither the spec nor the profile says, and
/// between a Subscription connector's safety-net catch-ups.
const DEFAULT_INTERVAL_SECONDS: i32 = 900;
/// Longest a Bulk Data export may take before it is abandoned and started again.
const EXPORT_TIMEOUT_SECONDS: u64 = 3600;

const MLLP_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Whether the provider sends to the connector: pushes and Subscription
/// notifications (and MLLP messages, which are Push).
fn receives(connector: &ProviderConnector, profile: &Profile) -> bool {
    matches!(effective_schedule(connector, profile).mode, ScheduleMode::Push | ScheduleMode::Subscription)
}

/// What the tenant's record gateway needs to forward `/inbound/<connector>`
/// pushes and Subscription notifications to this connector: only for a FHIR
/// connector of either schedule that is not Stopped.
pub fn inbound(connector: &ProviderConnector, profile: &Profile, namespace: &str) -> Option<InboundConnector> {
    (receives(connector, profile)
        && profile.protocol == Protocol::FhirR4
        && connector.spec.state != ConnectorState::Stopped)
        .then(|| {
            let name = connector.name_any();
            InboundConnector {
                upstream_url: format!("http://{name}.{namespace}.svc:{}", profile.port),
                name,
                provider_ods_code: connector.spec.provider.ods_code.clone(),
            }
        })
}

/// The connector's configuration: the `carerecord.dev/connector/v1` contract.
pub fn connector_config(
    connector: &ProviderConnector,
    profile: &Profile,
    tenant: &CareRecordTenant,
) -> ConnectorConfig {
    config_of(&Ctx::new(connector, profile, tenant))
}

fn config_of(ctx: &Ctx) -> ConnectorConfig {
    let spec = &ctx.connector.spec;
    ConnectorConfig {
        api_version: ConnectorApiVersion::V1,
        name: ctx.name.clone(),
        tenant: ctx.tenant_name.clone(),
        provider: ConnectorProvider { ods_code: spec.provider.ods_code.clone(), name: spec.provider.name.clone() },
        profile: ctx.profile.name.clone(),
        store_url: format!("http://{RECORD_STORE}.{}.svc:{RECORD_STORE_PORT}/fhir", ctx.namespace),
        admin_listen: any_address(CONNECTOR_ADMIN_PORT),
        source: source(ctx),
        security_rules: Vec::new(),
    }
}

fn config_map(ctx: &Ctx) -> ConfigMap {
    let text = serde_yaml::to_string(&config_of(ctx)).unwrap_or_default();
    ConfigMap {
        metadata: ctx.meta(&format!("{}-config", ctx.name), "connector"),
        data: Some(BTreeMap::from([("connector.yaml".to_string(), text)])),
        ..ConfigMap::default()
    }
}

fn deployment(ctx: &Ctx, hash: &str, image: String) -> Deployment {
    let spec = &ctx.connector.spec;
    let replicas = match spec.state {
        ConnectorState::Running => spec.replicas.unwrap_or(1),
        ConnectorState::Paused | ConnectorState::Stopped => 0,
    };
    let port = ctx.profile.port;
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: format!("{}-config", ctx.name), ..Default::default() }),
            ..Volume::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(Default::default()), ..Volume::default() },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
    ];
    if let Some(secret) = &spec.endpoint.credentials_secret_ref {
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.name.clone()), ..Default::default() }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if let Some(ca) = &spec.endpoint.ca_config_map_ref {
        volumes.push(Volume {
            name: "ca".into(),
            config_map: Some(ConfigMapVolumeSource { name: ca.name.clone(), ..Default::default() }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "ca".into(),
            mount_path: format!("{CONFIG_DIR}/ca"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let q = |s: &str| Quantity(s.into());
    let container = Container {
        name: "connector".into(),
        image: Some(image),
        args: Some(vec!["connector".into(), "--config".into(), format!("{CONFIG_DIR}/connector.yaml")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("inbound".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: CONNECTOR_ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("100m")),
                ("memory".to_string(), q("128Mi")),
                ("ephemeral-storage".to_string(), q("64Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("memory".to_string(), q("256Mi")),
                ("ephemeral-storage".to_string(), q("256Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(http_probe("/readyz", 10)),
        liveness_probe: Some(http_probe("/healthz", 20)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod_labels = ctx.pod_labels();
    Deployment {
        metadata: ctx.meta(&ctx.name, "connector"),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), hash.to_string())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod(CONNECTOR_UID)),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        ..Probe::default()
    }
}

fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta(&ctx.name, "connector"),
        spec: Some(ServiceSpec {
            selector: Some(ctx.pod_labels()),
            ports: Some(vec![ServicePort {
                name: Some("inbound".into()),
                port: ctx.profile.port,
                target_port: Some(IntOrString::String("inbound".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The provider endpoint's port, from its URL.
fn endpoint_port(url: &str) -> i32 {
    let default = if url.starts_with("mllp://") { 2575 } else { 443 };
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(default)
}

fn network_policy(ctx: &Ctx, settings: &PlatformSettings) -> NetworkPolicy {
    use crate::render::tenant::network::{namespace, pods, tcp};
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(labels::CONNECTOR.to_string(), ctx.name.clone())])),
        ..LabelSelector::default()
    };
    // The operator reads the connector's /status on the admin port.
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![namespace(&settings.operator_namespace)]),
        ports: Some(vec![tcp(CONNECTOR_ADMIN_PORT)]),
    }];
    if ctx.receives() {
        // HTTP pushes and notifications arrive only through the tenant's record gateway; MLLP
        // senders connect from outside the platform through a load balancer.
        let from = match ctx.profile.protocol {
            Protocol::Hl7v2Mllp => None,
            _ => Some(vec![pods(crate::render::tenant::record_gateway::RECORD_GATEWAY)]),
        };
        ingress.push(NetworkPolicyIngressRule { from, ports: Some(vec![tcp(ctx.profile.port)]) });
    }
    let record_store = pods(RECORD_STORE);
    let types = vec!["Ingress".to_string(), "Egress".to_string()];
    NetworkPolicy {
        metadata: ctx.meta(&format!("connector-{}", ctx.name), "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(types),
            ingress: Some(ingress),
            egress: Some(vec![
                NetworkPolicyEgressRule { to: Some(vec![record_store]), ports: Some(vec![tcp(RECORD_STORE_PORT)]) },
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(vec![tcp(endpoint_port(&ctx.connector.spec.endpoint.url))]),
                },
            ]),
        }),
    }
}

fn inbound_route(ctx: &Ctx, settings: &PlatformSettings) -> HttpRoute {
    HttpRoute {
        metadata: ctx.meta(&format!("{}-inbound", ctx.name), "gateway"),
        spec: HttpRouteSpec {
            hostnames: Some(vec![ctx.tenant.spec.gateway.hostname.clone()]),
            parent_refs: Some(vec![crate::render::gateway::parent_ref(ctx.tenant, settings)]),
            rules: Some(vec![HttpRouteRules {
                matches: Some(vec![HttpRouteRulesMatches {
                    path: Some(HttpRouteRulesMatchesPath {
                        r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                        value: Some(format!("/inbound/{}", ctx.name)),
                    }),
                    ..HttpRouteRulesMatches::default()
                }]),
                // Pushes pass the tenant's record gateway, which authenticates
                // the provider before anything reaches the connector.
                backend_refs: Some(vec![crate::render::gateway::service_backend(
                    crate::render::tenant::record_gateway::RECORD_GATEWAY,
                    crate::render::tenant::record_gateway::RECORD_GATEWAY_PORT,
                )]),
                ..HttpRouteRules::default()
            }]),
        },
        status: None,
    }
}
