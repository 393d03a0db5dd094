//! Where a connector has got to, kept in the tenant's store itself: one
//! `Basic` record per connector, written in the same transaction as the
//! records it covers. A crash therefore never leaves a cursor ahead of what
//! was written (replays, never skips), and no other state has to survive
//! the connector's pod. Dead letters are `Basic` records too, written in the
//! transaction that moves the cursor past them, so none is ever lost.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

/// Identifier system of cursor records; the value is `<tenant>/<connector>`.
pub const CURSOR_SYSTEM: &str = "https://carerecord.dev/fhir/sid/connector-cursor";
/// Identifier system of dead letters; the value is `<tenant>/<connector>/<type>/<id>/<version>`.
pub const DEAD_LETTER_SYSTEM: &str = "https://carerecord.dev/fhir/sid/connector-dead-letter";
/// Code system of the `Basic.code` of both.
pub const CODE_SYSTEM: &str = "https://carerecord.dev/fhir/CodeSystem/connector-record";
const EXTENSION: &str = "https://carerecord.dev/fhir/StructureDefinition/connector";

/// Per resource type, the newest `lastUpdated` written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub since: BTreeMap<String, Timestamp>,
}

impl Cursor {
    /// Moves a type's cursor forward (never back).
    pub fn advance(&mut self, resource_type: &str, to: Timestamp) {
        let entry = self.since.entry(resource_type.to_string()).or_insert(to);
        if to > *entry {
            *entry = to;
        }
    }

    /// The cursor a `Basic` record holds; an empty cursor for anything else.
    pub fn from_resource(resource: &Value) -> Self {
        let mut cursor = Cursor::default();
        for ext in resource["extension"].as_array().into_iter().flatten().filter(|e| e["url"] == EXTENSION) {
            let parts = ext["extension"].as_array().cloned().unwrap_or_default();
            let part = |name: &str| parts.iter().find(|p| p["url"] == name).cloned().unwrap_or(Value::Null);
            let (Some(t), Some(since)) = (
                part("resourceType")["valueCode"].as_str().map(str::to_string),
                part("since")["valueInstant"].as_str().and_then(|s| s.parse::<Timestamp>().ok()),
            ) else {
                continue;
            };
            cursor.since.insert(t, since);
        }
        cursor
    }

    /// The `Basic` record holding this cursor.
    pub fn to_resource(&self, key: &str, meta: &Value) -> Value {
        let extension: Vec<Value> = self
            .since
            .iter()
            .map(|(t, since)| {
                json!({"url": EXTENSION, "extension": [
                    {"url": "resourceType", "valueCode": t},
                    {"url": "since", "valueInstant": since.to_string()},
                ]})
            })
            .collect();
        json!({
            "resourceType": "Basic",
            "meta": meta,
            "identifier": [{"system": CURSOR_SYSTEM, "value": key}],
            "code": {"coding": [{"system": CODE_SYSTEM, "code": "cursor", "display": "connector cursor"}]},
            "extension": extension,
        })
    }

    /// The transaction entry writing this cursor.
    pub fn entry(&self, key: &str, meta: &Value) -> Value {
        json!({
            "resource": self.to_resource(key, meta),
            "request": {"method": "PUT", "url": cursor_url(key)},
        })
    }
}

/// Search URL (relative to the store's base) of a connector's cursor record.
pub fn cursor_url(key: &str) -> String {
    format!("Basic?identifier={CURSOR_SYSTEM}|{key}")
}

/// A record the store refused, kept so that it is reported and never lost.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// `<type>/<id>` in the provider's system.
    pub source_ref: String,
    /// Its version there, when the provider says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// What the store said.
    pub reason: String,
    /// When it was set aside.
    pub at: Timestamp,
}

impl DeadLetter {
    /// The transaction entry keeping it: a `Basic` record naming the source
    /// record, the reason and the record itself (as JSON text).
    pub fn entry(&self, key: &str, meta: &Value, record: &Value) -> Value {
        let id = format!("{key}/{}/{}", self.source_ref, self.source_version.as_deref().unwrap_or("-"));
        json!({
            "resource": {
                "resourceType": "Basic",
                "meta": meta,
                "identifier": [{"system": DEAD_LETTER_SYSTEM, "value": id}],
                "code": {"coding": [{"system": CODE_SYSTEM, "code": "dead-letter", "display": "record the store refused"}]},
                "created": self.at.strftime("%Y-%m-%d").to_string(),
                "extension": [{"url": EXTENSION, "extension": [
                    {"url": "sourceReference", "valueString": self.source_ref},
                    {"url": "reason", "valueString": self.reason},
                    {"url": "record", "valueString": record.to_string()},
                ]}],
            },
            "request": {"method": "PUT", "url": format!("Basic?identifier={DEAD_LETTER_SYSTEM}|{id}")},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_cursor_survives_its_record() {
        let mut cursor = Cursor::default();
        cursor.advance("Patient", at("2026-11-20T10:00:00Z"));
        cursor.advance("AllergyIntolerance", at("2026-11-21T09:30:00.125Z"));
        let record = cursor.to_resource("cheshire-merseyside/alder", &json!({}));
        assert_eq!(Cursor::from_resource(&record), cursor);
    }

    #[test]
    fn a_cursor_never_moves_back() {
        let mut cursor = Cursor::default();
        cursor.advance("Patient", at("2026-11-20T10:00:00Z"));
        cursor.advance("Patient", at("2026-11-19T10:00:00Z"));
        assert_eq!(cursor.since["Patient"], at("2026-11-20T10:00:00Z"));
    }

    #[test]
    fn a_record_that_is_not_a_cursor_reads_as_an_empty_cursor() {
        assert_eq!(Cursor::from_resource(&json!({"resourceType": "Basic"})), Cursor::default());
    }

    #[test]
    fn the_cursor_entry_is_a_conditional_update_on_the_connectors_key() {
        let entry = Cursor::default().entry("cm/alder", &json!({}));
        assert_eq!(
            entry["request"]["url"],
            "Basic?identifier=https://carerecord.dev/fhir/sid/connector-cursor|cm/alder"
        );
    }
}
