//! Bulk Data Access (v2) `$export` with `_since`: kick off, follow the
//! status URL as the provider asks (`Retry-After`), download each NDJSON
//! file and write its records through the shared write path, and only once
//! every file committed move the cursor to the manifest's `transactionTime`.
//! A crash or a failure therefore replays the whole export (harmless:
//! writes are idempotent), and never skips what it held.

use std::time::Duration;

use carerecord_config::{ChangeFeed, ExportLevel, FhirPoll};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::cursor::{Cursor, DeadLetter};
use crate::export_manifest::{self, Manifest, ManifestError, NdjsonLines};
use crate::source::{SourceClient, SourceError, retry_after};
use crate::store::{outcome_text, without_url};
use crate::writer::{SyncError, Writer};

/// Wait between status requests when the provider does not say.
const DEFAULT_STATUS_WAIT: Duration = Duration::from_secs(5);

/// Why an export did not complete. The next one starts from the same `_since`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the provider refused the export kick-off ({status}): {reason}")]
    KickOff { status: u16, reason: String },
    #[error("the provider accepted the export without a Content-Location to follow")]
    NoStatusUrl,
    #[error("the provider's export failed ({status}): {reason}")]
    Failed { status: u16, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("downloading an export file failed ({status})")]
    Download { status: u16 },
    #[error("the export took longer than {0} s; abandoned")]
    TimedOut(u64),
    #[error("the provider's base URL cannot make an export URL: {0}")]
    Url(#[from] url::ParseError),
}

/// One connector's exporter.
pub struct Exporter {
    config: FhirPoll,
    level: ExportLevel,
    timeout: Duration,
    source: SourceClient,
    writer: Writer,
}

impl Exporter {
    pub fn new(config: FhirPoll, source: SourceClient, writer: Writer) -> Self {
        let (level, timeout_seconds) = match config.changes {
            ChangeFeed::BulkExport { level, timeout_seconds } => (level, timeout_seconds),
            // Not configured for export: the defaults, should it be asked to.
            _ => (ExportLevel::Patient, 3600),
        };
        Self { level, timeout: Duration::from_secs(timeout_seconds), config, source, writer }
    }

    /// Exports forever, `intervalSeconds` apart.
    pub async fn run(mut self) {
        loop {
            match self.export_once().await {
                Ok(()) => self.writer.status().succeeded(Timestamp::now()),
                Err(error) => {
                    tracing::warn!(error = %error, "export failed; the next one starts again from the cursor");
                    self.writer.status().failed(Timestamp::now(), error.to_string());
                }
            }
            tokio::time::sleep(Duration::from_secs(self.config.interval_seconds)).await;
        }
    }

    /// One export, from kick-off to the cursor moved past it.
    pub async fn export_once(&mut self) -> Result<(), ExportError> {
        let cursor = self.writer.cursor().await.map_err(SyncError::from)?;
        for (t, since) in &cursor.since {
            self.writer.status().cursor(t, *since);
        }
        let since = export_manifest::export_since(&cursor, &self.config.resources);
        let status_url = self.kick_off(since).await?;
        tracing::info!(since = ?since.map(|s| s.to_string()), "export kicked off");
        let deadline = Instant::now() + self.timeout;
        let result = match tokio::time::timeout_at(deadline, self.follow(&status_url, cursor, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::TimedOut(self.timeout.as_secs())),
        };
        // Done with, or given up: either way the provider may drop the job and its files.
        self.delete_job(&status_url).await;
        self.writer.forget_seen();
        result
    }

