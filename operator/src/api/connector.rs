//! `ProviderConnector`: one provider's system connected to its ICS's record store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::conditions_schema;

/// One care provider's clinical system (EMIS Web, SystmOne, Oracle Health,
/// Epic, Rio, ...) connected to its ICS's shared care record, deployed from
/// the connector catalogue and probed for reachability.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "carerecord.dev",
    version = "v1alpha1",
    kind = "ProviderConnector",
    plural = "providerconnectors",
    namespaced,
    shortname = "conn",
    category = "carerecord",
    status = "ProviderConnectorStatus",
    doc = "One care provider's clinical system connected to its ICS's shared care record. Lives in the tenant's namespace.",
    cel,
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.name"),
    printcolumn(name = "System", type_ = "string", json_path = ".spec.system"),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state"),
    printcolumn(name = "Reachable", type_ = "boolean", json_path = ".status.endpoint.reachable"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.sync.lastSuccessfulSync"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 50").message("a connector name must be at most 50 characters"),
)]
#[x_kube(
    validation = Rule::new("self.system == 'hl7v2-mllp' ? self.endpoint.url.startsWith('mllp://') : self.endpoint.url.startsWith('https://')")
        .message("endpoint.url must start with https:// (or mllp:// for the hl7v2-mllp system)"),
    validation = Rule::new("!has(self.schedule) || !has(self.schedule.intervalSeconds) || self.schedule.mode == 'Poll'")
        .message("schedule.intervalSeconds only applies when schedule.mode is Poll"),
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConnectorSpec {
    /// The care provider whose system this is.
    pub provider: Provider,

    /// The connector profile from the catalogue, e.g. emis-web, systmone,
    /// oracle-health-millennium, epic, rio, liquidlogic-las, mosaic,
    /// gp-connect, generic-fhir-r4 or hl7v2-mllp (`ics-operator catalogue`
    /// lists them).
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("system must be a catalogue profile name such as emis-web"))]
    pub system: String,

    /// Which way records flow: Contribute (the provider's records into the
    /// shared record), Consume (the shared record into the provider's
    /// system) or Both. Defaults to Contribute.
    #[serde(default)]
    pub direction: Direction,

    /// The provider system's endpoint.
    pub endpoint: Endpoint,

    /// FHIR R4 resource types exchanged. Defaults to the profile's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new(super::fhir::resource_types_rule()).message("resources must be FHIR R4 resource types, e.g. Patient, AllergyIntolerance, MedicationStatement"))]
    pub resources: Vec<String>,

    /// How records are exchanged. Defaults to the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Connector replicas while Running (0 to 5). Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 5").message("replicas must be between 0 and 5"))]
    pub replicas: Option<i32>,

    /// Running (the default), Paused (scaled to zero, everything else kept)
    /// or Stopped (scaled to zero, inbound route removed, no endpoint probe).
    /// A spec field, so GitOps owns it: no imperative annotations.
    #[serde(default)]
    pub state: ConnectorState,

    /// Connector image, overriding the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && !self.contains(' ')").message("image must be a container image reference without spaces"))]
    pub image: Option<String>,
}

/// A care provider, identified by its ODS code.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// ODS code of the provider organisation (1 to 9 upper-case letters or
    /// digits, e.g. G3472185 for a GP practice, R0A for a trust).
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Z0-9]{1,9}$')").message("provider.odsCode must be 1 to 9 upper-case letters or digits, e.g. R0A"))]
    pub ods_code: String,
    /// Name of the provider, e.g. "Manchester University NHS Foundation Trust".
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 200").message("provider.name must be 1 to 200 characters"))]
    pub name: String,
    /// Kind of provider.
    pub kind: ProviderKind,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    GPPractice,
    AcuteTrust,
    MentalHealthTrust,
    CommunityProvider,
    SocialCare,
    CommunityPharmacy,
    Hospice,
    Ambulance,
    Other,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Contribute,
    Consume,
    Both,
}

