//! HL7 v2 message parsing (ER7, the pipe-and-hat encoding).
//!
//! # Numbering
//!
//! Everything is numbered as HL7 numbers it, from 1: `PID-3` is
//! `msg.field("PID", 3)`, its second repetition is `.repetition(2)`, the
//! fourth component of that is `.component(4)`, and so on. Field 0 is the
//! segment id.
//!
//! **MSH is special**, as in the standard: MSH-1 *is* the field separator
//! (the character right after `MSH`) and MSH-2 is the encoding characters
//! (`^~\&`), so `MSH|^~\&|PAS|RBT|...` has MSH-3 = `PAS` and MSH-4 = `RBT`,
//! exactly as the specification names them. MSH-1 and MSH-2 are returned
//! verbatim, never split or unescaped.
//!
//! # Values
//!
//! Leaf values are unescaped (`\F\ \S\ \T\ \R\ \E\`; `\.br\` becomes a
//! newline; `\Xhh..\`, `\H\`, `\N\` and other escapes are kept as written).
//! Accessors returning `Option<&str>` return `None` for an empty value *and*
//! for the HL7 explicit null `""`; [`Field::is_explicit_null`] tells them
//! apart when it matters.
//!
//! # Leniency
//!
//! Segments may end in `\r` (the standard), `\n` or `\r\n`; blank lines and
//! a leading byte-order mark are ignored. The delimiters come from MSH-1 and
//! MSH-2 of each message, so `|^~\&` is not assumed.

use std::fmt;

/// The five delimiters of a message: MSH-1 and the characters of MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: char,
    /// Usually `^`.
    pub component: char,
    /// Usually `~`.
    pub repetition: char,
    /// Usually `\`.
    pub escape: char,
    /// Usually `&`.
    pub subcomponent: char,
    /// v2.7+ truncation character, usually `#`, when MSH-2 has a fifth
    /// character.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&', truncation: None }
    }
}

impl Delimiters {
    /// MSH-2 as written: component, repetition, escape, subcomponent
    /// [, truncation].
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// Escapes `text` so it can be written as one leaf value: delimiters and
    /// the escape character become `\F\ \S\ \T\ \R\ \E\`, line breaks
    /// become `\.br\` (a raw `\r` would end the segment).
    pub fn escape(&self, text: &str) -> String {
        let e = self.escape;
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let code = if c == self.field {
                Some("F")
            } else if c == self.component {
                Some("S")
            } else if c == self.subcomponent {
                Some("T")
            } else if c == self.repetition {
                Some("R")
            } else if c == e {
                Some("E")
            } else if c == '\r' || c == '\n' {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                Some(".br")
            } else {
                None
            };
            match code {
                Some(code) => {
                    out.push(e);
                    out.push_str(code);
                    out.push(e);
                }
                None => out.push(c),
            }
        }
        out
    }

    /// Reverses [`escape`](Self::escape) for one leaf value. Unknown or
    /// unterminated escape sequences are kept as written.
    pub fn unescape(&self, raw: &str) -> String {
        let e = self.escape;
        if !raw.contains(e) {
            return raw.to_owned();
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find(e) {
            out.push_str(&rest[..start]);
            let after = &rest[start + e.len_utf8()..];
            match after.find(e) {
                Some(end) => {
                    let code = &after[..end];
                    let decoded = match code {
                        "F" => Some(self.field.to_string()),
                        "S" => Some(self.component.to_string()),
                        "T" => Some(self.subcomponent.to_string()),
                        "R" => Some(self.repetition.to_string()),
                        "E" => Some(e.to_string()),
                        ".br" => Some("\n".to_owned()),
                        _ => None,
                    };
                    match decoded {
                        Some(d) => out.push_str(&d),
                        None => {
                            // \Xhh\, \H\, \N\, \Cxxyy\, \.sp\ ...: kept verbatim.
                            out.push(e);
                            out.push_str(code);
                            out.push(e);
                        }
                    }
                    rest = &after[end + e.len_utf8()..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Why a message could not be parsed. Every variant means the header is
/// unusable, so the answer is an `AR` (see [`crate::ack`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No segments at all.
    #[error("empty message")]
    Empty,
    /// The first segment is not MSH (batches, FHS/BHS, are not supported).
    #[error("the message does not start with an MSH segment")]
    MissingHeader,
    /// MSH-1 is missing or is a character that cannot be a separator.
    #[error("MSH-1 (field separator) is missing or invalid")]
    InvalidFieldSeparator,
    /// MSH-2 is not 4 or 5 distinct separator characters.
    #[error("MSH-2 (encoding characters) {found:?} is invalid")]
    InvalidEncodingCharacters {
        /// MSH-2 as received.
        found: String,
    },
    /// A segment id that is not three letters or digits.
    #[error("segment {index} has an invalid segment id {found:?}")]
    InvalidSegmentId {
        /// 1-based position of the segment in the message.
        index: usize,
        /// The id as received (truncated).
        found: String,
    },
}

/// A parsed message: its delimiters and segments. Cheap to query, owns its
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
}

/// One segment: its id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    id: String,
    /// fields[0] is the id; for MSH fields[1] is MSH-1 and fields[2] MSH-2.
    fields: Vec<Field>,
}

/// One field: its repetitions, and its text as received (still escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    raw: String,
    repetitions: Vec<Repetition>,
}

/// One repetition of a field: its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    components: Vec<Component>,
}

/// One component: its subcomponents (unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    subcomponents: Vec<String>,
}

fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() || s == "\"\"" { None } else { Some(s) }
}

impl Component {
    /// Subcomponents, unescaped; at least one (maybe empty).
    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    /// Subcomponent `n` (1-based), `None` if absent, empty or `""`.
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        n.checked_sub(1).and_then(|i| self.subcomponents.get(i)).and_then(|s| non_empty(s))
    }

    /// The first subcomponent: the component's value when it has no
    /// subcomponents.
    pub fn value(&self) -> Option<&str> {
        self.subcomponent(1)
    }
}

impl Repetition {
    /// Components; at least one (maybe empty).
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Component `n` (1-based) as a whole.
    pub fn get(&self, n: usize) -> Option<&Component> {
        n.checked_sub(1).and_then(|i| self.components.get(i))
    }

    /// The value of component `n` (1-based): its first subcomponent.
    pub fn component(&self, n: usize) -> Option<&str> {
        self.get(n).and_then(Component::value)
    }

    /// Subcomponent `s` of component `c`, both 1-based.
    pub fn subcomponent(&self, c: usize, s: usize) -> Option<&str> {
        self.get(c).and_then(|comp| comp.subcomponent(s))
    }

    /// The first component's value: the repetition's value for a simple
    /// data type (ST, NM, ID, ...).
    pub fn value(&self) -> Option<&str> {
        self.component(1)
    }

    /// True when every component is empty.
    pub fn is_empty(&self) -> bool {
        self.components.iter().all(|c| c.subcomponents.iter().all(String::is_empty))
    }
}

impl Field {
    /// The field as received, delimiters and escapes included.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Repetitions; empty for an empty field.
    pub fn repetitions(&self) -> &[Repetition] {
        &self.repetitions
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        n.checked_sub(1).and_then(|i| self.repetitions.get(i))
    }

    /// The first repetition.
    pub fn first(&self) -> Option<&Repetition> {
        self.repetitions.first()
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Option<&str> {
        self.first().and_then(|r| r.component(n))
    }

    /// The first repetition's first component's first subcomponent.
    pub fn value(&self) -> Option<&str> {
        self.first().and_then(Repetition::value)
    }

    /// True when nothing was sent (`||`).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True for the HL7 explicit null `""` ("delete this value").
    pub fn is_explicit_null(&self) -> bool {
        self.raw == "\"\""
    }
}

impl Segment {
    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Field `n` (1-based; see the module docs for MSH-1 and MSH-2). `None`
    /// past the last field sent.
    pub fn field(&self, n: usize) -> Option<&Field> {
        if n == 0 {
            return None;
        }
        self.fields.get(n)
    }

    /// The number of the last field present (0 for a bare id).
    pub fn len(&self) -> usize {
        self.fields.len() - 1
    }

    /// True for a segment with no fields after its id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Field `n`'s first value (first repetition, component, subcomponent).
    pub fn value(&self, n: usize) -> Option<&str> {
        self.field(n).and_then(Field::value)
    }

