//! Owners whose last reconcile found every child in place, remembered by
//! what it rendered from and what it found.
//!
//! Rendering is pure: the same owner, spec and facts give the same
//! children. When those and the children as the watches see them are what
//! the last reconcile saw, and that reconcile wrote and pruned nothing, this
//! one would render the same objects, find each in place and write nothing:
//! so it need not render them at all (a tenant's render is most of a no-op
//! reconcile: its record store settings, gateway contract and sharing
//! policy serialised and hashed). Status is still concluded from the
//! children every time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use super::apply::Live;
use super::children;

/// The hash of everything a render reads. Build it with `inputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs(u64);

/// The hash of an owner's children as one reconcile saw them. Build it
/// with `seen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen(u64);

/// The hash of what a render reads: `parts` must hold every one of its
/// inputs (the owner's identity and spec generation, and the facts).
pub fn inputs(parts: impl Hash) -> Inputs {
    Inputs(children::hash_of(parts))
}

/// What decides whether an apply finds a child in place: which children
/// there are, each one's fingerprint (what anyone's write changes) and
/// whether it is being deleted. Status changes of a child change nothing
/// here: they never make an apply write.
pub fn seen(live: &Live) -> Seen {
    let each: Vec<_> = live.iter().map(|(key, kept)| (key, kept.fingerprint(), kept.deleting())).collect();
    Seen(children::hash_of(each))
}

/// By owner uid: the inputs and children of the last reconcile that wrote
/// and pruned nothing, and what it concluded besides the children (`T`).
pub struct Steady<T> {
    last: Mutex<HashMap<String, (Inputs, Seen, T)>>,
}

impl<T> Default for Steady<T> {
    fn default() -> Self {
        Self { last: Mutex::default() }
    }
}

impl<T: Clone> Steady<T> {
    /// What the last in-place reconcile of `owner` concluded, if it saw
    /// exactly these inputs and children.
    pub fn holds(&self, owner: &str, inputs: Inputs, seen: Seen) -> Option<T> {
        let last = self.lock();
        last.get(owner).filter(|(i, s, _)| *i == inputs && *s == seen).map(|(_, _, t)| t.clone())
    }

    /// Records a reconcile of `owner` that wrote and pruned nothing.
    pub fn record(&self, owner: &str, inputs: Inputs, seen: Seen, outcome: T) {
        self.lock().insert(owner.to_string(), (inputs, seen, outcome));
    }

    /// Forgets `owner`: it wrote, or is gone.
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Inputs, Seen, T)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;
    use serde_json::json;

    use super::*;
    use crate::controller::apply::Key;
    use crate::render::child::ChildKind;

    fn live(labels: serde_json::Value, status: serde_json::Value) -> Live {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "record-store", "namespace": "ics-cheshire", "generation": 3, "labels": labels},
            "status": status,
        }))
        .unwrap();
        let mut live = Live::default();
        live.insert(
            Key { kind: ChildKind::Deployment, namespace: Some("ics-cheshire".into()), name: "record-store".into() },
            object,
        );
        live
    }

    #[test]
    fn a_record_holds_only_for_the_inputs_and_children_it_was_made_from() {
        let steady = Steady::default();
        let (i, s) = (inputs(("uid-1", 3_i64)), seen(&live(json!({"a": "1"}), json!({}))));
        steady.record("uid-1", i, s, "held nothing");
        assert_eq!(steady.holds("uid-1", i, s), Some("held nothing"));
        assert_eq!(steady.holds("uid-1", inputs(("uid-1", 4_i64)), s), None);
        assert_eq!(steady.holds("uid-1", i, seen(&live(json!({"a": "2"}), json!({})))), None);
        assert_eq!(steady.holds("uid-2", i, s), None);
    }

    #[test]
    fn a_forgotten_owner_holds_nothing() {
        let steady = Steady::default();
        let (i, s) = (inputs("x"), seen(&Live::default()));
        steady.record("uid-1", i, s, ());
        steady.forget("uid-1");
        assert_eq!(steady.holds("uid-1", i, s), None);
    }

    #[test]
    fn a_label_written_by_anyone_changes_what_was_seen() {
        assert_ne!(seen(&live(json!({"a": "1"}), json!({}))), seen(&live(json!({"a": "1", "b": "2"}), json!({}))));
    }

    #[test]
    fn a_status_change_of_a_child_leaves_what_was_seen_as_it_was() {
        assert_eq!(
            seen(&live(json!({"a": "1"}), json!({"availableReplicas": 0}))),
            seen(&live(json!({"a": "1"}), json!({"availableReplicas": 2}))),
        );
    }
}
