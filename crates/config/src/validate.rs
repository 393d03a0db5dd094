//! Checks a document's types cannot express, shared by the operator (before
//! it renders) and the gateway (before it trusts what it read). Only facts
//! this crate owns: FHIR facts (resource type names, categories' labels) and
//! date parsing are checked by the reader, which has those crates.

use std::fmt;

use crate::{ChangeFeed, ConnectorConfig, GatewayConfig, SharingPolicy, Source, SourceAuth};

/// Why a document is not acceptable, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the offending field, e.g. `issuers[0].audience`.
    pub field: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

fn invalid(field: impl Into<String>, problem: &'static str) -> Invalid {
    Invalid { field: field.into(), problem }
}

/// An ODS code: 1 to 9 upper-case letters or digits.
pub fn is_ods_code(code: &str) -> bool {
    (1..=9).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A DNS-label-like name (tenant and connector names), as Kubernetes names them.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && !url.ends_with('/')
}

impl GatewayConfig {
    /// Checks what serde cannot: names, codes and URL shapes.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !is_name(&self.tenant.name) {
            return Err(invalid("tenant.name", "must be a CareRecordTenant name (lower-case DNS label)"));
        }
        if self.tenant.organisations.is_empty() {
            return Err(invalid("tenant.organisations", "must name at least one ODS code"));
        }
        for (i, code) in self.tenant.organisations.iter().enumerate() {
            if !is_ods_code(code) {
                return Err(invalid(format!("tenant.organisations[{i}]"), "must be an ODS code ([A-Z0-9]{1,9})"));
            }
        }
        if !self.public_base_url.starts_with("https://") && !self.public_base_url.starts_with("http://") {
            return Err(invalid("publicBaseUrl", "must be an http(s) URL"));
        }
        if self.public_base_url.ends_with('/') {
            return Err(invalid("publicBaseUrl", "must not end with '/'"));
        }
        if !is_http_url(&self.upstream_url) {
            return Err(invalid("upstreamUrl", "must be an http(s) URL not ending with '/'"));
        }
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "must name at least one trusted issuer"));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if !issuer.issuer.starts_with("https://") && !issuer.issuer.starts_with("http://") {
                return Err(invalid(format!("issuers[{i}].issuer"), "must be an http(s) URL"));
            }
            if issuer.audience.is_empty() {
                return Err(invalid(format!("issuers[{i}].audience"), "must not be empty"));
            }
            if issuer.organisation_claim.is_empty() {
                return Err(invalid(format!("issuers[{i}].organisationClaim"), "must not be empty"));
            }
        }
        if self.audit.buffer_size == 0 {
            return Err(invalid("audit.bufferSize", "must be at least 1"));
        }
        if self.audit.flush_bound_ms == 0 {
            return Err(invalid("audit.flushBoundMs", "must be at least 1"));
        }
        for (i, c) in self.inbound_connectors.iter().enumerate() {
            if !is_name(&c.name) {
                return Err(invalid(format!("inboundConnectors[{i}].name"), "must be a ProviderConnector name"));
            }
            if !is_ods_code(&c.provider_ods_code) {
                return Err(invalid(format!("inboundConnectors[{i}].providerOdsCode"), "must be an ODS code"));
            }
            if !is_http_url(&c.upstream_url) {
                return Err(invalid(format!("inboundConnectors[{i}].upstreamUrl"), "must be an http(s) URL"));
            }
        }
        Ok(())
    }
}

impl SharingPolicy {
    /// Checks what serde cannot: names and codes. Dates and resource types are
    /// checked by the reader, which parses them.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, a) in self.agreements.iter().enumerate() {
            if a.agreement_id.is_empty() {
                return Err(invalid(format!("agreements[{i}].agreementId"), "must not be empty"));
            }
            if !is_name(&a.consumer_tenant) {
                return Err(invalid(format!("agreements[{i}].consumerTenant"), "must be a CareRecordTenant name"));
            }
            if a.consumer_organisations.is_empty() {
                return Err(invalid(format!("agreements[{i}].consumerOrganisations"), "must name an ODS code"));
            }
            for (j, code) in a.consumer_organisations.iter().enumerate() {
                if !is_ods_code(code) {
                    return Err(invalid(format!("agreements[{i}].consumerOrganisations[{j}]"), "must be an ODS code"));
                }
            }
            if a.resources.is_empty() {
                return Err(invalid(format!("agreements[{i}].resources"), "must name a resource type"));
            }
        }
        Ok(())
    }
}

impl ConnectorConfig {
    /// Checks what serde cannot: names, codes and URL shapes. Resource type
    /// names are checked by the connector, which has the FHIR facts.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !is_name(&self.name) {
            return Err(invalid("name", "must be a ProviderConnector name (lower-case DNS label)"));
        }
        if !is_name(&self.tenant) {
            return Err(invalid("tenant", "must be a CareRecordTenant name (lower-case DNS label)"));
        }
        if !is_ods_code(&self.provider.ods_code) {
            return Err(invalid("provider.odsCode", "must be an ODS code ([A-Z0-9]{1,9})"));
        }
        if !is_http_url(&self.store_url) {
            return Err(invalid("storeUrl", "must be an http(s) URL not ending with '/'"));
        }
        if let Source::FhirPoll(poll) = &self.source {
            if !is_http_url(&poll.base_url) {
                return Err(invalid("source.baseUrl", "must be an http(s) URL not ending with '/'"));
            }
            if poll.resources.is_empty() {
                return Err(invalid("source.resources", "must name a resource type"));
            }
            if poll.interval_seconds == 0 {
                return Err(invalid("source.intervalSeconds", "must be at least 1"));
            }
            if poll.page_size == 0 || poll.requests_per_second == 0 {
                return Err(invalid("source", "pageSize and requestsPerSecond must be at least 1"));
            }
            let token_url = match &poll.auth {
                SourceAuth::ClientSecret { token_url, .. } | SourceAuth::PrivateKeyJwt { token_url, .. } => {
                    Some(token_url)
                }
                _ => None,
            };
            if token_url.is_some_and(|url| !is_http_url(url)) {
                return Err(invalid("source.auth.tokenUrl", "must be an http(s) URL not ending with '/'"));
            }
            if let ChangeFeed::BulkExport { timeout_seconds: 0, .. } = poll.changes {
                return Err(invalid("source.changes.timeoutSeconds", "must be at least 1"));
            }
            if let ChangeFeed::Subscription { listen } = poll.changes
                && listen == self.admin_listen
            {
                return Err(invalid("source.changes.listen", "must differ from adminListen"));
            }
        }
        for (i, rule) in self.security_rules.iter().enumerate() {
            if rule.categories.is_empty() {
                return Err(invalid(format!("securityRules[{i}].categories"), "must name a category"));
            }
        }
        Ok(())
    }
}