    /// Component `c` of the first repetition of field `n`.
    pub fn component(&self, n: usize, c: usize) -> Option<&str> {
        self.field(n).and_then(|f| f.component(c))
    }

    /// Repetitions of field `n` (empty when absent).
    pub fn repetitions(&self, n: usize) -> &[Repetition] {
        self.field(n).map(Field::repetitions).unwrap_or(&[])
    }
}

impl Message {
    /// Parses one message from text.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
        let mut lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
        let header = lines.next().ok_or(ParseError::Empty)?;
        if !header.starts_with("MSH") {
            return Err(ParseError::MissingHeader);
        }
        let mut header_chars = header[3..].chars();
        let field_sep = header_chars.next().ok_or(ParseError::InvalidFieldSeparator)?;
        if field_sep.is_alphanumeric() || field_sep.is_whitespace() {
            return Err(ParseError::InvalidFieldSeparator);
        }
        let after_sep = &header[3 + field_sep.len_utf8()..];
        let encoding = after_sep.split(field_sep).next().unwrap_or("");
        let delimiters = delimiters_from(field_sep, encoding)?;

        let mut segments = Vec::new();
        segments.push(parse_msh(header, &delimiters, encoding));
        for (i, line) in lines.enumerate() {
            segments.push(parse_segment(line, &delimiters, i + 2)?);
        }
        Ok(Message { delimiters, segments })
    }

    /// Parses one message from bytes (an MLLP frame's payload): UTF-8, or,
    /// when that fails, ISO-8859-1 (each byte one character), which is what
    /// older UK systems send.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Message, ParseError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Message::parse(text),
            Err(_) => {
                let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                Message::parse(&text)
            }
        }
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// All segments, MSH first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The MSH segment.
    pub fn msh(&self) -> &Segment {
        &self.segments[0]
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Every segment with this id, in order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// Field `n` of the first segment `id`: `msg.field("PID", 3)` is PID-3.
    pub fn field(&self, id: &str, n: usize) -> Option<&Field> {
        self.segment(id).and_then(|s| s.field(n))
    }

    /// The first value of field `n` of the first segment `id`.
    pub fn value(&self, id: &str, n: usize) -> Option<&str> {
        self.segment(id).and_then(|s| s.value(n))
    }

    /// Component `c` of the first repetition of field `n` of segment `id`:
    /// `msg.component("MSH", 9, 2)` is the trigger event.
    pub fn component(&self, id: &str, n: usize, c: usize) -> Option<&str> {
        self.segment(id).and_then(|s| s.component(n, c))
    }

    /// The header fields most callers need.
    pub fn header(&self) -> Header {
        let msh = self.msh();
        let comp = |n, c| msh.component(n, c).map(str::to_owned);
        Header {
            sending_application: comp(3, 1),
            sending_facility: comp(4, 1),
            receiving_application: comp(5, 1),
            receiving_facility: comp(6, 1),
            timestamp: comp(7, 1),
            message_type: MessageType { code: comp(9, 1), trigger: comp(9, 2), structure: comp(9, 3) },
            control_id: comp(10, 1),
            processing_id: comp(11, 1),
            version: comp(12, 1),
        }
    }
}

impl fmt::Display for Message {
    /// Re-encodes the message with `\r` segment terminators.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            f.write_str(&segment.id)?;
            let fields = if segment.id == "MSH" {
                // MSH-1 is the separator written before MSH-2.
                &segment.fields[2..]
            } else {
                &segment.fields[1..]
            };
            for field in fields {
                write!(f, "{}{}", self.delimiters.field, field.raw)?;
            }
            f.write_str("\r")?;
        }
        Ok(())
    }
}

/// MSH-9: message code, trigger event, message structure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageType {
    /// MSH-9.1, e.g. `ADT`, `ORU`.
    pub code: Option<String>,
    /// MSH-9.2, e.g. `A01`, `R01`.
    pub trigger: Option<String>,
    /// MSH-9.3 (v2.3.1+), e.g. `ADT_A01`.
    pub structure: Option<String>,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_deref().unwrap_or(""))?;
        if let Some(trigger) = &self.trigger {
            write!(f, "^{trigger}")?;
        }
        if let Some(structure) = &self.structure {
            write!(f, "^{structure}")?;
        }
        Ok(())
    }
}

