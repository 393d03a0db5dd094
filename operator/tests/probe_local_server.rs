//! The probe against real sockets: a FHIR-like HTTP server and an MLLP
//! listener started by the test on loopback (allowed by CIDR, as an operator
//! would allow a trust's private network).

use std::time::Duration;

use ics_operator::catalogue::Protocol;
use ics_operator::probe::{Failure, ProbeSettings, probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn loopback_allowed() -> ProbeSettings {
    ProbeSettings { allowed: vec!["127.0.0.0/8".parse().unwrap()], timeout: Duration::from_secs(3) }
}

/// Serves one canned HTTP response per connection; returns the base URL.
async fn http_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let (status, body) =
                    if request.starts_with("GET /fhir/metadata ") { (status, body) } else { ("404 Not Found", "{}") };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/fhir")
}

const CAPABILITY: &str = r#"{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1","software":{"name":"HAPI FHIR Server","version":"8.8.0"}}"#;

#[tokio::test]
async fn fhir_server_is_reachable_with_version_and_software() {
    let url = http_server("200 OK", CAPABILITY).await;
    let r = probe(&url, Protocol::FhirR4, Some("/metadata"), None, &loopback_allowed()).await;
    assert!(r.reachable, "{r:?}");
    assert_eq!(r.fhir_version.as_deref(), Some("4.0.1"));
    assert_eq!(r.software.as_deref(), Some("HAPI FHIR Server"));
}

#[tokio::test]
async fn loopback_server_is_refused_without_an_allowed_cidr() {
    let url = http_server("200 OK", CAPABILITY).await;
    let r = probe(&url, Protocol::FhirR4, Some("/metadata"), None, &ProbeSettings::default()).await;
    assert_eq!(r.failure, Some(Failure::AddressNotAllowed));
}

#[tokio::test]
async fn server_error_is_an_http_error() {
    let url = http_server("503 Service Unavailable", "{}").await;
    let r = probe(&url, Protocol::FhirR4, Some("/metadata"), None, &loopback_allowed()).await;
    assert_eq!(r.failure, Some(Failure::HttpError));
    assert!(r.message.contains("503"), "{}", r.message);
}

#[tokio::test]
async fn json_that_is_not_a_capability_statement_is_not_fhir() {
    let url = http_server("200 OK", r#"{"status":"ok"}"#).await;
    let r = probe(&url, Protocol::FhirR4, Some("/metadata"), None, &loopback_allowed()).await;
    assert_eq!(r.failure, Some(Failure::NotFhir));
}

#[tokio::test]
async fn mllp_listener_accepting_connections_is_reachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let r = probe(&format!("mllp://{addr}"), Protocol::Hl7v2Mllp, None, None, &loopback_allowed()).await;
    assert!(r.reachable, "{r:?}");
}

#[tokio::test]
async fn closed_port_is_a_connection_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = probe(&format!("mllp://{addr}"), Protocol::Hl7v2Mllp, None, None, &loopback_allowed()).await;
    assert_eq!(r.failure, Some(Failure::ConnectionFailed), "{r:?}");
}
