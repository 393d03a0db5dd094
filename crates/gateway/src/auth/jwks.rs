//! An issuer's signing keys: discovered through OpenID Connect, cached, and
//! refreshed when a token names a key not in the cache (keys rotate), at
//! most once per `min_refresh` so that tokens with made-up `kid`s cannot make
//! the gateway hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carerecord_config::Issuer;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, algorithms_for};

/// Keys are re-read after this long even without an unknown `kid`, so that a
/// key the issuer withdrew stops verifying.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// Why keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} has no jwks_uri")]
    NoJwksUri { url: String },
}

#[derive(Clone)]
struct Key {
    key: Arc<DecodingKey>,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Key>,
    without_kid: Vec<Key>,
    fetched: Option<Instant>,
}

/// One issuer's keys.
pub struct JwksCache {
    issuer: String,
    jwks_uri: Option<String>,
    http: reqwest::Client,
    min_refresh: Duration,
    keys: RwLock<Keys>,
    /// Serialises refreshes and remembers when the last one started.
    refreshing: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(issuer: &Issuer, http: reqwest::Client, min_refresh: Duration) -> Self {
        Self {
            issuer: issuer.issuer.trim_end_matches('/').to_string(),
            jwks_uri: issuer.jwks_uri.clone(),
            http,
            min_refresh,
            keys: RwLock::default(),
            refreshing: Mutex::new(None),
        }
    }

    /// The key for `kid` (or, for a token without `kid`, the first key
    /// allowing `alg`), refreshing the set once if it is not known.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(Arc<DecodingKey>, Vec<Algorithm>), AuthError> {
        let stale = self.keys.read().await.fetched.is_none_or(|t| t.elapsed() > MAX_AGE);
        if !stale && let Some(found) = self.lookup(kid, alg).await {
            return Ok(found);
        }
        self.refresh_bounded().await?;
        self.lookup(kid, alg).await.ok_or(AuthError::UnknownKey)
    }

    async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<(Arc<DecodingKey>, Vec<Algorithm>)> {
        let keys = self.keys.read().await;
        let key = match kid {
            Some(kid) => keys.by_kid.get(kid),
            None => keys.without_kid.iter().chain(keys.by_kid.values()).find(|k| k.algorithms.contains(&alg)),
        }?;
        Some((key.key.clone(), key.algorithms.clone()))
    }

    /// Refreshes unless another refresh started less than `min_refresh` ago.
    async fn refresh_bounded(&self) -> Result<(), JwksError> {
        let mut last = self.refreshing.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    /// Fetches the keys now.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.refreshing.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let uri = match &self.jwks_uri {
            Some(uri) => uri.clone(),
            None => self.discover().await?,
        };
        let set: JwkSet = self.get_json(&uri).await?;
        let mut keys = Keys { fetched: Some(Instant::now()), ..Default::default() };
        for jwk in &set.keys {
            if let Some(key) = usable(jwk) {
                match &jwk.common.key_id {
                    Some(kid) => {
                        keys.by_kid.insert(kid.clone(), key);
                    }
                    None => keys.without_kid.push(key),
                }
            }
        }
        tracing::info!(issuer = %self.issuer, keys = keys.by_kid.len() + keys.without_kid.len(), "issuer keys refreshed");
        *self.keys.write().await = keys;
        Ok(())
    }

    async fn discover(&self) -> Result<String, JwksError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let document: Value = self.get_json(&url).await?;
        document.get("jwks_uri").and_then(Value::as_str).map(str::to_string).ok_or(JwksError::NoJwksUri { url })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, JwksError> {
        let http = |source| JwksError::Http { url: url.to_string(), source };
        self.http.get(url).send().await.and_then(|r| r.error_for_status()).map_err(http)?.json().await.map_err(http)
    }
}

/// A signing key the gateway can verify with, if the JWK is one.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithms = algorithms_for(jwk);
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { key: Arc::new(key), algorithms })
}
