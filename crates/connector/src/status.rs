//! What the connector reports at `/status` (read by the operator into the
//! ProviderConnector's `status.sync`) and at `/metrics`.

use std::sync::Mutex;

pub use carerecord_config::ConnectorStatus;
use carerecord_config::{DeadLetterSummary, SourceKind};

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cursor::DeadLetter;

/// Dead letters listed in `/status` (all are kept in the store).
const RECENT_DEAD_LETTERS: usize = 20;

/// A failure message is cut to this many characters in `/status` (the
/// operator copies it into the ProviderConnector's status).
const MAX_ERROR_CHARS: usize = 512;

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
    pub fn new(connector: &str, source: SourceKind) -> Self {
        let status = ConnectorStatus { connector: connector.to_string(), source, ..Default::default() };
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
            s.recent_dead_letters.push(DeadLetterSummary {
                source_ref: letter.source_ref,
                source_version: letter.source_version,
                reason: cut(letter.reason),
                at: letter.at.to_string(),
            });
            let excess = s.recent_dead_letters.len().saturating_sub(RECENT_DEAD_LETTERS);
            s.recent_dead_letters.drain(..excess);
        });
    }

    pub fn cursor(&self, resource_type: &str, since: Timestamp) {
        self.update(|s| {
            s.cursor.insert(resource_type.to_string(), since.to_string());
        });
    }

    pub fn succeeded(&self, now: Timestamp) {
        self.metrics.last_success.set(now.as_second());
        self.update(|s| {
            s.last_successful_sync = Some(now.to_string());
            s.last_attempt = Some(now.to_string());
            s.last_error = None;
        });
    }

    pub fn failed(&self, now: Timestamp, error: String) {
        self.metrics.errors.inc();
        self.update(|s| {
            s.errors += 1;
            s.last_attempt = Some(now.to_string());
            s.last_error = Some(cut(error));
        });
    }

    pub fn unavailable(&self, reason: String) {
        self.update(|s| s.unavailable = Some(reason));
    }
}

/// At most `MAX_ERROR_CHARS` characters, on a character boundary.
fn cut(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_ERROR_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
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
        let board = StatusBoard::new("gp", SourceKind::FhirPoll);
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
        let board = StatusBoard::new("gp", SourceKind::FhirPoll);
        board.failed(Timestamp::UNIX_EPOCH, "provider down".into());
        board.succeeded(Timestamp::UNIX_EPOCH);
        let status = board.snapshot();
        assert_eq!((status.errors, status.last_error), (1, None));
    }
}

#[cfg(test)]
mod contract {
    use super::*;

    #[test]
    fn the_status_document_is_the_contract_the_operator_reads() {
        let board = StatusBoard::new("gp", SourceKind::Hl7v2Mllp);
        board.written(3);
        board.succeeded(Timestamp::UNIX_EPOCH);
        let text = serde_json::to_string(&board.snapshot()).unwrap();
        let read: ConnectorStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(read.connector, "gp");
        assert_eq!(read.records_written, 3);
        assert_eq!(read.last_successful_sync.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert!(text.contains("\"apiVersion\":\"carerecord.dev/connector-status/v1\""), "{text}");
    }

    #[test]
    fn a_long_failure_is_cut_on_a_character_boundary() {
        let board = StatusBoard::new("gp", SourceKind::FhirPoll);
        board.failed(Timestamp::UNIX_EPOCH, "é".repeat(2000));
        let error = board.snapshot().last_error.unwrap();
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS + 1);
    }
}
