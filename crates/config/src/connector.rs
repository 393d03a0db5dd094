//! A connector's configuration: one per ProviderConnector, rendered by the
//! operator into the connector's ConfigMap and read by `ics-operator
//! connector`. Secrets are never in it: it names files, mounted from the
//! connector's credentials Secret.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::SensitiveCategory;
use crate::version::ConnectorApiVersion;

/// Configuration of one connector.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Version of this document: `carerecord.dev/connector/v1`.
    pub api_version: ConnectorApiVersion,
    /// Name of the ProviderConnector; `meta.source` of every record it writes
    /// is `<sourceBase>/<tenant>/<name>`.
    pub name: String,
    /// The CareRecordTenant whose record store it writes.
    pub tenant: String,
    /// The care provider whose records it brings.
    pub provider: ConnectorProvider,
    /// The catalogue profile it was rendered from.
    pub profile: String,
    /// FHIR base URL of the tenant's record store.
    pub store_url: String,
    /// Address serving `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub admin_listen: SocketAddr,
    /// Where records come from.
    pub source: Source,
    /// Security labels written on records, so the record gateway can withhold
    /// them from agreements that exclude their category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_rules: Vec<SecurityRule>,
}

/// A care provider, by its ODS code.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorProvider {
    /// ODS code; every record written is tagged with it.
    pub ods_code: String,
    /// Name of the provider organisation.
    pub name: String,
}

/// Where a connector's records come from.
// Read once at start and rendered once per reconcile: boxing the large
// variant would save nothing that matters and make every construction noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Source {
    /// Poll a FHIR R4 server for what changed since the last poll.
    FhirPoll(FhirPoll),
    /// Listen for HL7 v2 messages over MLLP.
    Hl7v2Mllp(Mllp),
    /// Take transaction or batch Bundles the provider pushes to
    /// `/inbound/<connector>` on the tenant host (through the record gateway,
    /// which authenticates the provider).
    Push(Push),
    /// The profile's source cannot run on this platform (for example GP
    /// Connect, which needs the NHS Spine); the connector reports why and
    /// moves nothing.
    Unavailable(Unavailable),
}

/// Incremental reads of a provider's FHIR R4 server: by `_lastUpdated`
/// searches, by Bulk Data `$export`, or on its Subscription notifications
/// (`changes`); the rest (interval, auth, rate limit) is common to all three.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FhirPoll {
    /// FHIR base URL of the provider's system.
    pub base_url: String,
    /// Resource types to poll, in order (Patient first, so references resolve).
    pub resources: Vec<String>,
    /// Seconds between the end of one poll and the start of the next.
    #[schemars(range(min = 1))]
    pub interval_seconds: u64,
    /// Each poll asks for changes since the last cursor minus this many seconds:
    /// servers commit late and share timestamps, so a window that only moved
    /// forward would skip records. What the overlap fetches again is dropped
    /// by `versionId`, and writes are idempotent anyway.
    #[serde(default = "default_overlap_seconds")]
    pub overlap_seconds: u64,
    /// `_count` asked for per page.
    #[serde(default = "default_page_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub page_size: u32,
    /// Most requests a second to the provider's system.
    #[serde(default = "default_requests_per_second")]
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// How the connector authenticates to the provider's system.
    #[serde(default)]
    pub auth: SourceAuth,
    /// PEM file of the CA that signs the provider's certificate, when it is not
    /// publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// How the connector learns what changed; absent: `_lastUpdated` searches.
    #[serde(default, skip_serializing_if = "ChangeFeed::is_search")]
    pub changes: ChangeFeed,
}

