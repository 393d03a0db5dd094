//! Requests to a provider's FHIR server: authenticated, rate-limited, and
//! patient with `429`/`503` (`Retry-After`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use carerecord_config::{AssertionAlgorithm, FhirPoll, SourceAuth};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::status::StatusBoard;
use crate::store::without_url;

/// Longest wait a `Retry-After` may ask for; longer asks fail the attempt
/// (the next poll tries again) rather than hold the connector.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Waits for 429/503 before an attempt fails.
const MAX_THROTTLED_RETRIES: u32 = 8;
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("provider request failed: {0}")]
    Http(String),
    #[error("provider answered {status}")]
    Status { status: u16 },
    #[error("provider kept answering 429/503")]
    Throttled,
    #[error("cannot authenticate to the provider: {0}")]
    Auth(String),
    #[error("the provider's answer is not FHIR JSON: {0}")]
    Body(String),
}

/// At most one request per `interval`, across every task of the connector.
pub struct RateLimit {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn per_second(requests: u32) -> Self {
        Self { interval: Duration::from_secs(1) / requests.max(1), next: Mutex::new(Instant::now()) }
    }

    pub async fn acquire(&self) {
        let wait = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// `Retry-After` as seconds or an HTTP date; None when absent or unreadable.
pub fn retry_after(value: Option<&str>, now: Timestamp) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Duration::try_from(date.duration_since(now)).unwrap_or(Duration::ZERO))
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// A client of one provider's FHIR server.
pub struct SourceClient {
    http: reqwest::Client,
    auth: SourceAuth,
    token: Mutex<Option<CachedToken>>,
    limit: RateLimit,
    status: Arc<StatusBoard>,
    assertions: AtomicU64,
}

impl SourceClient {
    pub fn new(poll: &FhirPoll, status: Arc<StatusBoard>, timeout: Duration) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &poll.ca_file {
            let pem = std::fs::read(ca).map_err(|e| SourceError::Auth(format!("CA file {ca}: {e}")))?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|e| SourceError::Auth(format!("CA file {ca}: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        if let SourceAuth::MutualTls { cert_file, key_file } = &poll.auth {
            let mut pem = std::fs::read(cert_file).map_err(|e| SourceError::Auth(format!("{cert_file}: {e}")))?;
            pem.extend(std::fs::read(key_file).map_err(|e| SourceError::Auth(format!("{key_file}: {e}")))?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|e| SourceError::Auth(format!("client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| SourceError::Http(without_url(&e)))?;
        Ok(Self {
            http,
            auth: poll.auth.clone(),
            token: Mutex::new(None),
            limit: RateLimit::per_second(poll.requests_per_second),
            status,
            assertions: AtomicU64::new(0),
        })
    }

    /// GETs a FHIR JSON document, waiting out 429/503 as the provider asks
    /// and renewing the token once on 401.
    pub async fn get(&self, url: &str) -> Result<Value, SourceError> {
        let response = self.send(reqwest::Method::GET, url, &[], true, None).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(SourceError::Status { status: status.as_u16() });
        }
        response.json().await.map_err(|e| SourceError::Body(without_url(&e)))
    }

    /// Sends a request with `headers` (and the bearer token when
    /// `authenticate`; `timeout` replaces the client's), waiting out 429/503 as the provider asks and renewing
    /// the token once on 401; any other answer is the caller's to read.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        authenticate: bool,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, SourceError> {
        let mut throttled = 0;
        let mut renewed = false;
        loop {
            self.limit.acquire().await;
            let mut request = self.http.request(method.clone(), url);
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("accept")) {
                request = request.header("Accept", "application/fhir+json");
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if authenticate && let Some(token) = self.bearer().await? {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| SourceError::Http(without_url(&e)))?;
            let status = response.status();
            if status.as_u16() == 429 || status.as_u16() == 503 {
                throttled += 1;
                if throttled > MAX_THROTTLED_RETRIES {
                    return Err(SourceError::Throttled);
                }
                let header = response.headers().get("retry-after").and_then(|v| v.to_str().ok());
                // Without a Retry-After, back off exponentially from one second.
                let wait = retry_after(header, Timestamp::now()).unwrap_or(Duration::from_secs(1 << throttled.min(6)));
                if wait > MAX_RETRY_AFTER {
                    return Err(SourceError::Throttled);
                }
                self.status.throttled();
                tracing::info!(status = status.as_u16(), wait_ms = wait.as_millis() as u64, "provider asked to wait");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.as_u16() == 401 && authenticate && !renewed && self.renews_tokens() {
                renewed = true;
                *self.token.lock().await = None;
                continue;
            }
            return Ok(response);
        }
    }

    fn renews_tokens(&self) -> bool {
        matches!(self.auth, SourceAuth::ClientSecret { .. } | SourceAuth::PrivateKeyJwt { .. })
    }

    /// The bearer token to send, if the method uses one.
    async fn bearer(&self) -> Result<Option<String>, SourceError> {
        match &self.auth {
            SourceAuth::None | SourceAuth::MutualTls { .. } => Ok(None),
            // Read each time: a rotated Secret is picked up without a restart.
            SourceAuth::BearerToken { token_file } => std::fs::read_to_string(token_file)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| SourceError::Auth(format!("{token_file}: {e}"))),
            SourceAuth::ClientSecret { .. } | SourceAuth::PrivateKeyJwt { .. } => {
                let mut cached = self.token.lock().await;
                if let Some(token) = cached.as_ref().filter(|t| t.renew_at > Instant::now()) {
                    return Ok(Some(token.value.clone()));
                }
                let token = self.fetch_token().await?;
                let value = token.value.clone();
                *cached = Some(token);
                Ok(Some(value))
            }
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, SourceError> {
        let (token_url, form, basic) = match &self.auth {
            SourceAuth::ClientSecret { token_url, client_id, client_secret_file, scope } => {
                let secret = std::fs::read_to_string(client_secret_file)
                    .map_err(|e| SourceError::Auth(format!("{client_secret_file}: {e}")))?;
                let mut form = vec![("grant_type", "client_credentials".to_string())];
                form.extend(scope.iter().map(|s| ("scope", s.clone())));
                (token_url, form, Some((client_id.clone(), secret.trim().to_string())))
            }
            SourceAuth::PrivateKeyJwt { token_url, client_id, key_file, key_id, algorithm, scope } => {
                let assertion = self.client_assertion(token_url, client_id, key_file, key_id.as_deref(), *algorithm)?;
                let mut form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string()),
                    ("client_assertion", assertion),
                ];
                form.extend(scope.iter().map(|s| ("scope", s.clone())));
                (token_url, form, None)
            }
            _ => return Err(SourceError::Auth("this method has no token endpoint".into())),
        };
        let mut request = self.http.post(token_url).form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.map_err(|e| SourceError::Auth(without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(SourceError::Auth(format!("token endpoint answered {status}")));
        }
        let body: Value = response.json().await.map_err(|e| SourceError::Auth(without_url(&e)))?;
        let value = body["access_token"].as_str().ok_or(SourceError::Auth("no access_token".into()))?.to_string();
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(300));
        Ok(CachedToken { value, renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN) })
    }

    /// A SMART Backend Services client assertion: `iss` = `sub` = the client,
    /// `aud` = the token endpoint, five minutes, a unique `jti`.
    fn client_assertion(
        &self,
        token_url: &str,
        client_id: &str,
        key_file: &str,
        key_id: Option<&str>,
        algorithm: AssertionAlgorithm,
    ) -> Result<String, SourceError> {
        let pem = std::fs::read(key_file).map_err(|e| SourceError::Auth(format!("{key_file}: {e}")))?;
        let (alg, key) = match algorithm {
            AssertionAlgorithm::RS384 => {
                (jsonwebtoken::Algorithm::RS384, jsonwebtoken::EncodingKey::from_rsa_pem(&pem))
            }
            AssertionAlgorithm::ES384 => (jsonwebtoken::Algorithm::ES384, jsonwebtoken::EncodingKey::from_ec_pem(&pem)),
        };
        let key = key.map_err(|e| SourceError::Auth(format!("{key_file}: {e}")))?;
        let now = Timestamp::now();
        let jti = format!("{}-{}", now.as_nanosecond(), self.assertions.fetch_add(1, Ordering::Relaxed));
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": token_url, "jti": jti,
            "iat": now.as_second(), "exp": now.as_second() + 300,
        });
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = key_id.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| SourceError::Auth(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(retry_after(Some("7"), Timestamp::UNIX_EPOCH), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_reads_an_http_date() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        assert_eq!(retry_after(Some("Wed, 25 Nov 2026 10:00:30 GMT"), now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_retry_after_in_the_past_means_now() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        assert_eq!(retry_after(Some("Wed, 25 Nov 2026 09:00:00 GMT"), now), Some(Duration::ZERO));
    }

    #[test]
    fn an_unreadable_retry_after_is_none() {
        assert_eq!(retry_after(Some("soon"), Timestamp::UNIX_EPOCH), None);
        assert_eq!(retry_after(None, Timestamp::UNIX_EPOCH), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_requests() {
        let limit = RateLimit::per_second(4);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limit.acquire().await;
        }
        // Five requests at four a second: the fifth waits a whole second (virtual time).
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