/// The MSH fields a receiver routes and acknowledges on (first components;
/// `None` when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.1, e.g. the PAS or LIMS name.
    pub sending_application: Option<String>,
    /// MSH-4.1, usually the trust's ODS code, e.g. `RBT`.
    pub sending_facility: Option<String>,
    /// MSH-5.1.
    pub receiving_application: Option<String>,
    /// MSH-6.1.
    pub receiving_facility: Option<String>,
    /// MSH-7, the message date/time as sent (`YYYYMMDDHHMMSS[+ZZZZ]`).
    pub timestamp: Option<String>,
    /// MSH-9.
    pub message_type: MessageType,
    /// MSH-10, the message control id the ACK echoes in MSA-2.
    pub control_id: Option<String>,
    /// MSH-11.1: `P` production, `T` training, `D` debugging.
    pub processing_id: Option<String>,
    /// MSH-12.1, e.g. `2.4`.
    pub version: Option<String>,
}

fn delimiters_from(field: char, encoding: &str) -> Result<Delimiters, ParseError> {
    let invalid = || ParseError::InvalidEncodingCharacters { found: encoding.chars().take(16).collect() };
    let chars: Vec<char> = encoding.chars().collect();
    if !(4..=5).contains(&chars.len()) {
        return Err(invalid());
    }
    let mut all = chars.clone();
    all.push(field);
    for (i, c) in all.iter().enumerate() {
        if c.is_alphanumeric() || c.is_whitespace() || all[i + 1..].contains(c) {
            return Err(invalid());
        }
    }
    Ok(Delimiters {
        field,
        component: chars[0],
        repetition: chars[1],
        escape: chars[2],
        subcomponent: chars[3],
        truncation: chars.get(4).copied(),
    })
}

fn parse_msh(line: &str, d: &Delimiters, encoding: &str) -> Segment {
    let mut fields = vec![Field::verbatim("MSH"), Field::verbatim(&d.field.to_string()), Field::verbatim(encoding)];
    // Skip "MSH", the separator, MSH-2 and the separator after it.
    let rest_start = 3 + d.field.len_utf8() + encoding.len();
    if let Some(rest) = line.get(rest_start..)
        && let Some(rest) = rest.strip_prefix(d.field)
    {
        fields.extend(rest.split(d.field).map(|raw| parse_field(raw, d)));
    }
    Segment { id: "MSH".to_owned(), fields }
}

fn parse_segment(line: &str, d: &Delimiters, index: usize) -> Result<Segment, ParseError> {
    let mut parts = line.split(d.field);
    let id = parts.next().unwrap_or("");
    if id.len() != 3 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::InvalidSegmentId { index, found: id.chars().take(16).collect() });
    }
    let mut fields = vec![Field::verbatim(id)];
    fields.extend(parts.map(|raw| parse_field(raw, d)));
    Ok(Segment { id: id.to_owned(), fields })
}

fn parse_field(raw: &str, d: &Delimiters) -> Field {
    let repetitions = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(d.repetition)
            .map(|rep| Repetition {
                components: rep
                    .split(d.component)
                    .map(|comp| Component {
                        subcomponents: comp.split(d.subcomponent).map(|s| d.unescape(s)).collect(),
                    })
                    .collect(),
            })
            .collect()
    };
    Field { raw: raw.to_owned(), repetitions }
}

