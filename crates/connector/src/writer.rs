//! The one write path every FHIR source shares (search, Bulk Data export,
//! Subscription): records become transaction Bundles of conditional updates
//! with provenance and labels, written together with the cursor that covers
//! them; a record the store refuses becomes a dead letter and never blocks
//! the feed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use crate::cursor::{Cursor, DeadLetter};
use crate::source::{SourceClient, SourceError};
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::transform::{self, Prepared, Provenance};

/// Why a sync stopped early. The next attempt starts again from the cursor.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes one connector's records into its tenant's store.
pub struct Writer {
    store: Store,
    provenance: Provenance,
    /// `<tenant>/<connector>`: names the cursor and dead letters.
    key: String,
    status: Arc<StatusBoard>,
    /// Source Patient id -> NHS number, learned from the source.
    patients: HashMap<String, String>,
    /// `<type>/<id>` -> (versionId, lastUpdated) written, while a source may read it again.
    seen: HashMap<String, (String, Timestamp)>,
}

impl Writer {
    pub fn new(store: Store, provenance: Provenance, key: String, status: Arc<StatusBoard>) -> Self {
        Self { store, provenance, key, status, patients: HashMap::new(), seen: HashMap::new() }
    }

    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// The connector's cursor as the store holds it. The store's cursor is
    /// the truth: another replica, or this process before a restart, may
    /// have moved it.
    pub async fn cursor(&self) -> Result<Cursor, StoreError> {
        self.store.cursor(&self.key).await
    }

    /// Forgets written versions last updated before `horizon`: a source will
    /// not read them again.
    pub fn forget_seen_before(&mut self, horizon: Timestamp) {
        self.seen.retain(|_, (_, at)| *at >= horizon);
    }

    /// Forgets every written version (a Bulk Data export never reads a
    /// version twice: the next one starts after this one's transactionTime).
    pub fn forget_seen(&mut self) {
        self.seen.clear();
    }

    /// Maps source Patient ids to NHS numbers: from Patients among `records`,
    /// and by reading (from the source) any patient a record refers to that
    /// is not known yet.
    pub async fn learn_patients(
        &mut self,
        records: &[Value],
        source: &SourceClient,
        base_url: &str,
    ) -> Result<(), SyncError> {
        for r in records.iter().filter(|r| r["resourceType"] == "Patient") {
            if let (Some(id), Some(nhs)) = (r["id"].as_str(), transform::nhs_number(r)) {
                self.patients.insert(id.to_string(), nhs.to_string());
            }
        }
        let mut unknown = BTreeSet::new();
        for r in records {
            unknown.extend(transform::unknown_patients(r, &self.patients));
        }
        for id in unknown {
            match source.get(&format!("{base_url}/Patient/{id}")).await {
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

    /// Writes `records` and `cursor` in one transaction; if the store refuses
    /// them, writes each record alone and sets aside the ones it refuses, so
    /// that one bad record never blocks the feed.
    pub async fn write_page(&mut self, records: Vec<Value>, cursor: &Cursor) -> Result<(), SyncError> {
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut letters: Vec<(DeadLetter, Value)> = Vec::new();
        let mut unchanged = 0;
        for record in records {
            match transform::prepare(record.clone(), &self.provenance, &self.patients) {
                Ok(p) if self.already_written(&p) => unchanged += 1,
                Ok(p) => prepared.push(p),
                Err(error) => letters.push((letter(&record, error.to_string()), record)),
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

    /// Whether this version of the record was written and may be read again.
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

    async fn commit_cursor_if_moved(&mut self, cursor: &Cursor) -> Result<(), SyncError> {
        let stored = self.store.cursor(&self.key).await?;
        if stored == *cursor { Ok(()) } else { self.commit_cursor(cursor, Vec::new()).await }
    }

    /// Writes the cursor, with any dead letters it moves past, in one transaction.
    pub async fn commit_cursor(&mut self, cursor: &Cursor, letters: Vec<(DeadLetter, Value)>) -> Result<(), SyncError> {
        let meta = self.provenance.meta();
        let mut entries = vec![cursor.entry(&self.key, &meta)];
        entries.extend(letters.iter().map(|(letter, record)| letter.entry(&self.key, &meta, record)));
        self.store.commit(&transform::transaction(entries)).await?;
        for (letter, _) in letters {
            // Set aside once: a source reading it again skips it.
            if let Some(version) = &letter.source_version {
                self.seen.insert(letter.source_ref.clone(), (version.clone(), letter.at));
            }
            tracing::warn!(record = %letter.source_ref, reason = %letter.reason, "dead letter: a record did not reach the store");
            self.status.dead_letter(letter);
        }
        Ok(())
    }
}

/// A dead letter for a record that cannot even be prepared.
fn letter(record: &Value, reason: String) -> DeadLetter {
    let source_ref =
        format!("{}/{}", record["resourceType"].as_str().unwrap_or("Unknown"), record["id"].as_str().unwrap_or("-"));
    let source_version = record["meta"]["versionId"].as_str().map(str::to_string);
    DeadLetter { source_ref, source_version, reason, at: Timestamp::now() }
}
