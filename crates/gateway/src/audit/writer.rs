//! Writes audit events to the record store: queued in a bounded buffer,
//! sent in batches, retried until the store takes them.
//!
//! A queued event is held as its JSON text, not as a `serde_json::Value`
//! tree: a full buffer of trees costs several times the memory of the text,
//! and the text is all the store needs.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Events sent in one transaction at most.
const BATCH: usize = 128;
/// How long a batch of unconfirmed events waits for company. The store pays
/// per transaction as well as per event, so fewer, larger transactions leave
/// it more time for reads; no caller waits on an unconfirmed event, and a
/// confirmed one (a federation disclosure) ends the wait at once.
const LINGER: Duration = Duration::from_millis(50);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Why an audit event could not be written in time.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit buffer stayed full for the configured bound")]
    BufferFull,
    #[error("the audit event was not written within the configured bound")]
    NotWritten,
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("the audit event cannot be serialised: {0}")]
    Serialise(#[from] serde_json::Error),
}

struct Job {
    event: Box<RawValue>,
    written: Option<oneshot::Sender<()>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Job>,
    bound: Duration,
}

impl AuditWriter {
    /// Starts the writer posting to `store` (the FHIR base, ending in `/`).
    pub fn spawn(http: reqwest::Client, store: url::Url, buffer: usize, bound: Duration, metrics: Metrics) -> Self {
        let (queue, jobs) = mpsc::channel(buffer);
        tokio::spawn(run(http, store, jobs, metrics));
        Self { queue, bound }
    }

    /// Queues an event, waiting at most the bound for room.
    pub async fn write(&self, event: Value) -> Result<(), AuditError> {
        let event = serde_json::value::to_raw_value(&event)?;
        match tokio::time::timeout(self.bound, self.enqueue(Job { event, written: None })).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::BufferFull),
        }
    }

    /// Queues an event and waits until the store has it, at most the bound in all.
    pub async fn write_confirmed(&self, event: Value) -> Result<(), AuditError> {
        let event = serde_json::value::to_raw_value(&event)?;
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.enqueue(Job { event, written: Some(tx) }).await?;
            rx.await.map_err(|_| AuditError::Stopped)
        };
        tokio::time::timeout(self.bound, work).await.map_err(|_| AuditError::NotWritten)?
    }

    async fn enqueue(&self, job: Job) -> Result<(), AuditError> {
        self.queue.send(job).await.map_err(|_| AuditError::Stopped)
    }
}

async fn run(http: reqwest::Client, store: url::Url, mut jobs: mpsc::Receiver<Job>, metrics: Metrics) {
    while let Some(batch) = gather(&mut jobs).await {
        metrics.audit_queue.set(jobs.len() as i64);
        let body = transaction(&batch);
        let mut delay = FIRST_RETRY;
        loop {
            match post(&http, &store, &body).await {
                Ok(()) => break,
                Err(error) => {
                    metrics.audit_failures.inc();
                    tracing::error!(%error, events = batch.len(), retry_in_ms = delay.as_millis() as u64, "cannot write audit events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(LAST_RETRY);
                }
            }
        }
        metrics.audit_written.inc_by(batch.len() as u64);
        for job in batch {
            if let Some(written) = job.written {
                let _ = written.send(());
            }
        }
    }
}

/// The next batch: whatever is queued, up to `BATCH`, waiting up to `LINGER`
/// for more unless someone is waiting on an event already in it. `None` once
/// every handle is gone and the queue is empty.
async fn gather(jobs: &mut mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let first = jobs.recv().await?;
    let mut batch = vec![first];
    let deadline = Instant::now() + LINGER;
    while batch.len() < BATCH {
        if let Ok(job) = jobs.try_recv() {
            batch.push(job);
            continue;
        }
        if batch.iter().any(|job| job.written.is_some()) {
            break;
        }
        match tokio::time::timeout_at(deadline, jobs.recv()).await {
            Ok(Some(job)) => batch.push(job),
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    resource_type: &'static str,
    r#type: &'static str,
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    resource: &'a RawValue,
    request: EntryRequest,
}

#[derive(Serialize)]
struct EntryRequest {
    method: &'static str,
    url: &'static str,
}

/// One transaction: all of the batch is written, or none and it is retried whole.
fn transaction(batch: &[Job]) -> String {
    let bundle = Bundle {
        resource_type: "Bundle",
        r#type: "transaction",
        entry: batch
            .iter()
            .map(|job| Entry { resource: &job.event, request: EntryRequest { method: "POST", url: "AuditEvent" } })
            .collect(),
    };
    serde_json::to_string(&bundle).expect("borrowed JSON text and fixed strings serialise")
}

async fn post(http: &reqwest::Client, store: &url::Url, body: &str) -> Result<(), reqwest::Error> {
    http.post(store.clone())
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        // The store need not send back what it wrote: nobody reads it.
        .header("Prefer", "return=minimal")
        .body(body.to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u32, confirmed: bool) -> (Job, Option<oneshot::Receiver<()>>) {
        let event =
            serde_json::value::to_raw_value(&serde_json::json!({"resourceType": "AuditEvent", "id": n})).unwrap();
        if confirmed {
            let (tx, rx) = oneshot::channel();
            (Job { event, written: Some(tx) }, Some(rx))
        } else {
            (Job { event, written: None }, None)
        }
    }

    #[test]
    fn a_batch_is_one_transaction_of_posted_audit_events_in_queue_order() {
        let batch = vec![job(1, false).0, job(2, false).0];
        let bundle: Value = serde_json::from_str(&transaction(&batch)).unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["resource"]["id"], 1);
        assert_eq!(entries[1]["resource"]["id"], 2);
        assert!(entries.iter().all(|e| e["request"] == serde_json::json!({"method": "POST", "url": "AuditEvent"})));
    }

    #[tokio::test(start_paused = true)]
    async fn unconfirmed_events_linger_for_company_before_they_are_sent() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(job(1, false).0).await.unwrap();
        let later = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            later.send(job(2, false).0).await.unwrap();
        });
        let batch = gather(&mut rx).await.unwrap();
        assert_eq!(batch.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmed_event_is_sent_without_waiting_for_company() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(job(1, false).0).await.unwrap();
        tx.send(job(2, true).0).await.unwrap();
        let later = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            later.send(job(3, false).0).await.unwrap();
        });
        let batch = gather(&mut rx).await.unwrap();
        assert_eq!(batch.len(), 2);
    }
}
