//! Kubernetes Events for what a person would want to see in `kubectl describe`.
//!
//! Repeats aggregate as kube's `Recorder` aggregates them: an Event with
//! the type, reason and action of one published for the same object in the
//! last six minutes is that Event again, its series count raised by a PATCH,
//! rather than a new object. What is remembered of each Event is its name,
//! namespace, count and time (`Recent`), where kube's recorder keeps the
//! whole Event (references, note, metadata: about 4 KiB per connector that
//! became ready in the last six minutes, measured at 20 x 20) and prunes
//! them only when it publishes again, so a platform that has gone quiet
//! keeps them all. The Events themselves are written through kube's client.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use serde_json::json;

use super::children::hash_of;

/// How long a published Event takes repeats (kube's recorder's span).
const SERIES_SPAN: SignedDuration = SignedDuration::from_mins(6);

/// How often what is remembered is swept of Events past `SERIES_SPAN`.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// An Event published within `SERIES_SPAN`: enough to raise its count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Recent {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// What repeats of one Event share: whom it regards and what it says
/// happened (its note may differ, as kube's recorder lets it).
fn series_key(regarding: &ObjectReference, warning: bool, reason: &str, action: &str) -> u64 {
    let who = (&regarding.api_version, &regarding.kind, &regarding.namespace, &regarding.name, &regarding.uid);
    hash_of((who, warning, reason, action))
}

/// The Events this operator published recently, by `series_key`.
#[derive(Debug, Default)]
struct Remembered {
    recent: HashMap<u64, Recent>,
    swept: Option<Timestamp>,
}

impl Remembered {
    /// The Event that a publication at `now` repeats, if there is one.
    fn repeats(&mut self, key: u64, now: Timestamp) -> Option<Recent> {
        if self.swept.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            self.recent.retain(|_, r| now.duration_since(r.last) < SERIES_SPAN);
            self.swept = Some(now);
        }
        self.recent.get(&key).filter(|r| now.duration_since(r.last) < SERIES_SPAN).cloned()
    }

    fn published(&mut self, key: u64, recent: Recent) {
        self.recent.insert(key, recent);
    }
}

pub struct Events {
    client: Client,
    reporter: Reporter,
    remembered: Mutex<Remembered>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, remembered: Mutex::default() }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an Event. Failing to publish is logged, never fatal: Events
    /// are for people, and must not block reconciliation.
    pub async fn publish(&self, object: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        if let Err(error) = self.try_publish(object, warning, reason, action, truncate(note, 1024)).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }

    async fn try_publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = series_key(regarding, warning, reason, action);
        // Cluster-scoped objects' Events live in "default", as kube's recorder puts them.
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let repeat = self.remembered().repeats(key, now);
        let raised = match repeat {
            Some(mut recent) => {
                recent.count += 1;
                recent.last = now;
                let series = json!({"series": {"count": recent.count, "lastObservedTime": MicroTime(now)}});
                match Api::<K8sEvent>::namespaced(self.client.clone(), &recent.namespace)
                    .patch(&recent.name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                {
                    Ok(_) => Some(recent),
                    // Deleted meanwhile (by someone, or the API server's
                    // Event TTL): published afresh.
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let recent = match raised {
            Some(recent) => recent,
            None => {
                // Named as kube's recorder names them.
                let controller = &self.reporter.controller;
                let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(controller), now.as_nanosecond());
                let event = K8sEvent {
                    metadata: ObjectMeta {
                        namespace: Some(namespace.into()),
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(action.into()),
                    reason: Some(reason.into()),
                    note: Some(note),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(controller.clone()),
                    reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
                    type_: Some(if warning { "Warning" } else { "Normal" }.into()),
                    ..K8sEvent::default()
                };
                Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
                    .create(&PostParams::default(), &event)
                    .await?;
                Recent { namespace: namespace.into(), name: name.into(), count: 1, last: now }
            }
        };
        self.remembered().published(key, recent);
        Ok(())
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("carerecord.dev/v1alpha1".into()),
            kind: Some("ProviderConnector".into()),
            namespace: Some("ics-a".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_mins(minutes)
    }

    fn published(remembered: &mut Remembered, key: u64, when: Timestamp) {
        remembered.published(key, Recent { namespace: "ics-a".into(), name: "gp.1".into(), count: 1, last: when });
    }

    #[test]
    fn the_same_reason_for_the_same_object_within_six_minutes_is_a_repeat() {
        let mut remembered = Remembered::default();
        let key = series_key(&connector("gp"), false, "Ready", "Reconcile");
        published(&mut remembered, key, at(0));
        assert_eq!(remembered.repeats(key, at(5)).map(|r| r.name), Some("gp.1".into()));
    }

    #[test]
    fn an_event_past_six_minutes_is_published_afresh_and_forgotten() {
        let mut remembered = Remembered::default();
        let key = series_key(&connector("gp"), false, "Ready", "Reconcile");
        published(&mut remembered, key, at(0));
        assert_eq!(remembered.repeats(key, at(7)), None);
        assert!(remembered.recent.is_empty(), "the sweep let it go");
    }

    #[test]
    fn another_object_reason_type_or_action_is_another_event() {
        let key = series_key(&connector("gp"), false, "Ready", "Reconcile");
        assert_ne!(key, series_key(&connector("adt"), false, "Ready", "Reconcile"));
        assert_ne!(key, series_key(&connector("gp"), true, "Ready", "Reconcile"));
        assert_ne!(key, series_key(&connector("gp"), false, "Degraded", "Reconcile"));
        assert_ne!(key, series_key(&connector("gp"), false, "Ready", "Validate"));
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 3), "é");
    }
}
