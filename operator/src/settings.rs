//! Platform settings: how this platform is wired (Gateway, images, RBAC
//! names). Read once at start from a YAML file (the Helm chart writes it from
//! values) and passed to `render`, so previews and the controller agree.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings that apply to every tenant on this platform.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PlatformSettings {
    /// The platform Gateway that tenant routes attach to.
    pub gateway: GatewaySettings,
    /// Ingress used when the Gateway API is not served by the cluster.
    pub ingress: IngressSettings,
    /// Default container images.
    pub images: Images,
    /// ClusterRole bound to each tenant's admins in the tenant namespace.
    pub tenant_admin_cluster_role: String,
    /// Namespace where the CloudNativePG operator runs; its pods may reach
    /// database pods.
    pub cloud_native_pg_namespace: String,
    /// Namespace of the cluster DNS service; tenant pods may reach it on port 53.
    pub dns_namespace: String,
    /// How provider endpoints are probed.
    pub probe: ProbeSettings,
    /// How the operator reads each running connector's own `/status`.
    pub connector_status: ConnectorStatusSettings,
    /// Extra connector profiles, from a ConfigMap (key `profiles.yaml`).
    pub catalogue: Option<ConfigMapRef>,
    /// The operator's own namespace (the chart sets it); never a tenant's.
    pub operator_namespace: String,
    /// More namespaces no tenant may take, besides `kube-*`, `default` and
    /// the platform's own (the operator's, the Gateway's, DNS,
    /// CloudNativePG's and the ingress controller's).
    pub reserved_namespaces: Vec<String>,
    /// Which images a ProviderConnector's `spec.image` may name.
    pub connector_images: ConnectorImages,
    /// Issuers of the bearer tokens every tenant's record gateway accepts
    /// (e.g. NHS CIS2 for staff, the platform's SMART Backend Services
    /// server for systems). None: the gateways refuse every request.
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// An OpenID Connect issuer whose access tokens the record gateways accept:
/// the gateway contract's own type, so settings and the rendered gateway
/// configuration cannot drift apart. Fields: `issuer` (exactly as in tokens'
/// `iss`), `audience` (tokens must name it in `aud`), `organisationClaim`
/// (the claim carrying the caller's ODS code, default `ods`), `jwksUri`
/// (optional; else from OIDC discovery).
pub type TrustedIssuer = carerecord_config::Issuer;

/// Images a ProviderConnector may run in place of its profile's.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ConnectorImages {
    /// Registry or repository prefixes, e.g. "ghcr.io/carerecord/" (ending
    /// in "/": anything under it) or "registry.example/connector" (that
    /// repository, any tag or digest). An image override outside them is
    /// refused: a connector runs with access to the tenant's record store.
    /// Empty allows none.
    pub allowed_registries: Vec<String>,
}

impl Default for ConnectorImages {
    fn default() -> Self {
        Self { allowed_registries: vec!["ghcr.io/carerecord/".into()] }
    }
}

impl ConnectorImages {
    /// Whether `image` comes from an allowed registry. A prefix matches only
    /// at a path boundary, so "ghcr.io/carerecord" does not admit
    /// "ghcr.io/carerecord-evil/x".
    pub fn allows(&self, image: &str) -> bool {
        self.allowed_registries.iter().any(|prefix| {
            if prefix.ends_with('/') {
                image.starts_with(prefix.as_str())
            } else {
                !prefix.is_empty()
                    && image
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@'))
            }
        })
    }
}

impl PlatformSettings {
    /// Why `namespace` may not belong to a tenant, if it may not.
    pub fn reserved_namespace(&self, namespace: &str) -> Option<String> {
        if namespace == "default" || namespace.starts_with("kube-") {
            return Some(format!("{namespace} is a Kubernetes system namespace"));
        }
        let platform = [
            (self.operator_namespace.as_str(), "the operator's namespace"),
            (self.gateway.namespace.as_str(), "the platform Gateway's namespace"),
            (self.dns_namespace.as_str(), "the cluster DNS namespace"),
            (self.cloud_native_pg_namespace.as_str(), "the CloudNativePG operator's namespace"),
            (self.ingress.controller_namespace.as_str(), "the ingress controller's namespace"),
        ];
        if let Some((_, what)) = platform.iter().find(|(ns, _)| *ns == namespace) {
            return Some(format!("{namespace} is {what}"));
        }
        self.reserved_namespaces
            .iter()
            .any(|r| r == namespace)
            .then(|| format!("{namespace} is reserved by the platform settings (reservedNamespaces)"))
    }
}

