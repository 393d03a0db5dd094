//! The record gateway's configuration: one per tenant.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::version::GatewayApiVersion;

/// Configuration of one tenant's record gateway, rendered by the operator
/// into the gateway's ConfigMap.
///
/// A running gateway rereads this file when it changes and takes up who may
/// act for the tenant (`tenant.organisations`) and the push connectors
/// (`inboundConnectors`), so that a provider joining the tenant restarts
/// nothing. Every other field is read at start-up (see
/// [`GatewayConfig::start_up_part`]).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Version of this document: `carerecord.dev/gateway/v1`.
    pub api_version: GatewayApiVersion,
    /// The tenant this gateway stands in front of.
    pub tenant: Tenant,
    /// Public base URL of the tenant host (e.g. `https://cheshire.scr.example.nhs.uk`),
    /// without a trailing slash. Paging links and `fullUrl`s returned to callers are
    /// rewritten under it.
    pub public_base_url: String,
    /// FHIR base URL of the tenant's record store (e.g. `http://record-store:8080/fhir`).
    /// Only the gateway and the tenant's connectors can reach it.
    pub upstream_url: String,
    /// Address the public FHIR listener binds (`host:port`, an IP literal).
    pub listen: SocketAddr,
    /// Address serving `/healthz`, `/readyz` and `/metrics` (`host:port`).
    pub admin_listen: SocketAddr,
    /// OAuth 2.0 / OpenID Connect issuers whose bearer tokens are accepted. At least one.
    pub issuers: Vec<Issuer>,
    /// Audit trail settings.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Path of the sharing policy file (a `SharingPolicy` document), reloaded when it
    /// changes. Absent: no agreements, so every federation request is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<String>,
    /// Push connectors served at `/inbound/<name>`. Reloaded while running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_connectors: Vec<InboundConnector>,
}

impl GatewayConfig {
    /// The configuration without what a running gateway reloads
    /// (`tenant.organisations`, `inboundConnectors`): the part that takes a
    /// restart to change. The operator hashes it onto the gateway's pod
    /// template.
    pub fn start_up_part(&self) -> Self {
        let mut part = self.clone();
        part.tenant.organisations.clear();
        part.inbound_connectors.clear();
        part
    }
}

/// The tenant (an Integrated Care System) and the organisations acting for it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// Name of the CareRecordTenant.
    pub name: String,
    /// ODS codes allowed to act for the tenant on its own `/fhir`: the tenant's ICB
    /// code and the ODS codes of its providers. Reloaded while running.
    pub organisations: Vec<String>,
}

/// An issuer of bearer tokens the platform trusts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Issuer {
    /// Issuer identifier, compared exactly with a token's `iss` claim; its OpenID
    /// Connect discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Audience a token must name in its `aud` claim to be accepted here.
    pub audience: String,
    /// Name of the token claim carrying the caller's organisation (an ODS code).
    #[serde(default = "default_organisation_claim")]
    pub organisation_claim: String,
    /// JWKS URI to use instead of the one named by OpenID Connect discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

fn default_organisation_claim() -> String {
    "ods".to_string()
}

/// How the audit trail is written.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSettings {
    /// Audit events held in memory while the record store is slow or down; when
    /// full, requests wait (federation requests only up to `flushBoundMs`).
    #[serde(default = "default_buffer_size")]
    #[schemars(range(min = 1))]
    pub buffer_size: usize,
    /// Longest time, in milliseconds, a federation response waits for its audit
    /// event to be written before the request is refused with 503.
    #[serde(default = "default_flush_bound_ms")]
    #[schemars(range(min = 1))]
    pub flush_bound_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { buffer_size: default_buffer_size(), flush_bound_ms: default_flush_bound_ms() }
    }
}

fn default_buffer_size() -> usize {
    1024
}

fn default_flush_bound_ms() -> u64 {
    2000
}

/// A provider system pushing records through the gateway.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundConnector {
    /// ProviderConnector name; the connector is served at `/inbound/<name>`.
    pub name: String,
    /// ODS code of the provider; only callers whose organisation claim is this code
    /// may push to this connector.
    pub provider_ods_code: String,
    /// Base URL of the connector's in-cluster Service, where pushed requests go.
    pub upstream_url: String,
}
