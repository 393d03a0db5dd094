//! Reads active Consents from the store, briefly cached, for the pure
//! [`crate::consent::objecting_patients`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

/// Pages read at most: a store with more active Consents than this is
/// refused rather than half-read (which could miss an objection).
const MAX_PAGES: usize = 100;

/// Why Consents could not be read; federation is then refused.
#[derive(Debug, thiserror::Error)]
pub enum ObjectionsError {
    #[error("GET Consent: {0}")]
    Http(#[from] reqwest::Error),
    #[error("more than {MAX_PAGES} pages of active Consents")]
    TooMany,
}

/// The active Consents of the store.
pub struct Objections {
    http: reqwest::Client,
    store: url::Url,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Arc<Vec<Value>>)>>,
}

impl Objections {
    pub fn new(http: reqwest::Client, store: url::Url, ttl: Duration) -> Self {
        Self { http, store, ttl, cache: Mutex::new(None) }
    }

    /// Active Consents, at most `ttl` old.
    pub async fn consents(&self) -> Result<Arc<Vec<Value>>, ObjectionsError> {
        // Held across the fetch: concurrent requests wait for one fetch, not start many.
        let mut cache = self.cache.lock().await;
        if let Some((at, consents)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(consents.clone());
        }
        let consents = Arc::new(self.fetch().await?);
        *cache = Some((Instant::now(), consents.clone()));
        Ok(consents)
    }

    async fn fetch(&self) -> Result<Vec<Value>, ObjectionsError> {
        // R4 has no search parameter for provision.type; deny provisions are
        // picked out locally from every active Consent.
        let mut url = self.store.join("Consent?status=active&_count=500").expect("a fixed relative URL joins");
        let mut consents = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Value = self
                .http
                .get(url.clone())
                .header("Accept", "application/fhir+json")
                .header("Cache-Control", "no-cache")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            consents.extend(carerecord_fhir::bundle::entry_resources(&page).cloned());
            let next = page
                .get("link")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
                .and_then(|l| l.get("url")?.as_str());
            match next {
                // Only the query is taken: the store's links may name an address
                // the gateway does not reach it by.
                Some(next) => {
                    let query = next.split_once('?').map(|(_, q)| q).unwrap_or("");
                    url = self.store.clone();
                    url.set_query(Some(query));
                }
                None => return Ok(consents),
            }
        }
        Err(ObjectionsError::TooMany)
    }
}