/// Probing of provider endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProbeSettings {
    /// Networks (CIDRs) that may be probed although they are private,
    /// loopback or link-local, e.g. a trust's private network over a VPN.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// Limit for one probe, in seconds.
    pub timeout_seconds: u64,
    /// Seconds between probes of one endpoint. Stretched when there are
    /// more endpoints than `maxPerSecond` can probe in one interval.
    pub interval_seconds: u64,
    /// Probes running at once, across all connectors.
    pub max_concurrent: usize,
    /// Probes started per second, across all connectors.
    pub max_per_second: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            allowed_cidrs: Vec::new(),
            timeout_seconds: 5,
            interval_seconds: 300,
            max_concurrent: 4,
            max_per_second: 10,
        }
    }
}

/// Reading connectors' `/status` (their pods' admin port) into
/// `status.sync`. A read that finds nothing new writes nothing.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ConnectorStatusSettings {
    /// Seconds between reads of one connector's status.
    pub interval_seconds: u64,
    /// Limit for one read, in seconds.
    pub timeout_seconds: u64,
    /// Reads running at once, across all connectors.
    pub max_concurrent: usize,
}

impl Default for ConnectorStatusSettings {
    fn default() -> Self {
        Self { interval_seconds: 30, timeout_seconds: 2, max_concurrent: 16 }
    }
}

/// A ConfigMap by namespace and name.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

impl Default for PlatformSettings {
    fn default() -> Self {
        Self {
            gateway: GatewaySettings::default(),
            ingress: IngressSettings::default(),
            images: Images::default(),
            tenant_admin_cluster_role: "carerecord-tenant-admin".into(),
            cloud_native_pg_namespace: "cnpg-system".into(),
            dns_namespace: "kube-system".into(),
            probe: ProbeSettings::default(),
            connector_status: ConnectorStatusSettings::default(),
            catalogue: None,
            operator_namespace: "ics-system".into(),
            reserved_namespaces: Vec::new(),
            connector_images: ConnectorImages::default(),
            trusted_issuers: Vec::new(),
        }
    }
}

/// The Gateway that HTTPRoutes attach to.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace; also where gateway pods run, so the record store
    /// admits traffic from it.
    pub namespace: String,
    /// Listener name, e.g. "https"; empty attaches to every listener.
    pub section_name: Option<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { name: "platform".into(), namespace: "gateway-system".into(), section_name: Some("https".into()) }
    }
}

/// Ingress fallback for clusters without the Gateway API.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct IngressSettings {
    /// When true and the Gateway API is not served, publish tenants with an Ingress.
    pub enabled: bool,
    /// IngressClass to use; empty uses the cluster default.
    pub class_name: Option<String>,
    /// Namespace of the ingress controller's pods, admitted to the record store.
    pub controller_namespace: String,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self { enabled: true, class_name: None, controller_namespace: "ingress-nginx".into() }
    }
}

/// Default images.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Images {
    /// FHIR record store (HAPI FHIR JPA server).
    pub record_store: String,
    /// Postgres for StatefulSet databases.
    pub postgres: String,
    /// Postgres operand image for CloudNativePG clusters.
    pub cloud_native_pg: String,
    /// The record gateway: the operator's own image, so every tenant's data
    /// plane runs the operator's version. Unset, it is the image the
    /// operator runs as (the chart passes it in `ICS_OPERATOR_IMAGE`; see
    /// [`PlatformSettings::load`]), else this version's published image.
    pub record_gateway: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            record_store: "hapiproject/hapi:v8.8.0-1".into(),
            postgres: "postgres:17.6".into(),
            cloud_native_pg: "ghcr.io/cloudnative-pg/postgresql:17.6".into(),
            record_gateway: format!("ghcr.io/carerecord/ics-operator:{}", crate::VERSION),
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid settings in {path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
}

/// The environment variable in which the chart passes the operator its own
/// image reference (`repository:tag` or `repository@sha256:...`), exactly as
/// its Deployment runs it. Read by the binary, never by the library.
pub const OPERATOR_IMAGE_ENV: &str = "ICS_OPERATOR_IMAGE";

impl PlatformSettings {
    /// Loads settings from a YAML file; unknown keys are an error so a typo
    /// does not silently fall back to a default.
    pub fn from_file(path: &str) -> Result<Self, SettingsError> {
        Self::load(Some(path), None)
    }

