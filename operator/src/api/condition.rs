//! `metav1.Condition` helpers shared by every kind's status.
//!
//! Conditions are compared semantically (by type, ignoring order and keeping
//! `lastTransitionTime` when nothing changed) so that a reconcile of an
//! unchanged world produces an identical status and therefore no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// The three values a condition's `status` may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    pub fn from_bool(ok: bool) -> Self {
        if ok { Self::True } else { Self::False }
    }
}

/// A condition as a reconcile decides it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into() }
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Merging and reading conditions on a status.
pub trait ConditionsExt {
    /// The condition of this type, if any.
    fn condition(&self, type_: &str) -> Option<&Condition>;
    /// True when the condition of this type has status `True`.
    fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

impl ConditionsExt for [Condition] {
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.iter().find(|c| c.type_ == type_)
    }
}

/// Builds the new condition list from what a reconcile observed. A condition
/// whose status did not change keeps its `lastTransitionTime`; the result is
/// sorted by type so that equal inputs give equal output.
pub fn merge(previous: &[Condition], observed: &[Observed], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = observed
        .iter()
        .map(|o| {
            let last_transition_time = match previous.condition(o.type_) {
                Some(prev) if prev.status == o.status.as_str() => prev.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: o.type_.to_string(),
                status: o.status.as_str().to_string(),
                reason: o.reason.clone(),
                message: truncate(&o.message, 1024),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Condition lists are equal when they hold the same conditions, in any order.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len() && a.iter().all(|c| b.condition(&c.type_) == Some(c))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Schema for `status.conditions`: a list map keyed by `type`, so server-side
/// apply merges entries instead of replacing the whole list.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = Vec::<Condition>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema.insert(
        "description".into(),
        "Machine-readable state, one entry per condition type, each with the generation it describes.".into(),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_last_transition_time() {
        let first = merge(&[], &[Observed::new("Ready", ConditionStatus::False, "Onboarding", "")], Some(1), &at(10));
        let second =
            merge(&first, &[Observed::new("Ready", ConditionStatus::False, "Onboarding", "")], Some(1), &at(20));
        assert_eq!(first, second);
    }

    #[test]
    fn changed_status_moves_last_transition_time() {
        let first = merge(&[], &[Observed::new("Ready", ConditionStatus::False, "Onboarding", "")], Some(1), &at(10));
        let second = merge(&first, &[Observed::new("Ready", ConditionStatus::True, "Ready", "")], Some(1), &at(20));
        assert_eq!(second[0].last_transition_time, at(20));
    }

    #[test]
    fn comparison_ignores_order() {
        let a = merge(
            &[],
            &[Observed::new("A", ConditionStatus::True, "R", ""), Observed::new("B", ConditionStatus::True, "R", "")],
            None,
            &at(1),
        );
        let mut b = a.clone();
        b.reverse();
        assert!(same(&a, &b));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let c = merge(&[], &[Observed::new("A", ConditionStatus::False, "R", long)], None, &at(1));
        assert!(c[0].message.len() <= 1024 + '…'.len_utf8());
    }
}
