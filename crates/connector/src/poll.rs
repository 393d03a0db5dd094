//! FHIR R4 polling: for each resource type, what changed since the cursor
//! (minus an overlap window, because servers commit late and share
//! timestamps: hapi-fhir#5720), page by page, each page written in one
//! transaction with the cursor that covers it.

use std::time::Duration;

use carerecord_config::FhirPoll;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::cursor::Cursor;
use crate::source::{SourceClient, SourceError};
use crate::writer::{SyncError, Writer};

/// One connector's poller.
pub struct Poller {
    config: FhirPoll,
    source: SourceClient,
    writer: Writer,
}

impl Poller {
    pub fn new(config: FhirPoll, source: SourceClient, writer: Writer) -> Self {
        Self { config, source, writer }
    }

    /// Polls forever, `intervalSeconds` apart.
    pub async fn run(mut self) {
        loop {
            match self.poll_once().await {
                Ok(()) => self.writer.status().succeeded(Timestamp::now()),
                Err(error) => {
                    tracing::warn!(error = %error, "poll failed; the next poll starts again from the cursor");
                    self.writer.status().failed(Timestamp::now(), error.to_string());
                }
            }
            tokio::time::sleep(Duration::from_secs(self.config.interval_seconds)).await;
        }
    }

    /// One poll of every resource type.
    pub async fn poll_once(&mut self) -> Result<(), SyncError> {
        let mut cursor = self.writer.cursor().await?;
        for (t, since) in &cursor.since {
            self.writer.status().cursor(t, *since);
        }
        for resource_type in self.config.resources.clone() {
            self.poll_type(&resource_type, &mut cursor).await?;
        }
        if let Some(horizon) = cursor.since.values().min().copied() {
            self.writer.forget_seen_before(horizon - self.overlap());
        }
        Ok(())
    }

    /// Reads the named records (`<type>/<id>` in the provider's system) and
    /// writes them; the cursor stays where it is (what it covers is decided
    /// by `_lastUpdated` reads). A record the source no longer has is skipped.
    pub async fn read_named(&mut self, references: &[(String, String)]) -> Result<(), SyncError> {
        let mut records = Vec::with_capacity(references.len());
        for (resource_type, id) in references {
            match self.source.get(&format!("{}/{resource_type}/{id}", self.config.base_url)).await {
                Ok(record) if record["resourceType"] == resource_type.as_str() => records.push(record),
                Ok(_) | Err(SourceError::Status { status: 404 | 410 }) => {
                    tracing::info!(record = %format!("{resource_type}/{id}"), "a notified record is not at the source; skipped");
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Patients first, so that references to them resolve.
        records.sort_by_key(|r| r["resourceType"] != "Patient");
        let cursor = self.writer.cursor().await?;
        self.writer.learn_patients(&records, &self.source, &self.config.base_url).await?;
        self.writer.write_page(records, &cursor).await
    }

    fn overlap(&self) -> SignedDuration {
        SignedDuration::from_secs(self.config.overlap_seconds as i64)
    }

    fn first_page_url(&self, resource_type: &str, since: Option<Timestamp>) -> Result<String, SyncError> {
        let mut url = url::Url::parse(&format!("{}/{resource_type}", self.config.base_url))
            .map_err(|e| SourceError::Http(e.to_string()))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("_count", &self.config.page_size.to_string());
            query.append_pair("_sort", "_lastUpdated");
            if let Some(since) = since {
                query.append_pair("_lastUpdated", &format!("ge{}", since - self.overlap()));
            }
        }
        Ok(url.into())
    }

    async fn poll_type(&mut self, resource_type: &str, cursor: &mut Cursor) -> Result<(), SyncError> {
        let mut url = Some(self.first_page_url(resource_type, cursor.since.get(resource_type).copied())?);
        // While pages come in lastUpdated order, each page's newest record is
        // a safe checkpoint; if the source does not sort, the cursor moves only
        // when the whole type has been read.
        let mut in_order = true;
        let mut newest: Option<Timestamp> = None;
        while let Some(page_url) = url.take() {
            let page = self.source.get(&page_url).await?;
            let records: Vec<Value> = page["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"].as_str().is_none_or(|m| m == "match"))
                .filter_map(|e| e.get("resource").cloned())
                .filter(|r| r["resourceType"] == resource_type)
                .collect();
            let stamps: Vec<Timestamp> = records.iter().filter_map(last_updated).collect();
            if let (Some(previous), Some(first)) = (newest, stamps.first())
                && first < &previous
            {
                in_order = false;
            }
            in_order &= stamps.windows(2).all(|w| w[0] <= w[1]);
            newest = stamps.iter().copied().chain(newest).max();
            self.writer.learn_patients(&records, &self.source, &self.config.base_url).await?;
            let mut page_cursor = cursor.clone();
            if in_order && let Some(n) = newest {
                page_cursor.advance(resource_type, n);
            }
            self.writer.write_page(records, &page_cursor).await?;
            *cursor = page_cursor;
            url = next_link(&page);
        }
        if let Some(n) = newest
            && !in_order
        {
            cursor.advance(resource_type, n);
            self.writer.commit_cursor(cursor, Vec::new()).await?;
        }
        if let Some(since) = cursor.since.get(resource_type) {
            self.writer.status().cursor(resource_type, *since);
        }
        Ok(())
    }
}

fn last_updated(resource: &Value) -> Option<Timestamp> {
    resource["meta"]["lastUpdated"].as_str()?.parse().ok()
}

/// The Bundle's `next` link.
pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_next_link_is_found_among_the_links() {
        let bundle = json!({"link": [{"relation": "self", "url": "a"}, {"relation": "next", "url": "b"}]});
        assert_eq!(next_link(&bundle).as_deref(), Some("b"));
        assert_eq!(next_link(&json!({"link": [{"relation": "self", "url": "a"}]})), None);
    }
}