    /// The settings the operator runs with: the file's (defaults without
    /// one), with `operator_image` (the value of [`OPERATOR_IMAGE_ENV`], if
    /// set) as the record gateway's image unless the file names one.
    pub fn load(path: Option<&str>, operator_image: Option<String>) -> Result<Self, SettingsError> {
        let text = match path {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?
            }
            None => String::new(),
        };
        Self::from_yaml_with_operator_image(&text, operator_image)
            .map_err(|source| SettingsError::Parse { path: path.unwrap_or("(defaults)").into(), source })
    }

    /// [`PlatformSettings::from_yaml`], then the operator's own image for
    /// `images.recordGateway` where the text does not set it; an empty image
    /// counts as none.
    pub fn from_yaml_with_operator_image(
        text: &str,
        operator_image: Option<String>,
    ) -> Result<Self, serde_yaml::Error> {
        let mut settings = Self::from_yaml(text)?;
        let named = |text: &str| {
            serde_yaml::from_str::<serde_yaml::Value>(text)
                .ok()
                .is_some_and(|v| v.get("images").and_then(|i| i.get("recordGateway")).is_some())
        };
        if let Some(image) = operator_image.filter(|i| !i.trim().is_empty())
            && !named(text)
        {
            settings.images.record_gateway = image;
        }
        Ok(settings)
    }

    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(PlatformSettings::from_yaml("").unwrap(), PlatformSettings::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let s = PlatformSettings::from_yaml("gateway:\n  name: shared\n").unwrap();
        assert_eq!(s.gateway.name, "shared");
        assert_eq!(s.gateway.namespace, "gateway-system");
    }

    #[test]
    fn platform_and_system_namespaces_are_reserved() {
        let s = PlatformSettings { reserved_namespaces: vec!["monitoring".into()], ..PlatformSettings::default() };
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "ics-system",
            "gateway-system",
            "cnpg-system",
            "ingress-nginx",
            "monitoring",
        ] {
            assert!(s.reserved_namespace(ns).is_some(), "{ns}");
        }
        assert_eq!(s.reserved_namespace("scr-cheshire-merseyside"), None);
    }

    #[test]
    fn connector_images_match_only_at_a_path_boundary() {
        let images = ConnectorImages::default();
        assert!(images.allows("ghcr.io/carerecord/ics-operator:0.1.0"));
        assert!(!images.allows("ghcr.io/carerecord-evil/miner:1"));
        assert!(!images.allows("evil.example/miner:1"));
        assert!(!ConnectorImages { allowed_registries: vec![] }.allows("ghcr.io/carerecord/x:1"));
    }

    #[test]
    fn the_operator_image_is_the_record_gateway_default_unless_the_file_names_one() {
        let deployed = Some("registry.example/ics-operator@sha256:abc".to_string());
        let s =
            PlatformSettings::from_yaml_with_operator_image("gateway:\n  name: shared\n", deployed.clone()).unwrap();
        assert_eq!(s.images.record_gateway, "registry.example/ics-operator@sha256:abc");
        assert_eq!(s.images.postgres, Images::default().postgres);
        let s = PlatformSettings::from_yaml_with_operator_image("", deployed.clone()).unwrap();
        assert_eq!(s.images.record_gateway, "registry.example/ics-operator@sha256:abc");
        let s = PlatformSettings::from_yaml_with_operator_image(
            "images:\n  recordGateway: mirror.example/gw:1\n",
            deployed,
        )
        .unwrap();
        assert_eq!(s.images.record_gateway, "mirror.example/gw:1");
        for unset in [None, Some(String::new())] {
            let s = PlatformSettings::from_yaml_with_operator_image("", unset).unwrap();
            assert_eq!(s.images.record_gateway, format!("ghcr.io/carerecord/ics-operator:{}", crate::VERSION));
        }
        assert!(PlatformSettings::from_yaml_with_operator_image("gatway: {}\n", Some("x".into())).is_err());
    }

    /// One version everywhere: the chart's appVersion is the workspace's,
    /// which is what `ics-operator version` prints and the default image tag.
    #[test]
    fn chart_app_version_is_the_workspace_version() {
        let chart = include_str!("../../charts/ics-operator/Chart.yaml");
        let chart: serde_yaml::Value = serde_yaml::from_str(chart).unwrap();
        assert_eq!(chart["appVersion"].as_str(), Some(crate::VERSION), "charts/ics-operator/Chart.yaml appVersion");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = PlatformSettings::from_yaml("gatway: {}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `gatway`"), "{err}");
    }
}
