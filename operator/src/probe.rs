//! The endpoint probe: is a provider's system reachable, and what is it?
//!
//! FHIR systems get `GET <url><probePath>` (the CapabilityStatement), read
//! for `fhirVersion` and `software.name`; MLLP systems get a TCP connect.
//! Every address a name resolves to is checked before any connection, and
//! the connection is pinned to the checked address, so DNS cannot swap in a
//! forbidden one afterwards: no requests to loopback, link-local (cloud
//! metadata), private, shared, unique-local or unspecified addresses unless
//! the operator's settings allow a CIDR.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use crate::catalogue::Protocol;

/// What the probe may do.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// Networks that may be probed even though they are private.
    pub allowed: Vec<IpNet>,
    /// Limit for the whole probe (resolution, connection, response).
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self { allowed: Vec::new(), timeout: Duration::from_secs(5) }
    }
}

/// Credentials from the connector's Secret. Debug is redacted so they cannot
/// reach a log by accident.
#[derive(Clone)]
pub enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

/// Why an endpoint is not reachable (a small fixed set: condition reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Failure {
    InvalidUrl,
    ResolutionFailed,
    AddressNotAllowed,
    ConnectionFailed,
    Timeout,
    HttpError,
    NotFhir,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUrl => "InvalidUrl",
            Self::ResolutionFailed => "ResolutionFailed",
            Self::AddressNotAllowed => "AddressNotAllowed",
            Self::ConnectionFailed => "ConnectionFailed",
            Self::Timeout => "Timeout",
            Self::HttpError => "HttpError",
            Self::NotFhir => "NotFhir",
        }
    }
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    pub latency_ms: i64,
}

impl ProbeResult {
    fn failed(failure: Failure, message: impl Into<String>, started: Instant) -> Self {
        Self {
            reachable: false,
            failure: Some(failure),
            message: message.into(),
            fhir_version: None,
            software: None,
            latency_ms: started.elapsed().as_millis() as i64,
        }
    }
}

/// True for addresses a probe must not reach unless explicitly allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        }
    }
}

fn allowed(ip: IpAddr, settings: &ProbeSettings) -> bool {
    !is_forbidden(ip) || settings.allowed.iter().any(|net| net.contains(&ip))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        "mllp" => Some(2575),
        _ => None,
    }
}

/// Probes `url` as `protocol` expects.
pub async fn probe(
    url: &str,
    protocol: Protocol,
    probe_path: Option<&str>,
    credentials: Option<&Credentials>,
    settings: &ProbeSettings,
) -> ProbeResult {
    let started = Instant::now();
    match tokio::time::timeout(settings.timeout, probe_inner(url, protocol, probe_path, credentials, settings, started))
        .await
    {
        Ok(result) => result,
        Err(_) => {
            ProbeResult::failed(Failure::Timeout, format!("no answer within {}s", settings.timeout.as_secs()), started)
        }
    }
}

async fn probe_inner(
    url: &str,
    protocol: Protocol,
    probe_path: Option<&str>,
    credentials: Option<&Credentials>,
    settings: &ProbeSettings,
    started: Instant,
) -> ProbeResult {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return ProbeResult::failed(Failure::InvalidUrl, format!("{url} is not a URL: {e}"), started),
    };
    let Some(host) = parsed.host_str().map(|h| h.trim_matches(['[', ']']).to_string()) else {
        return ProbeResult::failed(Failure::InvalidUrl, format!("{url} has no host"), started);
    };
    let Some(port) = parsed.port().or_else(|| default_port(parsed.scheme())) else {
        return ProbeResult::failed(Failure::InvalidUrl, format!("unsupported scheme {}", parsed.scheme()), started);
    };
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return ProbeResult::failed(Failure::ResolutionFailed, format!("cannot resolve {host}: {e}"), started);
        }
    };
    if addresses.is_empty() {
        return ProbeResult::failed(Failure::ResolutionFailed, format!("{host} has no addresses"), started);
    }
    if let Some(bad) = addresses.iter().find(|a| !allowed(a.ip(), settings)) {
        return ProbeResult::failed(
            Failure::AddressNotAllowed,
            format!(
                "{host} resolves to {}, a loopback, link-local, private or otherwise internal address; the operator's settings do not allow probing it",
                bad.ip()
            ),
            started,
        );
    }
    let address = addresses[0];
    match protocol {
        Protocol::Hl7v2Mllp => match tokio::net::TcpStream::connect(address).await {
            Ok(_) => ProbeResult {
                reachable: true,
                failure: None,
                message: format!("MLLP listener at {address} accepted a connection"),
                fhir_version: None,
                software: None,
                latency_ms: started.elapsed().as_millis() as i64,
            },
            Err(e) => {
                ProbeResult::failed(Failure::ConnectionFailed, format!("cannot connect to {address}: {e}"), started)
            }
        },
        Protocol::FhirR4 => {
            fhir_metadata(&parsed, &host, address, probe_path.unwrap_or("/metadata"), credentials, started).await
        }
    }
}