    async fn kick_off(&self, since: Option<Timestamp>) -> Result<String, ExportError> {
        let url = export_manifest::kick_off_url(&self.config.base_url, self.level, &self.config.resources, since)?;
        let response = self.source.send(Method::GET, &url, &[("Prefer", "respond-async")], true, None).await?;
        let status = response.status().as_u16();
        if status != 202 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(ExportError::KickOff { status, reason: outcome_text(&body) });
        }
        let location = response.headers().get("content-location").and_then(|v| v.to_str().ok());
        // A relative Content-Location is resolved against the kick-off URL.
        let location =
            location.and_then(|l| url::Url::parse(&url).ok()?.join(l).ok()).ok_or(ExportError::NoStatusUrl)?;
        Ok(location.into())
    }

    /// Follows the status URL to the manifest, writes every file, then
    /// moves the cursor (with the provider's export errors kept as dead letters).
    async fn follow(&mut self, status_url: &str, cursor: Cursor, deadline: Instant) -> Result<(), ExportError> {
        let manifest = self.manifest(status_url, deadline).await?;
        tracing::info!(
            transaction_time = %manifest.transaction_time, files = manifest.output.len(), errors = manifest.error.len(),
            "export complete at the provider"
        );
        for file in &manifest.output {
            self.write_file(file, &manifest, &cursor, deadline).await?;
        }
        let letters = self.provider_errors(&manifest, deadline).await?;
        let next = export_manifest::cursor_after(&cursor, &self.config.resources, manifest.transaction_time);
        self.writer.commit_cursor(&next, letters).await?;
        for (t, since) in &next.since {
            self.writer.status().cursor(t, *since);
        }
        Ok(())
    }

    async fn manifest(&self, status_url: &str, deadline: Instant) -> Result<Manifest, ExportError> {
        loop {
            let response = self.source.send(Method::GET, status_url, &[], true, None).await?;
            let status = response.status().as_u16();
            match status {
                202 => {
                    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                    let wait = retry_after(header("retry-after"), Timestamp::now()).unwrap_or(DEFAULT_STATUS_WAIT);
                    tracing::info!(
                        progress = header("x-progress").unwrap_or(""),
                        wait_ms = wait.as_millis() as u64,
                        "export in progress"
                    );
                    if Instant::now() + wait > deadline {
                        return Err(ExportError::TimedOut(self.timeout.as_secs()));
                    }
                    tokio::time::sleep(wait).await;
                }
                200 => {
                    let body = response.bytes().await.map_err(|e| SourceError::Body(without_url(&e)))?;
                    return Ok(Manifest::parse(&body, &self.config.resources)?);
                }
                _ => {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    return Err(ExportError::Failed { status, reason: outcome_text(&body) });
                }
            }
        }
    }

    /// Downloads one file, with the bearer token only when the manifest
    /// says the files need it (a file server of another party never sees it).
    async fn download(
        &self,
        url: &str,
        manifest: &Manifest,
        deadline: Instant,
    ) -> Result<reqwest::Response, ExportError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let headers = [("Accept", "application/fhir+ndjson")];
        let response = self.source.send(Method::GET, url, &headers, manifest.requires_access_token, Some(left)).await?;
        if !response.status().is_success() {
            return Err(ExportError::Download { status: response.status().as_u16() });
        }
        Ok(response)
    }

    /// Writes one NDJSON file, `pageSize` records a transaction. The cursor
    /// written with each is the one before the export: nothing moves yet.
    async fn write_file(
        &mut self,
        file: &export_manifest::ExportFile,
        manifest: &Manifest,
        cursor: &Cursor,
        deadline: Instant,
    ) -> Result<(), ExportError> {
        let mut response = self.download(&file.url, manifest, deadline).await?;
        let mut lines = NdjsonLines::default();
        let mut batch: Vec<Value> = Vec::new();
        let mut line_number = 0usize;
        let page_size = self.config.page_size as usize;
        loop {
            let chunk = response.chunk().await.map_err(|e| SourceError::Http(without_url(&e)))?;
            let complete = match &chunk {
                Some(bytes) => lines.push(bytes),
                None => std::mem::take(&mut lines).finish(),
            };
            for line in complete {
                line_number += 1;
                match serde_json::from_slice::<Value>(&line) {
                    Ok(record) => batch.push(record),
                    Err(e) => self.unreadable_line(file, line_number, &line, e, cursor).await?,
                }
                if batch.len() >= page_size {
                    self.write_batch(std::mem::take(&mut batch), cursor).await?;
                }
            }
            if chunk.is_none() {
                break;
            }
        }
        if !batch.is_empty() {
            self.write_batch(batch, cursor).await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self, records: Vec<Value>, cursor: &Cursor) -> Result<(), ExportError> {
        self.writer.learn_patients(&records, &self.source, &self.config.base_url).await?;
        self.writer.write_page(records, cursor).await?;
        Ok(())
    }

    /// A line that is not JSON cannot be a record: it is kept as a dead letter.
    async fn unreadable_line(
        &mut self,
        file: &export_manifest::ExportFile,
        line_number: usize,
        line: &[u8],
        error: serde_json::Error,
        cursor: &Cursor,
    ) -> Result<(), ExportError> {
        let letter = DeadLetter {
            source_ref: format!("{}/line-{line_number}", file.resource_type),
            source_version: None,
            reason: format!("an export line that is not JSON: {error}"),
            at: Timestamp::now(),
        };
        let text = Value::String(String::from_utf8_lossy(line).into_owned());
        self.writer.commit_cursor(cursor, vec![(letter, text)]).await?;
        Ok(())
    }

    /// The manifest's error files: each OperationOutcome becomes a dead
    /// letter, written with the cursor that moves past this export, so what
    /// the provider could not export is reported (in status and the store)
    /// and never silently dropped.
    async fn provider_errors(
        &self,
        manifest: &Manifest,
        deadline: Instant,
    ) -> Result<Vec<(DeadLetter, Value)>, ExportError> {
        let mut letters = Vec::new();
        for file in &manifest.error {
            let body = self
                .download(&file.url, manifest, deadline)
                .await?
                .bytes()
                .await
                .map_err(|e| SourceError::Http(without_url(&e)))?;
            let mut lines = NdjsonLines::default();
            let mut all = lines.push(&body);
            all.extend(lines.finish());
            for line in all {
                let outcome = serde_json::from_slice::<Value>(&line)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&line).into_owned()));
                letters.push((
                    DeadLetter {
                        source_ref: format!("OperationOutcome/export-error-{}", letters.len() + 1),
                        source_version: Some(manifest.transaction_time.to_string()),
                        reason: format!("the provider could not export: {}", outcome_text(&outcome)),
                        at: Timestamp::now(),
                    },
                    outcome,
                ));
            }
        }
        Ok(letters)
    }

    /// Tells the provider it may drop the job and its files; a failure only
    /// leaves them to the provider's own expiry.
    async fn delete_job(&self, status_url: &str) {
        match self.source.send(Method::DELETE, status_url, &[], true, None).await {
            Ok(response) if response.status().is_success() || response.status().as_u16() == 404 => {}
            Ok(response) => {
                tracing::info!(status = response.status().as_u16(), "the provider did not delete the export job")
            }
            Err(error) => tracing::info!(error = %error, "the provider did not delete the export job"),
        }
    }
}
