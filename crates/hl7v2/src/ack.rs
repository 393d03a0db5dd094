//! Building the ACK for a message, purely: the caller passes the ACK's own
//! control id and timestamp.
//!
//! The ACK's MSH swaps the original's sender and receiver (MSH-3/4 become
//! MSH-5/6 and the other way round), keeps its delimiters, processing id
//! and version, and has MSH-9 `ACK^<trigger>^ACK`. MSA-1 is the
//! [`AckCode`], MSA-2 the original MSH-10. An `AE`/`AR` carries MSA-3 (the
//! reason, for v2.3/2.4 receivers) and an ERR segment with both the
//! pre-2.5 ERR-1 and the v2.5+ fields: ERR-2 location, ERR-3 the table 0357
//! code, ERR-4 severity `E`, ERR-8 the reason.

use std::fmt;

use crate::message::{Delimiters, Message, ParseError};

/// MSA-1 acknowledgment code (HL7 table 0008, original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application Accept: processed (send it only after the store commit).
    AA,
    /// Application Error: the content is wrong (a field missing or invalid);
    /// the sender should fix the data and resend.
    AE,
    /// Application Reject: the message cannot be handled at all (header
    /// unparsable, message type or version unsupported); resending the same
    /// message will not help.
    AR,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HL7 table 0357, message error condition codes (ERR-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: segment sequence error (a required segment missing or out of
    /// order).
    SegmentSequenceError,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (a value of the wrong form).
    DataTypeError,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 204: unknown key identifier.
    UnknownKeyIdentifier,
    /// 205: duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: application record locked.
    ApplicationRecordLocked,
    /// 207: application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table's display text.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// Where in the message an error is (ERR-2, ERL): segment id, its 1-based
/// occurrence, and optionally field and component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorLocation {
    /// e.g. `PID`.
    pub segment: &'static str,
    /// 1-based occurrence of that segment in the message.
    pub sequence: usize,
    /// 1-based field number.
    pub field: Option<usize>,
    /// 1-based component number.
    pub component: Option<usize>,
}

impl ErrorLocation {
    /// The first `segment`, field `field`.
    pub fn field(segment: &'static str, field: usize) -> Self {
        Self { segment, sequence: 1, field: Some(field), component: None }
    }
}

/// The error part of an `AE`/`AR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// ERR-3.
    pub code: ErrorCode,
    /// ERR-2.
    pub location: Option<ErrorLocation>,
    /// ERR-8 and MSA-3: a reason a person at the sending trust can act on.
    pub message: String,
}

