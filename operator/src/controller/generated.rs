//! Secret material the operator generates: database passwords and the
//! StatefulSet database's TLS. It exists only in the request that creates
//! its Secret (never rendered, logged, put in status or regenerated), which
//! is why it is made here and not in the pure `render`.

use jiff::ToSpan;
use rand::Rng;
use rand::distr::Alphanumeric;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::render::child::Child;
use crate::render::tenant::{CREDENTIALS_SECRET, PAGE_KEY_SECRET, SUPERUSER_SECRET, TLS_SECRET, server_dns_names};

/// Why secret material could not be generated (only a bug or an exhausted
/// random source can cause this).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the database's TLS certificate: {0}")]
pub struct GenerateError(#[from] rcgen::Error);

/// A password of 32 alphanumerics (about 190 bits).
pub fn password() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}

/// PEM-encoded TLS material for the StatefulSet database.
pub struct DatabaseTls {
    pub ca: String,
    pub certificate: String,
    pub key: String,
}

/// A CA of the tenant's own and a server certificate it signs for
/// `dns_names`. The CA's key is dropped once the certificate is signed: no
/// one, the operator included, can issue another certificate under it.
pub fn database_tls(tenant_namespace: &str, dns_names: Vec<String>) -> Result<DatabaseTls, GenerateError> {
    let now = jiff::Timestamp::now();
    let date = |t: jiff::Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let yesterday = date(now - 24.hours());
    let in_years = |years: i64| {
        let later = now.to_zoned(jiff::tz::TimeZone::UTC).saturating_add(years.years());
        date(later.timestamp())
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, format!("{tenant_namespace} database CA"));
    ca_params.distinguished_name.push(DnType::OrganizationName, "ics-operator");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = yesterday;
    ca_params.not_after = in_years(10);
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::new(dns_names.clone())?;
    params.distinguished_name.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = yesterday;
    params.not_after = in_years(5);
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &ca)?;
    Ok(DatabaseTls { ca: ca.pem(), certificate: certificate.pem(), key: key.serialize_pem() })
}

/// Adds what a create-once Secret needs before it is first created.
pub fn fill(child: &mut Child) -> Result<(), GenerateError> {
    let namespace = child.namespace().unwrap_or_default().to_string();
    let data =
        child.object.data.as_object_mut().map(|o| o.entry("stringData").or_insert_with(|| serde_json::json!({})));
    let Some(data) = data.and_then(|d| d.as_object_mut()) else { return Ok(()) };
    match child.object.metadata.name.as_deref() {
        Some(CREDENTIALS_SECRET | SUPERUSER_SECRET) => {
            data.insert("password".into(), password().into());
        }
        Some(PAGE_KEY_SECRET) => {
            let key: String = rand::rng().sample_iter(&Alphanumeric).take(64).map(char::from).collect();
            data.insert("key".into(), key.into());
        }
        Some(TLS_SECRET) => {
            let tls = database_tls(&namespace, server_dns_names(&namespace))?;
            data.insert("ca.crt".into(), tls.ca.into());
            data.insert("tls.crt".into(), tls.certificate.into());
            data.insert("tls.key".into(), tls.key.into());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_never_repeat() {
        let (a, b) = (password(), password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn database_tls_is_a_ca_and_a_server_certificate_with_its_key() {
        let tls = database_tls("scr-a", server_dns_names("scr-a")).unwrap();
        assert!(tls.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(tls.ca, tls.certificate);
        assert!(tls.key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn the_server_certificate_chains_to_the_ca() {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let tls = database_tls("scr-a", server_dns_names("scr-a")).unwrap();
        let ca = CertificateDer::from_pem_slice(tls.ca.as_bytes()).unwrap();
        let cert = CertificateDer::from_pem_slice(tls.certificate.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let name = rustls::pki_types::ServerName::try_from("records-db.scr-a.svc").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(&cert, &[], &name, &[], now)
            .expect("the certificate verifies for its service name");
    }
}
