//! FHIR R4 polling: for each resource type, what changed since the cursor
//! (minus an overlap window, because servers commit late and share
//! timestamps: hapi-fhir#5720), page by page, each page written in one
//! transaction with the cursor that covers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use carerecord_config::FhirPoll;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::cursor::{Cursor, DeadLetter};
use crate::source::{SourceClient, SourceError};
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::transform::{self, Prepared, Provenance};

/// Why a poll stopped early. The next poll starts again from the cursor.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One connector's poller.
pub struct Poller {
    config: FhirPoll,
    source: SourceClient,
    store: Store,
    provenance: Provenance,
    /// `<tenant>/<connector>`: names the cursor and dead letters.
    key: String,
    status: Arc<StatusBoard>,
    /// Source Patient id -> NHS number, learned from the source.
    patients: HashMap<String, String>,
    /// `<type>/<id>` -> (versionId, lastUpdated) written, while inside the overlap window.
    seen: HashMap<String, (String, Timestamp)>,
}

impl Poller {
    pub fn new(
        config: FhirPoll,
        source: SourceClient,
        store: Store,
        provenance: Provenance,
        key: String,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self { config, source, store, provenance, key, status, patients: HashMap::new(), seen: HashMap::new() }
    }

    /// Polls forever, `intervalSeconds` apart.
    pub async fn run(mut self) {
        loop {
            match self.poll_once().await {
                Ok(()) => self.status.succeeded(Timestamp::now()),
                Err(error) => {
                    tracing::warn!(error = %error, "poll failed; the next poll starts again from the cursor");
                    self.status.failed(Timestamp::now(), error.to_string());
                }
            }
            tokio::time::sleep(Duration::from_secs(self.config.interval_seconds)).await;
        }
    }

    /// One poll of every resource type.
    pub async fn poll_once(&mut self) -> Result<(), PollError> {
        // The store's cursor is the truth: another replica, or this process
        // before a restart, may have moved it.
        let mut cursor = self.store.cursor(&self.key).await?;
        for (t, since) in &cursor.since {
            self.status.cursor(t, *since);
        }
        for resource_type in self.config.resources.clone() {
            self.poll_type(&resource_type, &mut cursor).await?;
        }
        let horizon = cursor.since.values().min().copied();
        let overlap = self.overlap();
        if let Some(horizon) = horizon {
            self.seen.retain(|_, (_, at)| *at >= horizon - overlap);
        }
        Ok(())
    }

    fn overlap(&self) -> SignedDuration {
        SignedDuration::from_secs(self.config.overlap_seconds as i64)
    }

    fn first_page_url(&self, resource_type: &str, since: Option<Timestamp>) -> Result<String, PollError> {
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

    async fn poll_type(&mut self, resource_type: &str, cursor: &mut Cursor) -> Result<(), PollError> {
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
            self.learn_patients(&records).await?;
            let mut page_cursor = cursor.clone();
            if in_order && let Some(n) = newest {
                page_cursor.advance(resource_type, n);
            }
            self.write_page(records, &page_cursor).await?;
            *cursor = page_cursor;
            url = next_link(&page);
        }
        if let Some(n) = newest
            && !in_order
        {
            cursor.advance(resource_type, n);
            self.commit_cursor(cursor, Vec::new()).await?;
        }
        if let Some(since) = cursor.since.get(resource_type) {
            self.status.cursor(resource_type, *since);
        }
        Ok(())
    }