async fn fhir_metadata(
    base: &reqwest::Url,
    host: &str,
    address: SocketAddr,
    path: &str,
    credentials: Option<&Credentials>,
    started: Instant,
) -> ProbeResult {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .resolve(host, address)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ics-operator-probe/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return ProbeResult::failed(Failure::ConnectionFailed, format!("cannot build HTTP client: {e}"), started);
        }
    };
    let url = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    let mut request = client.get(&url).header("Accept", "application/fhir+json");
    request = match credentials {
        Some(Credentials::Bearer(token)) => request.bearer_auth(token),
        Some(Credentials::Basic { username, password }) => request.basic_auth(username, Some(password)),
        None => request,
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let failure = if e.is_timeout() { Failure::Timeout } else { Failure::ConnectionFailed };
            return ProbeResult::failed(failure, format!("GET {url}: {}", error_chain(&e)), started);
        }
    };
    let status = response.status();
    if !status.is_success() {
        return ProbeResult::failed(Failure::HttpError, format!("GET {url} answered {status}"), started);
    }
    let body: serde_json::Value = match response.json().await {
        Ok(v) => v,
        Err(_) => return ProbeResult::failed(Failure::NotFhir, format!("GET {url} did not return JSON"), started),
    };
    if body["resourceType"] != "CapabilityStatement" {
        return ProbeResult::failed(
            Failure::NotFhir,
            format!("GET {url} did not return a CapabilityStatement"),
            started,
        );
    }
    let fhir_version = body["fhirVersion"].as_str().map(String::from);
    let software = body["software"]["name"].as_str().map(String::from);
    ProbeResult {
        reachable: true,
        failure: None,
        message: format!(
            "FHIR {} server{} answered",
            fhir_version.as_deref().unwrap_or("(unknown version)"),
            software.as_deref().map(|s| format!(" {s}")).unwrap_or_default()
        ),
        fhir_version,
        software,
        latency_ms: started.elapsed().as_millis() as i64,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_forbidden(ip(a)), "{a}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in ["8.8.8.8", "51.140.1.1", "2a00:1450:4009:81f::200e"] {
            assert!(!is_forbidden(ip(a)), "{a}");
        }
    }

    #[test]
    fn an_allowed_cidr_lifts_the_ban() {
        let settings = ProbeSettings { allowed: vec!["10.20.0.0/16".parse().unwrap()], ..ProbeSettings::default() };
        assert!(allowed(ip("10.20.3.4"), &settings));
        assert!(!allowed(ip("10.21.3.4"), &settings));
    }

    #[test]
    fn credentials_never_print() {
        let c = Credentials::Bearer("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn loopback_is_refused_before_any_connection() {
        let r = probe("https://127.0.0.1:1/fhir", Protocol::FhirR4, Some("/metadata"), None, &ProbeSettings::default())
            .await;
        assert_eq!(r.failure, Some(Failure::AddressNotAllowed), "{r:?}");
    }

    #[tokio::test]
    async fn cloud_metadata_address_is_refused() {
        let r = probe("https://169.254.169.254/", Protocol::FhirR4, Some("/metadata"), None, &ProbeSettings::default())
            .await;
        assert_eq!(r.failure, Some(Failure::AddressNotAllowed));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let r = probe("https://localhost:9/fhir", Protocol::FhirR4, Some("/metadata"), None, &ProbeSettings::default())
            .await;
        assert_eq!(r.failure, Some(Failure::AddressNotAllowed), "{r:?}");
    }

    #[tokio::test]
    async fn mllp_to_a_private_address_is_refused() {
        let r = probe("mllp://10.0.0.5:2575", Protocol::Hl7v2Mllp, None, None, &ProbeSettings::default()).await;
        assert_eq!(r.failure, Some(Failure::AddressNotAllowed));
    }
}
