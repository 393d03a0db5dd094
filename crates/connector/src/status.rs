//! What the connector reports at `/status` (read by the operator into the
//! ProviderConnector's `status.sync`) and at `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::cursor::DeadLetter;

/// Dead letters listed in `/status` (all are kept in the store).
const RECENT_DEAD_LETTERS: usize = 20;

/// The `/status` document: version 1.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// `carerecord.dev/connector-status/v1`.
    pub api_version: &'static str,
    /// The source kind: FhirPoll, Hl7v2Mllp, Push or Unavailable.
    pub source: &'static str,
    /// When the last sync (a whole poll, or a message) was committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<Timestamp>,
    /// When the last attempt ended, successful or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Timestamp>,
    /// Per resource type, the newest `lastUpdated` written (poll sources).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cursor: BTreeMap<String, Timestamp>,
    /// Records the store accepted since the connector started.
    pub records_written: u64,
    /// Records skipped because that version was already written.
    pub records_unchanged: u64,
    /// Failed attempts since the connector started.
    pub errors: u64,
    /// The last failure, if the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Records the store refused since the connector started (each kept in the store).
    pub dead_letters: u64,
    /// The latest of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_dead_letters: Vec<DeadLetter>,
    /// Times the provider answered 429 or 503 and was waited for.
    pub throttled: u64,
    /// Why the source cannot run here, for an Unavailable source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Prometheus metrics, fixed label-free names.
#[derive(Default)]
struct Metrics {
    written: Counter,
    unchanged: Counter,
    errors: Counter,
    dead_letters: Counter,
    throttled: Counter,
    last_success: Gauge,
}

/// The shared status board every source writes to.
pub struct StatusBoard {
    status: Mutex<ConnectorStatus>,
    metrics: Metrics,
}

impl StatusBoard {
    pub fn new(source: &'static str) -> Self {
        let status =
            ConnectorStatus { api_version: "carerecord.dev/connector-status/v1", source, ..Default::default() };
        Self { status: Mutex::new(status), metrics: Metrics::default() }
    }

    /// Registers the metrics (prefix `connector_`).
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register("connector_records_written", "Records the store accepted", m.written.clone());
        registry.register("connector_records_unchanged", "Records skipped as already written", m.unchanged.clone());
        registry.register("connector_errors", "Failed sync attempts", m.errors.clone());
        registry.register("connector_dead_letters", "Records the store refused", m.dead_letters.clone());
        registry.register("connector_throttled", "Waits for 429 or 503 answers", m.throttled.clone());
        registry.register(
            "connector_last_success_timestamp_seconds",
            "When the last sync was committed",
            m.last_success.clone(),
        );
    }

    fn update(&self, f: impl FnOnce(&mut ConnectorStatus)) {
        // A poisoned lock only means a panic elsewhere; the status is still usable.
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut status);
    }

    pub fn snapshot(&self) -> ConnectorStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn written(&self, n: u64) {
        self.metrics.written.inc_by(n);
        self.update(|s| s.records_written += n);
    }

    pub fn unchanged(&self, n: u64) {
        self.metrics.unchanged.inc_by(n);
        self.update(|s| s.records_unchanged += n);
    }

    pub fn throttled(&self) {
        self.metrics.throttled.inc();
        self.update(|s| s.throttled += 1);
    }

    pub fn dead_letter(&self, letter: DeadLetter) {
        self.metrics.dead_letters.inc();
        self.update(|s| {
            s.dead_letters += 1;
            s.recent_dead_letters.push(letter);
            let excess = s.recent_dead_letters.len().saturating_sub(RECENT_DEAD_LETTERS);
            s.recent_dead_letters.drain(..excess);
        });
    }

    pub fn cursor(&self, resource_type: &str, since: Timestamp) {
        self.update(|s| {
            s.cursor.insert(resource_type.to_string(), since);
        });
    }

    pub fn succeeded(&self, now: Timestamp) {
        self.metrics.last_success.set(now.as_second());
        self.update(|s| {
            s.last_successful_sync = Some(now);
            s.last_attempt = Some(now);
            s.last_error = None;
        });
    }

    pub fn failed(&self, now: Timestamp, error: String) {
        self.metrics.errors.inc();
        self.update(|s| {
            s.errors += 1;
            s.last_attempt = Some(now);
            s.last_error = Some(error);
        });
    }

    pub fn unavailable(&self, reason: String) {
        self.update(|s| s.unavailable = Some(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> DeadLetter {
        DeadLetter {
            source_ref: format!("AllergyIntolerance/{n}"),
            source_version: None,
            reason: "invalid".into(),
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn status_lists_only_the_latest_dead_letters_but_counts_all() {
        let board = StatusBoard::new("FhirPoll");
        for n in 0..25 {
            board.dead_letter(letter(n));
        }
        let status = board.snapshot();
        assert_eq!(status.dead_letters, 25);
        assert_eq!(status.recent_dead_letters.len(), RECENT_DEAD_LETTERS);
        assert_eq!(status.recent_dead_letters.last().unwrap().source_ref, "AllergyIntolerance/24");
    }

    #[test]
    fn a_success_clears_the_last_error() {
        let board = StatusBoard::new("FhirPoll");
        board.failed(Timestamp::UNIX_EPOCH, "provider down".into());
        board.succeeded(Timestamp::UNIX_EPOCH);
        let status = board.snapshot();
        assert_eq!((status.errors, status.last_error), (1, None));
    }
}
