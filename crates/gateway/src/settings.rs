//! The gateway configuration compiled for serving: what decisions need from
//! `gateway.yaml`, checked once at start-up.

use std::collections::{BTreeMap, BTreeSet};

use carerecord_config as config;

use crate::paging::PageKey;

/// Everything a decision needs besides the request, the caller, the policy and the time.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The tenant's name.
    pub tenant: String,
    /// ODS codes acting for the tenant on `/fhir`.
    pub organisations: BTreeSet<String>,
    /// Public base URL, no trailing slash.
    pub public_base_url: String,
    /// The record store's FHIR base.
    pub upstream: url::Url,
    /// Push connectors by name.
    pub inbound: BTreeMap<String, Inbound>,
    /// Key binding page ids to callers.
    pub page_key: PageKey,
}

/// A push connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub provider_ods_code: String,
    pub upstream: url::Url,
}

/// Why a gateway configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a carerecord.dev/gateway/v1 document: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("invalid gateway configuration: {0}")]
    Invalid(#[from] config::Invalid),
    #[error("{field} is not a URL: {source}")]
    Url { field: &'static str, source: url::ParseError },
}

/// Reads a gateway configuration file (YAML or JSON).
pub fn read_config(path: &str) -> Result<config::GatewayConfig, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?;
    serde_yaml::from_str(&text).map_err(|source| SettingsError::Parse { path: path.into(), source })
}

impl Settings {
    /// Compiles a validated configuration.
    pub fn compile(config: &config::GatewayConfig, page_key: PageKey) -> Result<Self, SettingsError> {
        config.validate()?;
        let parse = |field: &'static str, text: &str| {
            // A trailing slash makes `join` keep the base's last segment.
            url::Url::parse(&format!("{}/", text.trim_end_matches('/')))
                .map_err(|source| SettingsError::Url { field, source })
        };
        let mut inbound = BTreeMap::new();
        for c in &config.inbound_connectors {
            inbound.insert(
                c.name.clone(),
                Inbound {
                    provider_ods_code: c.provider_ods_code.clone(),
                    upstream: parse("inboundConnectors[].upstreamUrl", &c.upstream_url)?,
                },
            );
        }
        Ok(Self {
            tenant: config.tenant.name.clone(),
            organisations: config.tenant.organisations.iter().cloned().collect(),
            public_base_url: config.public_base_url.trim_end_matches('/').to_string(),
            upstream: parse("upstreamUrl", &config.upstream_url)?,
            inbound,
            page_key,
        })
    }

    /// These settings with what a running gateway takes up from a changed
    /// configuration file: who acts for the tenant and the push connectors.
    /// The rest was read at start-up (the audit writer and the objections
    /// reader already hold the upstream) and stays; a change to it waits for
    /// the next start, which the operator's config hash brings. Pure.
    pub fn reloaded(&self, config: &config::GatewayConfig) -> Result<Self, SettingsError> {
        let newer = Self::compile(config, self.page_key.clone())?;
        Ok(Self { organisations: newer.organisations, inbound: newer.inbound, ..self.clone() })
    }

    /// Path of the store's base (e.g. `/fhir`), without the trailing slash.
    pub fn upstream_base_path(&self) -> &str {
        self.upstream.path().trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: carerecord.dev/gateway/v1
tenant: {name: cheshire, organisations: [QYG]}
publicBaseUrl: https://cheshire.example
upstreamUrl: http://record-store:8080/fhir
listen: 127.0.0.1:8080
adminListen: 127.0.0.1:9090
issuers: [{issuer: "https://issuer.example", audience: record-gateway}]
"#;

    fn config(edit: impl FnOnce(&mut config::GatewayConfig)) -> config::GatewayConfig {
        let mut c: config::GatewayConfig = serde_yaml::from_str(CONFIG).unwrap();
        edit(&mut c);
        c
    }

    fn running() -> Settings {
        Settings::compile(&config(|_| {}), PageKey::from_secret(&[7; 32])).unwrap()
    }

    #[test]
    fn a_reload_takes_up_new_organisations_and_push_connectors() {
        let newer = config(|c| {
            c.tenant.organisations.push("G3472185".into());
            c.inbound_connectors.push(config::InboundConnector {
                name: "emis-practices".into(),
                provider_ods_code: "G3472185".into(),
                upstream_url: "http://connector-emis-practices:8080".into(),
            });
        });
        let reloaded = running().reloaded(&newer).unwrap();
        assert!(reloaded.organisations.contains("G3472185"));
        assert_eq!(reloaded.inbound["emis-practices"].provider_ods_code, "G3472185");
    }

    #[test]
    fn a_reload_keeps_what_was_read_at_start_up() {
        let moved = config(|c| {
            c.upstream_url = "http://elsewhere:8080/fhir".into();
            c.public_base_url = "https://elsewhere.example".into();
        });
        let reloaded = running().reloaded(&moved).unwrap();
        assert_eq!(reloaded.upstream.as_str(), "http://record-store:8080/fhir/");
        assert_eq!(reloaded.public_base_url, "https://cheshire.example");
    }

    #[test]
    fn a_reload_of_an_invalid_configuration_is_refused() {
        let invalid = config(|c| c.tenant.organisations.push("not an ODS code".into()));
        assert!(running().reloaded(&invalid).is_err());
    }
}
