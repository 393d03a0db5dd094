//! HL7 v2 over MLLP: each message mapped to a FHIR transaction Bundle
//! (`carerecord-hl7v2`), committed to the store, and only then acknowledged
//! `AA` (as Google's MLLP adapter does): an `AA` means the record is in the
//! store. A message that cannot be mapped gets `AE`/`AR` with the reason; one
//! the store refuses is kept as a dead letter and gets `AE`; a store that is
//! down gets `AE` too, so the sender sends the message again. Messages of one
//! patient are written in the order they arrive, whatever connection they
//! come on.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use carerecord_config::Mllp;
use carerecord_hl7v2::{AckCode, AckError, ErrorCode, Message, ack, map, mllp};
use jiff::Timestamp;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::cursor::DeadLetter;
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::transform::{self, Provenance};

/// Locks that keep each patient's messages in order; a patient's key always
/// picks the same lock, so memory stays bounded.
const ORDER_SHARDS: usize = 64;

/// The MLLP listener's shared state.
pub struct Listener {
    store: Store,
    provenance: Provenance,
    key: String,
    status: Arc<StatusBoard>,
    max_message_bytes: usize,
    order: Vec<Mutex<()>>,
    acks: AtomicU64,
}

impl Listener {
    pub fn new(config: &Mllp, store: Store, provenance: Provenance, key: String, status: Arc<StatusBoard>) -> Self {
        Self {
            store,
            provenance,
            key,
            status,
            max_message_bytes: config.max_message_bytes,
            order: (0..ORDER_SHARDS).map(|_| Mutex::new(())).collect(),
            acks: AtomicU64::new(0),
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(error) = this.connection(stream).await {
                    tracing::info!(%peer, %error, "MLLP connection closed");
                }
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut decoder = mllp::Decoder::new(self.max_message_bytes);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                if !decoder.is_idle() {
                    tracing::warn!("MLLP peer closed the connection inside a message; it was not acknowledged");
                }
                return Ok(());
            }
            decoder.push(&buffer[..n]);
            loop {
                match decoder.next_event() {
                    Ok(Some(mllp::Event::Frame(payload))) => {
                        let reply = self.handle(&payload).await;
                        stream.write_all(&mllp::frame(&reply)).await?;
                    }
                    Ok(Some(mllp::Event::Skipped(bytes))) => {
                        tracing::warn!(bytes, "skipped bytes outside an MLLP frame");
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // Too large: refuse it without reading it into memory, and carry on.
                        tracing::warn!(%error, "MLLP frame refused");
                        self.status.failed(Timestamp::now(), error.to_string());
                    }
                }
            }
        }
    }

    fn ack_id(&self) -> String {
        format!("ACK{:09}", self.acks.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The ACK for one message, after its records are committed (or not).
    pub async fn handle(&self, payload: &[u8]) -> String {
        let now = Timestamp::now();
        let stamp = now.strftime("%Y%m%d%H%M%S").to_string();
        let message = match Message::parse_bytes(payload) {
            Ok(m) => m,
            Err(error) => {
                self.status.failed(now, format!("unparsable HL7 v2 message: {error}"));
                return ack::build_reject_for_unparsable(payload, &error, &self.ack_id(), &stamp);
            }
        };
        let ctx = map::MapContext::new(self.provenance.source.clone(), self.provenance.provider_ods.clone());
        let mut bundle = match map::to_bundle(&message, &ctx) {
            Ok(b) => b,
            Err(error) => {
                self.status.failed(now, error.reason());
                return ack::build_ack(&message, error.ack_code(), Some(&error.to_ack_error()), &self.ack_id(), &stamp);
            }
        };
        self.label(&mut bundle);
        let entries = bundle["entry"].as_array().map_or(0, Vec::len) as u64;
        let shard = map::patient_key(&message).map_or(0, |k| shard_of(&k));
        let committed = {
            let _in_order = self.order[shard].lock().await;
            self.store.commit(&bundle).await
        };
        let control_id = message.header().control_id.unwrap_or_default();
        match committed {
            Ok(_) => {
                self.status.written(entries);
                self.status.succeeded(now);
                ack::build_ack(&message, AckCode::AA, None, &self.ack_id(), &stamp)
            }
            Err(StoreError::Refused { reason, .. }) => {
                let letter = DeadLetter {
                    source_ref: format!("HL7v2/{control_id}"),
                    source_version: None,
                    reason: reason.clone(),
                    at: now,
                };
                let raw = Value::String(String::from_utf8_lossy(payload).into_owned());
                let kept = self.keep(letter, &raw).await;
                let error = AckError {
                    code: ErrorCode::ApplicationInternalError,
                    location: None,
                    message: match kept {
                        Ok(()) => format!("the record store refused the message (kept as a dead letter): {reason}"),
                        Err(e) => format!("the record store refused the message: {reason}; {e}"),
                    },
                };
                ack::build_ack(&message, AckCode::AE, Some(&error), &self.ack_id(), &stamp)
            }
            Err(StoreError::Unavailable(reason)) => {
                self.status.failed(now, format!("record store unavailable: {reason}"));
                let error = AckError {
                    code: ErrorCode::ApplicationInternalError,
                    location: None,
                    message: "the record store is unavailable; send the message again".into(),
                };
                ack::build_ack(&message, AckCode::AE, Some(&error), &self.ack_id(), &stamp)
            }
        }
    }

    /// Security labels from the rules, by each record's type.
    fn label(&self, bundle: &mut Value) {
        for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
            let resource = &mut entry["resource"];
            let labels = self.provenance.labels_for(resource["resourceType"].as_str().unwrap_or_default());
            if !labels.is_empty() {
                resource["meta"]["security"] = Value::Array(labels);
            }
        }
    }

    async fn keep(&self, letter: DeadLetter, raw: &Value) -> Result<(), StoreError> {
        let entry = letter.entry(&self.key, &self.provenance.meta(), raw);
        self.store.commit(&transform::transaction(vec![entry])).await?;
        tracing::warn!(message = %letter.source_ref, reason = %letter.reason, "dead letter: the store refused a message");
        self.status.dead_letter(letter);
        Ok(())
    }
}

fn shard_of(key: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % ORDER_SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patients_key_always_picks_the_same_lock() {
        assert_eq!(shard_of("9990000018"), shard_of("9990000018"));
        assert!(shard_of("9990000018") < ORDER_SHARDS);
    }
}
