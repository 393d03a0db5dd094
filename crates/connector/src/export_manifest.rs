//! Bulk Data Access (v2) facts the exporter relies on, as pure functions:
//! the kick-off URL, the completion manifest, the `_since` rule and NDJSON
//! framing. The requests themselves are in [`crate::bulk_export`].

use carerecord_config::ExportLevel;
use jiff::Timestamp;
use serde::Deserialize;

use crate::cursor::Cursor;

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the export manifest is not JSON of the Bulk Data shape: {0}")]
    Shape(String),
    #[error("the export manifest's transactionTime {0:?} is not an instant")]
    TransactionTime(String),
    #[error("the export manifest names a file at {0:?}, which is not an absolute http(s) URL")]
    FileUrl(String),
}

/// One file of an export: its resource type and where to download it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExportFile {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
}

/// The completion manifest: what the export holds and as of when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The server's time when the export ran: everything changed up to and
    /// including it is in the files, so the next export starts here.
    pub transaction_time: Timestamp,
    /// Whether the files need the bearer token (else the token must not be sent).
    pub requires_access_token: bool,
    /// Files of records, Patients first so that references to them resolve.
    pub output: Vec<ExportFile>,
    /// Files of OperationOutcomes: what the server could not export.
    pub error: Vec<ExportFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    transaction_time: String,
    #[serde(default)]
    requires_access_token: bool,
    #[serde(default)]
    output: Vec<ExportFile>,
    #[serde(default)]
    error: Vec<ExportFile>,
}

impl Manifest {
    /// Reads a manifest, keeping only the output files of `resources` (a
    /// server may export more than was asked for; the connector writes only
    /// what it is configured to bring).
    pub fn parse(body: &[u8], resources: &[String]) -> Result<Self, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(body).map_err(|e| ManifestError::Shape(e.to_string()))?;
        let transaction_time = raw
            .transaction_time
            .parse::<Timestamp>()
            .map_err(|_| ManifestError::TransactionTime(raw.transaction_time.clone()))?;
        if let Some(bad) = raw.output.iter().chain(&raw.error).find(|f| !is_absolute_http(&f.url)) {
            return Err(ManifestError::FileUrl(bad.url.clone()));
        }
        let mut output: Vec<ExportFile> =
            raw.output.into_iter().filter(|f| resources.contains(&f.resource_type)).collect();
        // A stable sort: the server's order of files within a type is kept.
        output.sort_by_key(|f| f.resource_type != "Patient");
        Ok(Manifest { transaction_time, requires_access_token: raw.requires_access_token, output, error: raw.error })
    }
}

fn is_absolute_http(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// `_since` for the next export: the oldest of the exported types' cursors,
/// or None (export everything) when any type has none yet (the first
/// export, or a type added since the last one).
pub fn export_since(cursor: &Cursor, resources: &[String]) -> Option<Timestamp> {
    resources.iter().map(|t| cursor.since.get(t).copied()).collect::<Option<Vec<_>>>()?.into_iter().min()
}

/// The cursor once every file of an export committed: each exported type
/// moves to the manifest's `transactionTime` (never back).
pub fn cursor_after(cursor: &Cursor, resources: &[String], transaction_time: Timestamp) -> Cursor {
    let mut next = cursor.clone();
    for t in resources {
        next.advance(t, transaction_time);
    }
    next
}

/// The kick-off request's URL.
pub fn kick_off_url(
    base_url: &str,
    level: ExportLevel,
    resources: &[String],
    since: Option<Timestamp>,
) -> Result<String, url::ParseError> {
    let path = match level {
        ExportLevel::Patient => "Patient/$export",
        ExportLevel::System => "$export",
    };
    let mut url = url::Url::parse(&format!("{base_url}/{path}"))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("_outputFormat", "application/fhir+ndjson");
        query.append_pair("_type", &resources.join(","));
        if let Some(since) = since {
            query.append_pair("_since", &since.to_string());
        }
    }
    Ok(url.into())
}

/// Splits a byte stream into NDJSON lines as chunks arrive (a line may span
/// chunks); blank lines are skipped.
#[derive(Default)]
pub struct NdjsonLines {
    partial: Vec<u8>,
}