impl Field {
    /// A field holding `text` as its only value, unsplit (MSH-1, MSH-2, ids).
    fn verbatim(text: &str) -> Field {
        Field {
            raw: text.to_owned(),
            repetitions: vec![Repetition { components: vec![Component { subcomponents: vec![text.to_owned()] }] }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|PAS|RBT|ICS|ICS|20261125093000||ADT^A01^ADT_A01|MSG00001|P|2.4\r\
PID|1||9990000018^^^NHS^NH~RBT1234567^^^RBT^MR||SMITH^JANE^ANNE^^MRS||19800101|F\r";

    #[test]
    fn msh_1_is_the_field_separator_and_msh_3_the_sending_application() {
        let msg = Message::parse(ADT).unwrap();
        assert_eq!(msg.value("MSH", 1), Some("|"));
        assert_eq!(msg.value("MSH", 2), Some("^~\\&"));
        assert_eq!(msg.value("MSH", 3), Some("PAS"));
        assert_eq!(msg.value("MSH", 4), Some("RBT"));
        assert_eq!(msg.component("MSH", 9, 2), Some("A01"));
        let header = msg.header();
        assert_eq!(header.control_id.as_deref(), Some("MSG00001"));
        assert_eq!(header.version.as_deref(), Some("2.4"));
        assert_eq!(header.message_type.to_string(), "ADT^A01^ADT_A01");
    }

    #[test]
    fn repetitions_components_and_subcomponents_are_one_based() {
        let msg = Message::parse(ADT).unwrap();
        let pid3 = msg.field("PID", 3).unwrap();
        assert_eq!(pid3.repetitions().len(), 2);
        assert_eq!(pid3.repetition(1).unwrap().component(1), Some("9990000018"));
        assert_eq!(pid3.repetition(2).unwrap().component(4), Some("RBT"));
        assert_eq!(pid3.repetition(2).unwrap().component(5), Some("MR"));
        assert_eq!(pid3.repetition(3), None);
        assert_eq!(pid3.repetition(0), None);
        assert_eq!(msg.component("PID", 5, 2), Some("JANE"));
        assert_eq!(msg.field("PID", 99), None);
    }

    #[test]
    fn delimiters_come_from_msh_1_and_msh_2() {
        let msg = Message::parse("MSH#$*!@#PAS#RBT\rPID#1##111$$$NHS$NH*222@x\r").unwrap();
        assert_eq!(msg.delimiters().field, '#');
        assert_eq!(msg.value("MSH", 3), Some("PAS"));
        let pid3 = msg.field("PID", 3).unwrap();
        assert_eq!(pid3.repetition(1).unwrap().component(4), Some("NHS"));
        assert_eq!(pid3.repetition(2).unwrap().subcomponent(1, 2), Some("x"));
    }

    #[test]
    fn newlines_and_crlf_separate_segments_too() {
        let crlf = ADT.replace('\r', "\r\n");
        let lf = ADT.replace('\r', "\n");
        let a = Message::parse(ADT).unwrap();
        assert_eq!(Message::parse(&crlf).unwrap(), a);
        assert_eq!(Message::parse(&lf).unwrap(), a);
    }

    #[test]
    fn escape_sequences_decode_and_unknown_ones_survive() {
        let msg = Message::parse("MSH|^~\\&|A\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\g\\.br\\h\\").unwrap();
        assert_eq!(msg.value("NTE", 3), Some("a|b^c&d~e\\f\\X0D\\g\nh\\"));
    }

    #[test]
    fn escape_round_trips_through_unescape() {
        let d = Delimiters::default();
        let text = "a|b^c&d~e\\f";
        assert_eq!(d.unescape(&d.escape(text)), text);
    }

    #[test]
    fn explicit_null_reads_as_absent_but_is_detectable() {
        let msg = Message::parse("MSH|^~\\&|A\rPID|1||\"\"\r").unwrap();
        assert_eq!(msg.value("PID", 3), None);
        assert!(msg.field("PID", 3).unwrap().is_explicit_null());
    }

    #[test]
    fn a_message_without_msh_is_a_typed_error() {
        assert_eq!(Message::parse("PID|1\r"), Err(ParseError::MissingHeader));
        assert_eq!(Message::parse(""), Err(ParseError::Empty));
        assert!(matches!(Message::parse("MSH|^~|A"), Err(ParseError::InvalidEncodingCharacters { .. })));
        assert!(matches!(Message::parse("MSH|^~\\&|A\rP D|1"), Err(ParseError::InvalidSegmentId { index: 2, .. })));
    }

    #[test]
    fn display_re_encodes_the_message() {
        let msg = Message::parse(ADT).unwrap();
        assert_eq!(msg.to_string(), ADT);
    }

    #[test]
    fn latin1_bytes_parse() {
        let mut bytes = b"MSH|^~\\&|A\rPID|1||||O'BRI".to_vec();
        bytes.push(0xC9); // É in ISO-8859-1
        bytes.extend_from_slice(b"N\r");
        let msg = Message::parse_bytes(&bytes).unwrap();
        assert_eq!(msg.value("PID", 5), Some("O'BRIÉN"));
    }
}
