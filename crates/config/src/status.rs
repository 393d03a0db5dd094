//! What a connector reports about itself at `/status` on its admin port,
//! read by the operator into the ProviderConnector's `status.sync`, as
//! CloudNativePG's operator reads its instance manager.
//!
//! The writer is a connector of the same image as the operator, but during a
//! rolling upgrade the two can be a version apart, so the reader tolerates
//! fields it does not know (unlike the configuration documents, which are
//! strict): a new field is an additive change within `v1`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::version::ConnectorStatusApiVersion;

/// The `/status` document of a connector.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// Version of this document: `carerecord.dev/connector-status/v1`.
    pub api_version: ConnectorStatusApiVersion,
    /// Name of the ProviderConnector whose configuration the connector runs,
    /// so a reader can tell it asked the right process.
    pub connector: String,
    /// What kind of source it runs.
    pub source: SourceKind,
    /// When the last sync (a whole poll, or a message) was committed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<String>,
    /// When the last attempt ended, successful or not (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    /// Per resource type, the newest `lastUpdated` committed (poll sources, RFC 3339).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cursor: BTreeMap<String, String>,
    /// Records the store accepted since the connector started.
    #[serde(default)]
    pub records_written: u64,
    /// Records skipped because that version was already written.
    #[serde(default)]
    pub records_unchanged: u64,
    /// Failed attempts since the connector started.
    #[serde(default)]
    pub errors: u64,
    /// Why the last attempt failed, when it did. Names no credential: the
    /// connector reports what failed, never what it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Records the store refused since the connector started (each kept in
    /// the store as a dead letter).
    #[serde(default)]
    pub dead_letters: u64,
    /// The latest of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_dead_letters: Vec<DeadLetterSummary>,
    /// Times the provider answered 429 or 503 and was waited for.
    #[serde(default)]
    pub throttled: u64,
    /// Why the source cannot run here, for an `Unavailable` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The kind of source a connector runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// Polls a FHIR R4 server.
    #[default]
    FhirPoll,
    /// Listens for HL7 v2 messages over MLLP.
    Hl7v2Mllp,
    /// Takes Bundles the provider pushes through the record gateway.
    Push,
    /// Cannot run here (the reason is in `unavailable`).
    Unavailable,
}

/// A record the store refused, as `/status` lists it (the record itself
/// stays in the store, never in the status).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSummary {
    /// `<type>/<id>` in the provider's system.
    pub source_ref: String,
    /// Its version there, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// What the store said.
    pub reason: String,
    /// When it was set aside (RFC 3339).
    pub at: String,
}