/// How a FHIR source's changes are found. Every mode writes through the same
/// idempotent path and keeps its cursor in the store.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(tag = "mode", deny_unknown_fields)]
pub enum ChangeFeed {
    /// Every `intervalSeconds`, per type, `_lastUpdated=ge<cursor - overlap>`
    /// searches, sorted and paged.
    #[default]
    Search,
    /// Every `intervalSeconds`, a Bulk Data (v2) `$export` with `_type` = the
    /// resources and `_since` = the `transactionTime` of the last export that
    /// was wholly committed (none the first time: everything).
    #[serde(rename_all = "camelCase")]
    BulkExport {
        /// Which export to kick off.
        #[serde(default)]
        level: ExportLevel,
        /// Longest a single export may take, kick-off to the last file
        /// written; past it the export is abandoned (and deleted) and the next
        /// interval starts a new one from the same `_since`.
        #[serde(default = "default_export_timeout_seconds")]
        #[schemars(range(min = 1))]
        timeout_seconds: u64,
    },
    /// The provider's FHIR R4 Subscription (channel `rest-hook`, payload empty
    /// or id-only) notifies the connector, through the record gateway's
    /// `/inbound/<connector>` route; each notification starts an incremental
    /// read (empty payload) or a read of the resources it names (id-only). A
    /// `_lastUpdated` search also runs at start and every `intervalSeconds`, so
    /// a notification missed while the connector was down is caught up.
    #[serde(rename_all = "camelCase")]
    Subscription {
        /// Address the notification listener binds (`host:port`); the record
        /// gateway forwards `/inbound/<connector>` here.
        listen: SocketAddr,
    },
}

impl ChangeFeed {
    /// Whether this is the default, `_lastUpdated` searches.
    pub fn is_search(&self) -> bool {
        *self == ChangeFeed::Search
    }
}

/// The Bulk Data export a connector kicks off.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportLevel {
    /// `GET [base]/Patient/$export`: every patient's compartment.
    #[default]
    Patient,
    /// `GET [base]/$export`: the whole server, for the exported types.
    System,
}

fn default_export_timeout_seconds() -> u64 {
    3600
}

fn default_overlap_seconds() -> u64 {
    300
}

fn default_page_size() -> u32 {
    100
}

fn default_requests_per_second() -> u32 {
    10
}

/// How a connector authenticates to a provider's system. Secrets are files,
/// mounted from the connector's credentials Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(tag = "method", deny_unknown_fields)]
pub enum SourceAuth {
    /// No authentication (a system reached over a private network only).
    #[default]
    None,
    /// A static bearer token read from a file.
    #[serde(rename_all = "camelCase")]
    BearerToken {
        /// File holding the token.
        token_file: String,
    },
    /// OAuth 2.0 `client_credentials` with a client secret.
    #[serde(rename_all = "camelCase")]
    ClientSecret {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// File holding the client secret.
        client_secret_file: String,
        /// Scopes asked for, space-separated (e.g. `system/*.rs`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// SMART Backend Services: `client_credentials` with a `private_key_jwt`
    /// client assertion signed with RS384 or ES384.
    #[serde(rename_all = "camelCase")]
    PrivateKeyJwt {
        /// Token endpoint (also the assertion's audience).
        token_url: String,
        /// Client id (the assertion's `iss` and `sub`).
        client_id: String,
        /// PEM file holding the private key.
        key_file: String,
        /// `kid` of the key, as registered with the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
        /// Signing algorithm.
        algorithm: AssertionAlgorithm,
        /// Scopes asked for, space-separated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// Mutual TLS with a client certificate.
    #[serde(rename_all = "camelCase")]
    MutualTls {
        /// PEM file holding the client certificate chain.
        cert_file: String,
        /// PEM file holding its private key.
        key_file: String,
    },
}

/// Algorithms SMART Backend Services requires servers to support.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// ECDSA P-384 with SHA-384.
    ES384,
}

/// HL7 v2 over MLLP.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mllp {
    /// Address the MLLP listener binds (`host:port`).
    pub listen: SocketAddr,
    /// Largest message accepted, in bytes; a larger frame closes the connection.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 1024))]
    pub max_message_bytes: usize,
}

fn default_max_message_bytes() -> usize {
    1024 * 1024
}

/// Bundles pushed by the provider.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Push {
    /// Address the push listener binds (`host:port`); the record gateway
    /// forwards `/inbound/<connector>` here.
    pub listen: SocketAddr,
}

/// A source that cannot run here, and why.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Unavailable {
    /// Why, for the connector's status and the ProviderConnector's condition.
    pub reason: String,
}

/// Records matching a rule get the labels of its categories.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityRule {
    /// Resource types the rule applies to; empty: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_types: Vec<String>,
    /// Categories whose labels are written.
    pub categories: Vec<SensitiveCategory>,
}