    /// Maps source Patient ids to NHS numbers: from Patients on the page, and
    /// by reading (from the source) any patient a record refers to that is
    /// not known yet.
    async fn learn_patients(&mut self, records: &[Value]) -> Result<(), PollError> {
        for r in records.iter().filter(|r| r["resourceType"] == "Patient") {
            if let (Some(id), Some(nhs)) = (r["id"].as_str(), transform::nhs_number(r)) {
                self.patients.insert(id.to_string(), nhs.to_string());
            }
        }
        let mut unknown = std::collections::BTreeSet::new();
        for r in records {
            unknown.extend(transform::unknown_patients(r, &self.patients));
        }
        for id in unknown {
            let patient = self.source.get(&format!("{}/Patient/{id}", self.config.base_url)).await;
            match patient {
                Ok(p) => {
                    if let Some(nhs) = transform::nhs_number(&p) {
                        self.patients.insert(id, nhs.to_string());
                    }
                }
                // A patient the source no longer has: the reference falls back to its source identity.
                Err(SourceError::Status { status: 404 | 410 }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes a page and the cursor covering it in one transaction; if the
    /// store refuses the page, writes each record alone and sets aside the
    /// ones it refuses, so that one bad record never blocks the feed.
    async fn write_page(&mut self, records: Vec<Value>, cursor: &Cursor) -> Result<(), PollError> {
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut letters: Vec<(DeadLetter, Value)> = Vec::new();
        let mut unchanged = 0;
        for record in records {
            match transform::prepare(record.clone(), &self.provenance, &self.patients) {
                Ok(p) if self.already_written(&p) => unchanged += 1,
                Ok(p) => prepared.push(p),
                Err(error) => letters.push((self.letter(&record, error.to_string()), record)),
            }
        }
        self.status.unchanged(unchanged);
        if prepared.is_empty() && letters.is_empty() {
            return self.commit_cursor_if_moved(cursor).await;
        }
        let mut entries: Vec<Value> = prepared.iter().map(transform::transaction_entry).collect();
        entries.push(cursor.entry(&self.key, &self.provenance.meta()));
        match self.store.commit(&transform::transaction(entries)).await {
            Ok(_) => {
                self.note_written(&prepared);
                if !letters.is_empty() {
                    self.commit_cursor(cursor, letters).await?;
                }
                Ok(())
            }
            Err(StoreError::Refused { reason, .. }) => {
                tracing::warn!(reason = %reason, records = prepared.len(), "the store refused a page; writing its records one by one");
                for p in prepared {
                    let single = transform::transaction(vec![transform::transaction_entry(&p)]);
                    match self.store.commit(&single).await {
                        Ok(_) => self.note_written(std::slice::from_ref(&p)),
                        Err(StoreError::Refused { reason, .. }) => {
                            let letter = DeadLetter {
                                source_ref: p.source_ref.clone(),
                                source_version: p.source_version.clone(),
                                reason,
                                at: Timestamp::now(),
                            };
                            letters.push((letter, p.resource));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                self.commit_cursor(cursor, letters).await
            }
            Err(e) => Err(e.into()),
        }
    }

    fn letter(&self, record: &Value, reason: String) -> DeadLetter {
        let source_ref = format!(
            "{}/{}",
            record["resourceType"].as_str().unwrap_or("Unknown"),
            record["id"].as_str().unwrap_or("-")
        );
        let source_version = record["meta"]["versionId"].as_str().map(str::to_string);
        DeadLetter { source_ref, source_version, reason, at: Timestamp::now() }
    }

    /// Whether this version of the record was written inside the overlap window.
    fn already_written(&self, p: &Prepared) -> bool {
        match (&p.source_version, self.seen.get(&p.source_ref)) {
            (Some(version), Some((seen, _))) => version == seen,
            _ => false,
        }
    }

    fn note_written(&mut self, prepared: &[Prepared]) {
        for p in prepared {
            if let (Some(version), Some(at)) =
                (&p.source_version, p.source_last_updated.as_deref().and_then(|s| s.parse().ok()))
            {
                self.seen.insert(p.source_ref.clone(), (version.clone(), at));
            }
        }
        self.status.written(prepared.len() as u64);
    }

    async fn commit_cursor_if_moved(&mut self, cursor: &Cursor) -> Result<(), PollError> {
        let stored = self.store.cursor(&self.key).await?;
        if stored == *cursor { Ok(()) } else { self.commit_cursor(cursor, Vec::new()).await }
    }

    /// Writes the cursor, with any dead letters it moves past, in one transaction.
    async fn commit_cursor(&mut self, cursor: &Cursor, letters: Vec<(DeadLetter, Value)>) -> Result<(), PollError> {
        let meta = self.provenance.meta();
        let mut entries = vec![cursor.entry(&self.key, &meta)];
        entries.extend(letters.iter().map(|(letter, record)| letter.entry(&self.key, &meta, record)));
        self.store.commit(&transform::transaction(entries)).await?;
        for (letter, _) in letters {
            // Set aside once: the overlap window reading it again skips it.
            if let Some(version) = &letter.source_version {
                self.seen.insert(letter.source_ref.clone(), (version.clone(), letter.at));
            }
            tracing::warn!(record = %letter.source_ref, reason = %letter.reason, "dead letter: the store refused a record");
            self.status.dead_letter(letter);
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
