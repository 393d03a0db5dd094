//! Kubernetes Events for what a person would want to see in `kubectl describe`.
//! One shared recorder, so repeated Events aggregate instead of piling up.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { recorder: Recorder::new(client, reporter) }
    }

    /// Publishes an Event. Failing to publish is logged, never fatal: Events
    /// are for people, and must not block reconciliation.
    pub async fn publish(&self, object: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
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
