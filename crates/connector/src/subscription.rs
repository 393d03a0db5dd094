//! FHIR Subscription (rest-hook): the provider's server notifies the
//! connector, through the tenant's record gateway (which authenticates the
//! provider, as for pushes, and forwards `/inbound/<connector>` here); each
//! notification makes the connector read what changed from the provider and
//! write it through the shared write path. The listener only queues work and
//! answers at once; one reader task does the reads, so notifications never
//! race each other or the safety-net catch-up over the cursor. A catch-up
//! runs at start and every `intervalSeconds`: a notification missed while
//! the connector was down (or lost on the way) is read anyway.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::Notify;

use crate::notification::{self, Notice};
use crate::poll::Poller;
use crate::status::StatusBoard;

/// Largest notification accepted, in bytes (id-only notifications are small).
const MAX_NOTIFICATION: usize = 1024 * 1024;
/// Records named by notifications waiting to be read; past this, a catch-up
/// read (which finds them by `_lastUpdated`) replaces the list.
const MAX_PENDING_READS: usize = 10_000;

/// Work the notifications asked for and the reader has not done yet.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Pending {
    pub catch_up: bool,
    pub reads: BTreeSet<(String, String)>,
}

impl Pending {
    /// Adds what a notification asks for.
    pub fn add(&mut self, notice: Notice) {
        match notice {
            Notice::CatchUp => self.catch_up = true,
            Notice::Read(names) => {
                self.reads.extend(names);
                if self.reads.len() > MAX_PENDING_READS {
                    self.reads.clear();
                    self.catch_up = true;
                }
            }
            Notice::Nothing => {}
        }
    }

    fn is_empty(&self) -> bool {
        !self.catch_up && self.reads.is_empty()
    }
}

/// What the listener and the reader share.
pub struct Inbox {
    resources: Vec<String>,
    pending: Mutex<Pending>,
    wake: Notify,
    status: Arc<StatusBoard>,
}

impl Inbox {
    pub fn new(resources: Vec<String>, status: Arc<StatusBoard>) -> Self {
        // The first read is a catch-up: notifications sent while the connector was down are lost.
        let pending = Pending { catch_up: true, reads: BTreeSet::new() };
        Self { resources, pending: Mutex::new(pending), wake: Notify::new(), status }
    }

    fn add(&self, notice: Notice) {
        if notice == Notice::Nothing {
            return;
        }
        // A poisoned lock only means a panic elsewhere; the set is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).add(notice);
        // Stores a permit if the reader is busy: the work is picked up next.
        self.wake.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The notification listener's routes: a POST to any path (the gateway
/// forwards what follows `/inbound/<connector>`).
pub fn router(inbox: Arc<Inbox>) -> axum::Router {
    axum::Router::new()
        .route("/", post(notified))
        .route("/{*rest}", post(notified))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_NOTIFICATION))
        .with_state(inbox)
}

async fn notified(State(inbox): State<Arc<Inbox>>, body: axum::body::Bytes) -> Response {
    match notification::parse(&body, &inbox.resources) {
        Ok(notice) => {
            tracing::info!(notice = ?notice, "subscription notification");
            inbox.add(notice);
            StatusCode::OK.into_response()
        }
        Err(problem) => {
            let body = json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": problem.to_string()}]});
            (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/fhir+json")], Json(body)).into_response()
        }
    }
}

/// Does the reads notifications ask for, and a catch-up every `interval`.
pub async fn read_forever(mut poller: Poller, inbox: Arc<Inbox>, interval: Duration) {
    loop {
        let work = inbox.take();
        if !work.is_empty() {
            let result = async {
                if work.catch_up {
                    poller.poll_once().await?;
                }
                if !work.reads.is_empty() {
                    poller.read_named(&work.reads.iter().cloned().collect::<Vec<_>>()).await?;
                }
                Ok::<(), crate::writer::SyncError>(())
            }
            .await;
            match result {
                Ok(()) => inbox.status.succeeded(Timestamp::now()),
                Err(error) => {
                    tracing::warn!(error = %error, "reading what a notification named failed; it is kept for the next attempt");
                    inbox.status.failed(Timestamp::now(), error.to_string());
                    // Kept, not lost: retried on the next notification or catch-up.
                    let mut pending = inbox.pending.lock().unwrap_or_else(|e| e.into_inner());
                    pending.catch_up |= work.catch_up;
                    pending.reads.extend(work.reads);
                }
            }
        }
        tokio::select! {
            () = inbox.wake.notified() => {}
            () = tokio::time::sleep(interval) => inbox.add(Notice::CatchUp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: &str) -> Notice {
        Notice::Read(BTreeSet::from([("Patient".to_string(), id.to_string())]))
    }

    #[test]
    fn notifications_accumulate_until_the_reader_takes_them() {
        let mut pending = Pending::default();
        pending.add(named("p1"));
        pending.add(named("p2"));
        pending.add(Notice::Nothing);
        assert_eq!(pending.reads.len(), 2);
        assert!(!pending.catch_up);
    }

    #[test]
    fn too_many_named_records_become_one_catch_up() {
        let mut pending = Pending::default();
        for i in 0..=MAX_PENDING_READS {
            pending.add(named(&format!("p{i}")));
        }
        assert!(pending.catch_up && pending.reads.is_empty());
    }

    #[test]
    fn the_first_work_of_a_started_connector_is_a_catch_up() {
        let inbox = Inbox::new(
            vec!["Patient".into()],
            Arc::new(StatusBoard::new("gp", carerecord_config::SourceKind::FhirPoll)),
        );
        assert!(inbox.take().catch_up);
        assert!(inbox.take().is_empty());
    }
}