/// Builds the ACK for `original`. `control_id` is the ACK's own MSH-10 and
/// `timestamp` its MSH-7 (`YYYYMMDDHHMMSS[+ZZZZ]`), both chosen by the
/// caller. `error` is ignored for `AA`.
///
/// The result is one message with `\r` segment terminators, unframed: pass
/// it to [`crate::mllp::frame`].
pub fn build_ack(
    original: &Message,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> String {
    let msh = original.msh();
    let raw = |n: usize| msh.field(n).map(|f| f.raw().to_owned()).unwrap_or_default();
    let header = original.header();
    ack_text(
        original.delimiters(),
        AckHeader {
            sending_application: raw(5),
            sending_facility: raw(6),
            receiving_application: raw(3),
            receiving_facility: raw(4),
            trigger: header.message_type.trigger.unwrap_or_default(),
            processing_id: raw(11),
            version: raw(12),
            original_control_id: header.control_id.unwrap_or_default(),
        },
        code,
        error,
        control_id,
        timestamp,
    )
}

/// The `AR` for bytes that did not parse as a message, built on a best
/// effort: with `|^~\&` delimiters, and the original's MSH-3..6, MSH-10,
/// MSH-11 and MSH-12 salvaged when the first line looks like an MSH with
/// `|` separators. ERR-3 is 100 when there is no MSH at all, else 102.
pub fn build_reject_for_unparsable(raw: &[u8], parse_error: &ParseError, control_id: &str, timestamp: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    let d = Delimiters::default();
    let first_line =
        text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']).split(['\r', '\n']).next().unwrap_or("");
    let fields: Vec<&str> = if first_line.starts_with("MSH|") {
        // fields[i] is MSH-(i+1): "MSH" sits where MSH-1 would.
        first_line.split('|').collect()
    } else {
        Vec::new()
    };
    // Only copy fields that cannot break the ACK's own structure.
    let get = |n: usize| -> String {
        fields.get(n - 1).filter(|v| !v.contains(['\\'])).map(|v| (*v).to_owned()).unwrap_or_default()
    };
    let first_component = |s: String| s.split('^').next().unwrap_or("").to_owned();
    let trigger = get(9).split('^').nth(1).unwrap_or("").to_owned();
    let code = match parse_error {
        ParseError::Empty | ParseError::MissingHeader => ErrorCode::SegmentSequenceError,
        _ => ErrorCode::DataTypeError,
    };
    let error = AckError {
        code,
        location: match code {
            ErrorCode::SegmentSequenceError => None,
            _ => Some(ErrorLocation { segment: "MSH", sequence: 1, field: None, component: None }),
        },
        message: format!("message could not be parsed: {parse_error}"),
    };
    ack_text(
        &d,
        AckHeader {
            sending_application: get(5),
            sending_facility: get(6),
            receiving_application: get(3),
            receiving_facility: get(4),
            trigger,
            processing_id: get(11),
            version: get(12),
            original_control_id: first_component(get(10)),
        },
        AckCode::AR,
        Some(&error),
        control_id,
        timestamp,
    )
}

struct AckHeader {
    sending_application: String,
    sending_facility: String,
    receiving_application: String,
    receiving_facility: String,
    trigger: String,
    processing_id: String,
    version: String,
    original_control_id: String,
}

fn ack_text(
    d: &Delimiters,
    h: AckHeader,
    code: AckCode,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> String {
    let f = d.field;
    let c = d.component;
    let s = d.subcomponent;
    let esc = |t: &str| d.escape(t);
    let message_type = if h.trigger.is_empty() { "ACK".to_owned() } else { format!("ACK{c}{}{c}ACK", esc(&h.trigger)) };
    let mut out = format!(
        "MSH{f}{enc}{f}{sa}{f}{sf}{f}{ra}{f}{rf}{f}{ts}{f}{f}{mt}{f}{cid}{f}{pid}{f}{ver}\r",
        enc = d.encoding_characters(),
        sa = h.sending_application,
        sf = h.sending_facility,
        ra = h.receiving_application,
        rf = h.receiving_facility,
        ts = esc(timestamp),
        mt = message_type,
        cid = esc(control_id),
        pid = h.processing_id,
        ver = h.version,
    );
    let error = error.filter(|_| code != AckCode::AA);
    out.push_str(&format!("MSA{f}{code}{f}{orig}", orig = esc(&h.original_control_id)));
    if let Some(e) = error {
        out.push_str(&format!("{f}{}", esc(&e.message)));
    }
    out.push('\r');
    if let Some(e) = error {
        let cwe = format!("{}{c}{}{c}HL70357", e.code.code(), esc(e.code.text()), c = c);
        // ERR-1 (pre-2.5): segment^sequence^field^code&text&HL70357.
        let err1_code = format!("{}{s}{}{s}HL70357", e.code.code(), esc(e.code.text()));
        let (err1, err2) = match &e.location {
            Some(l) => {
                let field = l.field.map(|n| n.to_string()).unwrap_or_default();
                let component = l.component.map(|n| n.to_string()).unwrap_or_default();
                let err2 = format!(
                    "{seg}{c}{seq}{c}{field}{c}{rep}{c}{component}",
                    seg = l.segment,
                    seq = l.sequence,
                    rep = if l.field.is_some() { "1" } else { "" },
                );
                (format!("{}{c}{}{c}{field}{c}{err1_code}", l.segment, l.sequence), err2.trim_end_matches(c).to_owned())
            }
            None => (format!("{c}{c}{c}{err1_code}"), String::new()),
        };
        out.push_str(&format!("ERR{f}{err1}{f}{err2}{f}{cwe}{f}E{f}{f}{f}{f}{msg}\r", msg = esc(&e.message)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adt() -> Message {
        Message::parse(
            "MSH|^~\\&|PAS^RBT-PAS|RBT|ICS|ICS|20261125093000||ADT^A01^ADT_A01|MSG00001|P|2.4\r\
             PID|1||9990000018^^^NHS^NH\r",
        )
        .unwrap()
    }

    #[test]
    fn an_aa_swaps_sender_and_receiver_and_echoes_the_control_id() {
        let ack = build_ack(&adt(), AckCode::AA, None, "ACK0001", "20261125093001");
        assert_eq!(
            ack,
            "MSH|^~\\&|ICS|ICS|PAS^RBT-PAS|RBT|20261125093001||ACK^A01^ACK|ACK0001|P|2.4\r\
             MSA|AA|MSG00001\r"
        );
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.value("MSA", 2), Some("MSG00001"));
    }

    #[test]
    fn an_ae_carries_an_err_segment_with_the_table_0357_code_and_reason() {
        let error = AckError {
            code: ErrorCode::RequiredFieldMissing,
            location: Some(ErrorLocation::field("PID", 3)),
            message: "PID-3 has no NHS number | fix at source".to_owned(),
        };
        let ack = build_ack(&adt(), AckCode::AE, Some(&error), "ACK0002", "20261125093001");
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.value("MSA", 1), Some("AE"));
        assert_eq!(parsed.value("MSA", 3), Some("PID-3 has no NHS number | fix at source"));
        let err = parsed.segment("ERR").unwrap();
        assert_eq!(err.component(2, 1), Some("PID"));
        assert_eq!(err.component(2, 3), Some("3"));
        assert_eq!(err.component(3, 1), Some("101"));
        assert_eq!(err.component(3, 3), Some("HL70357"));
        assert_eq!(err.value(4), Some("E"));
        assert_eq!(err.value(8), Some("PID-3 has no NHS number | fix at source"));
        assert_eq!(err.field(1).unwrap().first().unwrap().subcomponent(4, 1), Some("101"));
    }

    #[test]
    fn an_unparsable_message_gets_an_ar_with_what_could_be_salvaged() {
        let raw = b"MSH|^~|PAS|RBT|ICS|ICS|20261125||ADT^A01|MSG9|P|2.4\r";
        let error = Message::parse_bytes(raw).unwrap_err();
        let ack = build_reject_for_unparsable(raw, &error, "ACK3", "20261125093001");
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.value("MSA", 1), Some("AR"));
        assert_eq!(parsed.value("MSA", 2), Some("MSG9"));
        assert_eq!(parsed.value("MSH", 5), Some("PAS"));
        assert_eq!(parsed.component("MSH", 9, 2), Some("A01"));
        assert_eq!(parsed.component("ERR", 3, 1), Some("102"));
    }
}