impl NdjsonLines {
    /// The complete lines `chunk` ends.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.partial.extend_from_slice(chunk);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        split_lines(&complete)
    }

    /// The last line, when the stream did not end with a newline.
    pub fn finish(self) -> Vec<Vec<u8>> {
        split_lines(&self.partial)
    }
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const MANIFEST: &str = r#"{
        "transactionTime": "2026-11-25T10:00:00.123Z",
        "request": "https://ehr.example.nhs.uk/fhir/Patient/$export?_type=Patient,Condition",
        "requiresAccessToken": true,
        "output": [
            {"type": "Condition", "url": "https://ehr.example.nhs.uk/files/c1.ndjson", "count": 10},
            {"type": "Patient", "url": "https://ehr.example.nhs.uk/files/p1.ndjson"},
            {"type": "Provenance", "url": "https://ehr.example.nhs.uk/files/x.ndjson"},
            {"type": "Patient", "url": "https://ehr.example.nhs.uk/files/p2.ndjson"}
        ],
        "error": [{"type": "OperationOutcome", "url": "https://ehr.example.nhs.uk/files/err.ndjson"}]
    }"#;

    #[test]
    fn a_manifest_gives_its_transaction_time_token_rule_and_files() {
        let m = Manifest::parse(MANIFEST.as_bytes(), &types(&["Patient", "Condition"])).unwrap();
        assert_eq!(m.transaction_time, at("2026-11-25T10:00:00.123Z"));
        assert!(m.requires_access_token);
        assert_eq!(m.error.len(), 1);
    }

    #[test]
    fn a_manifest_lists_patient_files_first_and_only_the_asked_types() {
        let m = Manifest::parse(MANIFEST.as_bytes(), &types(&["Patient", "Condition"])).unwrap();
        let urls: Vec<&str> = m.output.iter().map(|f| f.url.rsplit('/').next().unwrap()).collect();
        assert_eq!(urls, ["p1.ndjson", "p2.ndjson", "c1.ndjson"]);
    }

    #[test]
    fn a_manifest_without_files_or_the_token_flag_is_an_empty_export() {
        let m = Manifest::parse(br#"{"transactionTime": "2026-11-25T10:00:00Z"}"#, &types(&["Patient"])).unwrap();
        assert!(!m.requires_access_token && m.output.is_empty() && m.error.is_empty());
    }

    #[test]
    fn a_manifest_with_an_unreadable_transaction_time_is_refused() {
        let error = Manifest::parse(br#"{"transactionTime": "yesterday"}"#, &[]).unwrap_err();
        assert_eq!(error, ManifestError::TransactionTime("yesterday".into()));
    }

    #[test]
    fn a_manifest_naming_a_relative_file_url_is_refused() {
        let body =
            br#"{"transactionTime": "2026-11-25T10:00:00Z", "output": [{"type": "Patient", "url": "/files/p1"}]}"#;
        assert!(matches!(Manifest::parse(body, &types(&["Patient"])), Err(ManifestError::FileUrl(_))));
    }

    #[test]
    fn the_first_export_has_no_since() {
        assert_eq!(export_since(&Cursor::default(), &types(&["Patient"])), None);
    }

    #[test]
    fn a_type_without_a_cursor_makes_the_export_a_full_one() {
        let cursor = cursor_after(&Cursor::default(), &types(&["Patient"]), at("2026-11-25T10:00:00Z"));
        assert_eq!(export_since(&cursor, &types(&["Patient", "Condition"])), None);
    }

    #[test]
    fn the_next_export_starts_at_the_last_committed_transaction_time() {
        let cursor = cursor_after(&Cursor::default(), &types(&["Patient", "Condition"]), at("2026-11-25T10:00:00Z"));
        assert_eq!(export_since(&cursor, &types(&["Patient", "Condition"])), Some(at("2026-11-25T10:00:00Z")));
    }

    #[test]
    fn since_is_the_oldest_cursor_of_the_exported_types() {
        let mut cursor = Cursor::default();
        cursor.advance("Patient", at("2026-11-25T10:00:00Z"));
        cursor.advance("Condition", at("2026-11-24T10:00:00Z"));
        assert_eq!(export_since(&cursor, &types(&["Patient", "Condition"])), Some(at("2026-11-24T10:00:00Z")));
    }

    #[test]
    fn a_transaction_time_never_moves_the_cursor_back() {
        let mut cursor = Cursor::default();
        cursor.advance("Patient", at("2026-11-25T10:00:00Z"));
        let next = cursor_after(&cursor, &types(&["Patient"]), at("2026-11-20T10:00:00Z"));
        assert_eq!(next.since["Patient"], at("2026-11-25T10:00:00Z"));
    }

    #[test]
    fn the_kick_off_asks_for_the_types_since_the_cursor() {
        let url = kick_off_url(
            "https://ehr.example.nhs.uk/fhir",
            ExportLevel::Patient,
            &types(&["Patient", "Condition"]),
            Some(at("2026-11-25T10:00:00Z")),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://ehr.example.nhs.uk/fhir/Patient/$export?_outputFormat=application%2Ffhir%2Bndjson&_type=Patient%2CCondition&_since=2026-11-25T10%3A00%3A00Z"
        );
    }

    #[test]
    fn a_system_kick_off_has_no_since_the_first_time() {
        let url =
            kick_off_url("https://ehr.example.nhs.uk/fhir", ExportLevel::System, &types(&["Patient"]), None).unwrap();
        assert_eq!(
            url,
            "https://ehr.example.nhs.uk/fhir/$export?_outputFormat=application%2Ffhir%2Bndjson&_type=Patient"
        );
    }

    #[test]
    fn ndjson_lines_may_span_chunks() {
        let mut lines = NdjsonLines::default();
        assert!(lines.push(b"{\"a\":").is_empty());
        assert_eq!(lines.push(b"1}\n{\"b\":2}\r\n\n{\"c\""), vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(lines.push(b":3}"), Vec::<Vec<u8>>::new());
        assert_eq!(lines.finish(), vec![b"{\"c\":3}".to_vec()]);
    }
}
