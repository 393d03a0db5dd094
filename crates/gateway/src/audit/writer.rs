//! Writes audit events to the record store: queued in a bounded buffer,
//! sent in batches, retried until the store takes them.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Events sent in one transaction at most.
const BATCH: usize = 64;
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
}

struct Job {
    event: Value,
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
        self.enqueue(Job { event, written: None }).await
    }

    /// Queues an event and waits until the store has it, at most the bound in all.
    pub async fn write_confirmed(&self, event: Value) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        let bound = self.bound;
        let work = async {
            self.enqueue_unbounded(Job { event, written: Some(tx) }).await?;
            rx.await.map_err(|_| AuditError::Stopped)
        };
        tokio::time::timeout(bound, work).await.map_err(|_| AuditError::NotWritten)?
    }

    async fn enqueue(&self, job: Job) -> Result<(), AuditError> {
        match tokio::time::timeout(self.bound, self.enqueue_unbounded(job)).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::BufferFull),
        }
    }

    async fn enqueue_unbounded(&self, job: Job) -> Result<(), AuditError> {
        self.queue.send(job).await.map_err(|_| AuditError::Stopped)
    }
}

async fn run(http: reqwest::Client, store: url::Url, mut jobs: mpsc::Receiver<Job>, metrics: Metrics) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics.audit_queue.set(jobs.len() as i64);
        let mut delay = FIRST_RETRY;
        loop {
            match post(&http, &store, &batch).await {
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

async fn post(http: &reqwest::Client, store: &url::Url, batch: &[Job]) -> Result<(), reqwest::Error> {
    let (url, body) = if let [one] = batch {
        (store.join("AuditEvent").expect("a fixed relative path joins"), one.event.clone())
    } else {
        // One transaction: all of the batch is written, or none and it is retried whole.
        let entries: Vec<Value> = batch
            .iter()
            .map(|j| json!({"resource": j.event, "request": {"method": "POST", "url": "AuditEvent"}}))
            .collect();
        (store.clone(), json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    };
    http.post(url)
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