/// Where the provider system listens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Base URL: https://... for FHIR and GP Connect systems, mllp://host:port
    /// for HL7v2 over MLLP.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https|mllp)://[^/?#\\\\s]+')").message("endpoint.url must be an absolute https:// or mllp:// URL"))]
    pub url: String,
    /// Secret in this namespace with the credentials the connector (and the
    /// probe) use, by `auth.method`: `token` (BearerToken, the default when
    /// `auth` is absent), `client-secret` (ClientSecret), `private-key.pem`
    /// (PrivateKeyJwt), `tls.crt` and `tls.key` (MutualTls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// How the connector authenticates to the provider's system (FHIR
    /// sources). Absent: a bearer token from the credentials Secret, or none
    /// without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EndpointAuth>,
    /// ConfigMap in this namespace with a `ca.crt` that signs the endpoint's
    /// certificate, when it is not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<SecretRef>,
}

/// How a connector authenticates to a provider's system; the secret parts
/// come from the credentials Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.method in ['BearerToken', 'MutualTls'] || (has(self.tokenUrl) && has(self.clientId))").message("auth.tokenUrl and auth.clientId are required for ClientSecret and PrivateKeyJwt"))]
pub struct EndpointAuth {
    /// BearerToken, ClientSecret (OAuth 2.0 client credentials), PrivateKeyJwt
    /// (SMART Backend Services) or MutualTls.
    pub method: AuthMethod,
    /// Token endpoint (ClientSecret, PrivateKeyJwt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("auth.tokenUrl must be an https:// URL"))]
    pub token_url: Option<String>,
    /// Client id registered with the provider (ClientSecret, PrivateKeyJwt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub client_id: Option<String>,
    /// Scopes asked for, space-separated, e.g. `system/*.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub scope: Option<String>,
    /// Signing algorithm of the client assertion (PrivateKeyJwt): RS384 (the
    /// default) or ES384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AssertionAlgorithm>,
    /// `kid` of the key registered with the provider (PrivateKeyJwt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub key_id: Option<String>,
}

/// Ways to authenticate to a provider's system.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    BearerToken,
    ClientSecret,
    PrivateKeyJwt,
    MutualTls,
}

/// Client assertion signing algorithms SMART Backend Services names.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    RS384,
    ES384,
}

/// A reference to an object in the connector's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of the object.
    pub name: String,
}

/// How records are exchanged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Poll (fetch changes every intervalSeconds), Push (the provider sends
    /// to /inbound/<connector> on the tenant host) or Subscription (FHIR
    /// subscriptions).
    pub mode: ScheduleMode,
    /// Seconds between polls (60 to 86400). Poll only; defaults to the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 86400").message("schedule.intervalSeconds must be between 60 and 86400"))]
    pub interval_seconds: Option<i32>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleMode {
    Poll,
    Push,
    Subscription,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectorState {
    #[default]
    Running,
    Paused,
    Stopped,
}

impl ConnectorState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Paused => "Paused",
            Self::Stopped => "Stopped",
        }
    }
}

/// Observed state of a connector. Written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConnectorStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: Configured, Deployed, EndpointReachable, Synced and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The tenant this connector belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Result of the last endpoint probe that changed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// What the connector itself last reported (its `/status`), read by the
    /// operator. Kept while the connector is Paused or Stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// What a running connector reports about the records it moves. Counters
/// run from the connector's last start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the last sync (a whole poll, or a message) was committed to the
    /// record store. Refreshed when anything else here changes, else at
    /// most every five minutes, so a steady connector causes few writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<Time>,
    /// Per resource type, the newest `lastUpdated` committed (poll sources).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cursor: std::collections::BTreeMap<String, Time>,
    /// Records the store accepted.
    #[serde(default)]
    pub records_written: u64,
    /// Records skipped because that version was already written.
    #[serde(default)]
    pub records_unchanged: u64,
    /// Failed attempts.
    #[serde(default)]
    pub errors: u64,
    /// Records the store refused, each kept in the store as a dead letter.
    #[serde(default)]
    pub dead_letters: u64,
    /// Why the last attempt failed, while it is the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What the endpoint probe found.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Whether the endpoint answered as its protocol expects.
    pub reachable: bool,
    /// FHIR version from the CapabilityStatement, e.g. 4.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_version: Option<String>,
    /// software.name from the CapabilityStatement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// Round trip of the probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// When this result was recorded. Re-probes that find the same answer
    /// refresh it at most hourly, so a steady connector causes no writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked: Option<Time>,
}
