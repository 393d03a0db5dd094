//! ADT A01/A03/A04/A08 and ORU R01 to a FHIR R4 transaction Bundle, as the
//! HL7 v2-to-FHIR IG maps them (see the crate README for the field table).
//!
//! Every entry is a conditional update on a business identifier
//! (`PUT Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|...`), and the
//! `fullUrl`s linking entries are `urn:uuid:`s derived from those
//! identifiers, so the same message always gives the same Bundle and
//! replaying it changes nothing in the store.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::ack::{AckCode, AckError, ErrorCode, ErrorLocation};
use crate::datetime;
use crate::message::{Message, Repetition, Segment};
use crate::nhs::{self, NHS_NUMBER_SYSTEM};

/// The ODS organisation code system, for the provider tag and
/// organisation references.
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// v3 ActCode, for `Encounter.class`.
pub const ACT_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// GMC reference numbers (UK Core).
pub const GMC_SYSTEM: &str = "https://fhir.hl7.org.uk/Id/gmc-number";
/// UCUM.
pub const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";
/// HL7 table 0203, identifier types.
pub const IDENTIFIER_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// v3 ObservationInterpretation, for OBX-8.
pub const INTERPRETATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// The default prefix of local identifier and code systems.
pub const DEFAULT_LOCAL_PREFIX: &str = "urn:carerecord:id";

/// What the caller knows that the message does not.
#[derive(Debug, Clone, PartialEq)]
pub struct MapContext {
    /// `meta.source` of every resource: the connector's identity, e.g.
    /// `urn:carerecord:connector:cheshire-merseyside/rbt-pas`.
    pub source: String,
    /// The provider's ODS code: a `meta.tag` on every resource (system
    /// [`ODS_SYSTEM`]) and `Encounter.serviceProvider`.
    pub provider_ods: String,
    /// `meta.security` of every resource: FHIR Coding JSON objects, as the
    /// profile's rules computed them. Omitted when empty.
    pub security: Vec<Value>,
    /// Prefix of the URNs naming local identifier and code systems:
    /// `<prefix>:<authority>:<kind>`, e.g. `urn:carerecord:id:RBT:MR`.
    /// Defaults to [`DEFAULT_LOCAL_PREFIX`].
    pub local_identifier_prefix: String,
    /// When true (the default) a message whose PID-3 has no NHS number is
    /// refused (AE, 101); when false the Patient is keyed on its first local
    /// identifier instead.
    pub require_nhs_number: bool,
}

impl MapContext {
    /// A context with no security labels, the default prefix, and NHS
    /// numbers required.
    pub fn new(source: impl Into<String>, provider_ods: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            provider_ods: provider_ods.into(),
            security: Vec::new(),
            local_identifier_prefix: DEFAULT_LOCAL_PREFIX.to_owned(),
            require_nhs_number: true,
        }
    }
}

/// The supported message events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// ADT^A01, admit/visit notification.
    AdtA01,
    /// ADT^A03, discharge/end visit.
    AdtA03,
    /// ADT^A04, register a patient.
    AdtA04,
    /// ADT^A08, update patient information.
    AdtA08,
    /// ORU^R01, unsolicited observation results.
    OruR01,
}

/// Why a message cannot be mapped. [`MapError::ack_code`] says whether it
/// is an `AR` (the message as a whole is refused) or an `AE` (its content
/// is wrong); the `Display` text is the reason for ERR-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// MSH-9.1 is not ADT or ORU.
    #[error("unsupported message type {message_type:?}: this interface accepts ADT^A01/A03/A04/A08 and ORU^R01")]
    UnsupportedMessageType {
        /// MSH-9 as sent.
        message_type: String,
    },
    /// ADT or ORU with another trigger event.
    #[error("unsupported event {message_type:?}: this interface accepts ADT^A01/A03/A04/A08 and ORU^R01")]
    UnsupportedEvent {
        /// MSH-9 as sent.
        message_type: String,
    },
    /// MSH-12 is missing or not a 2.x version.
    #[error("unsupported HL7 version {version:?}: this interface accepts v2.x")]
    UnsupportedVersion {
        /// MSH-12 as sent.
        version: Option<String>,
    },
    /// A header field the interface needs (MSH-9, MSH-10) is empty.
    #[error("MSH-{field} ({name}) is required")]
    MissingHeaderField {
        /// Field number.
        field: usize,
        /// What it is.
        name: &'static str,
    },
    /// The message has more than one PID (several patients in one ORU).
    #[error("one patient per message is supported; this message has {count} PID segments")]
    MultiplePatients {
        /// How many PIDs.
        count: usize,
    },
    /// A required segment is absent.
    #[error("required segment {segment} is missing")]
    MissingSegment {
        /// Segment id.
        segment: &'static str,
    },
    /// A required field is empty.
    #[error("{segment}-{field} ({name}) is required")]
    MissingField {
        /// Segment id.
        segment: &'static str,
        /// 1-based occurrence of the segment.
        sequence: usize,
        /// Field number.
        field: usize,
        /// What it is.
        name: &'static str,
    },
    /// PID-3 has no NHS number (assigning authority `NHS` or type `NH`).
    #[error("PID-3 has no NHS number (an identifier with assigning authority NHS or type NH)")]
    MissingNhsNumber,
    /// An identifier marked as an NHS number fails the modulus 11 check.
    #[error("PID-3 NHS number {value:?} is invalid (10 digits with a modulus 11 check digit)")]
    InvalidNhsNumber {
        /// As sent.
        value: String,
    },
    /// PID-3 has two different NHS numbers.
    #[error("PID-3 has two different NHS numbers, {first} and {second}")]
    ConflictingNhsNumbers {
        /// The first.
        first: String,
        /// The other.
        second: String,
    },
    /// A date/time field is not a v2 DT/TS.
    #[error("{segment}-{field} {value:?} is not a valid HL7 date/time")]
    InvalidDateTime {
        /// Segment id.
        segment: &'static str,
        /// 1-based occurrence of the segment.
        sequence: usize,
        /// Field number.
        field: usize,
        /// As sent.
        value: String,
    },
    /// Two OBX under one OBR share a set id (OBX-1), so they would get the
    /// same Observation identifier.
    #[error("OBX-1 set id {set_id} appears twice under the OBR with filler order number {filler}")]
    DuplicateObservationId {
        /// OBR-3 (or ORC-3).
        filler: String,
        /// OBX-1.
        set_id: String,
        /// 1-based occurrence of the second OBX.
        sequence: usize,
    },
}

impl MapError {
    /// `AR` for message-level refusals (type, event, version, header,
    /// several patients), `AE` for content errors.
    pub fn ack_code(&self) -> AckCode {
        match self {
            MapError::UnsupportedMessageType { .. }
            | MapError::UnsupportedEvent { .. }
            | MapError::UnsupportedVersion { .. }
            | MapError::MissingHeaderField { .. }
            | MapError::MultiplePatients { .. } => AckCode::AR,
            _ => AckCode::AE,
        }
    }

    /// The HL7 table 0357 code for ERR-3.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            MapError::UnsupportedMessageType { .. } => ErrorCode::UnsupportedMessageType,
            MapError::UnsupportedEvent { .. } => ErrorCode::UnsupportedEventCode,
            MapError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersionId,
            MapError::MissingHeaderField { .. } | MapError::MissingField { .. } | MapError::MissingNhsNumber => {
                ErrorCode::RequiredFieldMissing
            }
            MapError::MultiplePatients { .. } | MapError::MissingSegment { .. } => ErrorCode::SegmentSequenceError,
            MapError::InvalidNhsNumber { .. }
            | MapError::ConflictingNhsNumbers { .. }
            | MapError::InvalidDateTime { .. } => ErrorCode::DataTypeError,
            MapError::DuplicateObservationId { .. } => ErrorCode::DuplicateKeyIdentifier,
        }
    }

    /// Where the error is, for ERR-2.
    pub fn location(&self) -> Option<ErrorLocation> {
        let at = |segment, sequence, field| ErrorLocation { segment, sequence, field: Some(field), component: None };
        match self {
            MapError::UnsupportedMessageType { .. } | MapError::UnsupportedEvent { .. } => Some(at("MSH", 1, 9)),
            MapError::UnsupportedVersion { .. } => Some(at("MSH", 1, 12)),
            MapError::MissingHeaderField { field, .. } => Some(at("MSH", 1, *field)),
            MapError::MultiplePatients { .. } => {
                Some(ErrorLocation { segment: "PID", sequence: 2, field: None, component: None })
            }
            MapError::MissingSegment { segment } => {
                Some(ErrorLocation { segment, sequence: 1, field: None, component: None })
            }
            MapError::MissingField { segment, sequence, field, .. }
            | MapError::InvalidDateTime { segment, sequence, field, .. } => Some(at(segment, *sequence, *field)),
            MapError::MissingNhsNumber | MapError::InvalidNhsNumber { .. } | MapError::ConflictingNhsNumbers { .. } => {
                Some(at("PID", 1, 3))
            }
            MapError::DuplicateObservationId { sequence, .. } => Some(at("OBX", *sequence, 1)),
        }
    }

    /// The reason, for ERR-8 and logs (the `Display` text).
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// The ERR content for [`crate::ack::build_ack`].
    pub fn to_ack_error(&self) -> AckError {
        AckError { code: self.error_code(), location: self.location(), message: self.reason() }
    }
}

/// The message's event, when this interface supports it: MSH-9 is
/// ADT^A01/A03/A04/A08 or ORU^R01, MSH-10 is present and MSH-12 is 2.x.
pub fn event(msg: &Message) -> Result<Event, MapError> {
    let header = msg.header();
    let message_type = header.message_type.to_string();
    let Some(code) = header.message_type.code.as_deref() else {
        return Err(MapError::MissingHeaderField { field: 9, name: "message type" });
    };
    let trigger = header.message_type.trigger.as_deref().unwrap_or("");
    let event = match code.to_ascii_uppercase().as_str() {
        "ADT" => match trigger.to_ascii_uppercase().as_str() {
            "A01" => Event::AdtA01,
            "A03" => Event::AdtA03,
            "A04" => Event::AdtA04,
            "A08" => Event::AdtA08,
            _ => return Err(MapError::UnsupportedEvent { message_type }),
        },
        "ORU" => match trigger.to_ascii_uppercase().as_str() {
            "R01" => Event::OruR01,
            _ => return Err(MapError::UnsupportedEvent { message_type }),
        },
        _ => return Err(MapError::UnsupportedMessageType { message_type }),
    };
    match header.version.as_deref() {
        Some(v) if v.starts_with("2.") => {}
        version => {
            return Err(MapError::UnsupportedVersion { version: version.map(str::to_owned) });
        }
    }
    if header.control_id.is_none() {
        return Err(MapError::MissingHeaderField { field: 10, name: "message control id" });
    }
    Ok(event)
}

/// The key to serialise a patient's messages on: the NHS number (10 digits,
/// when PID-3 has one marked NHS/NH, valid or not), else the first PID-3
/// identifier as `<assigning authority or MSH-4>|<id>`. `None` without a PID
/// or identifiers.
pub fn patient_key(msg: &Message) -> Option<String> {
    let pid = msg.segment("PID")?;
    let reps = pid.repetitions(3);
    if let Some(nhs) = reps.iter().find(|r| is_nhs_identifier(r)) {
        let value = nhs.component(1)?;
        return Some(nhs::normalise(value).unwrap_or_else(|| value.to_owned()));
    }
    let rep = reps.iter().find(|r| r.component(1).is_some())?;
    let authority = rep.subcomponent(4, 1).or_else(|| msg.component("MSH", 4, 1)).unwrap_or("");
    Some(format!("{authority}|{}", rep.component(1)?))
}

/// Maps a supported message to a FHIR R4 transaction Bundle.
///
/// Entries, in order: the Patient, the Encounter (ADT A01/A03/A04 always;
/// A08 and ORU when PV1-19 is present), then per OBR its Observations and
/// DiagnosticReport. The same message and context always give the same
/// JSON.
pub fn to_bundle(msg: &Message, ctx: &MapContext) -> Result<Value, MapError> {
    let event = event(msg)?;
    let pid_count = msg.segments_named("PID").count();
    if pid_count > 1 {
        return Err(MapError::MultiplePatients { count: pid_count });
    }
    let pid = msg.segment("PID").ok_or(MapError::MissingSegment { segment: "PID" })?;
    let mapper = Mapper { ctx, facility: msg.component("MSH", 4, 1).unwrap_or(ctx.provider_ods.as_str()).to_owned() };
    let mut entries = Vec::new();

    let (patient, patient_identifier) = mapper.patient(pid, msg.segment("PD1"))?;
    // ADT comes from the PAS, the master of demographics and visits: it
    // updates. An ORU's PID/PV1 (from a LIMS) only make sure the Patient and
    // Encounter exist, so results never erase what the PAS sent.
    let write = if event == Event::OruR01 { Write::CreateIfAbsent } else { Write::Update };
    let patient_url = mapper.full_url("Patient", &patient_identifier);
    entries.push(mapper.entry_with(write, "Patient", &patient_url, patient, &patient_identifier));

    let encounter_required = matches!(event, Event::AdtA01 | Event::AdtA03 | Event::AdtA04);
    let pv1 = msg.segment("PV1");
    let encounter_url = match pv1 {
        None if encounter_required => {
            return Err(MapError::MissingSegment { segment: "PV1" });
        }
        None => None,
        Some(pv1) => match mapper.encounter(msg, event, pv1, &patient_url, encounter_required)? {
            Some((encounter, identifier)) => {
                let url = mapper.full_url("Encounter", &identifier);
                entries.push(mapper.entry_with(write, "Encounter", &url, encounter, &identifier));
                Some(url)
            }
            None => None,
        },
    };

    if event == Event::OruR01 {
        mapper.results(msg, &patient_url, encounter_url.as_deref(), &mut entries)?;
    }

    Ok(json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries,
    }))
}

/// How an entry writes its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `PUT Type?identifier=s|v`: the message is the source of truth.
    Update,
    /// `POST Type` with `ifNoneExist: identifier=s|v`: make sure it exists,
    /// never overwrite (the Patient and Encounter of an ORU, whose PID/PV1
    /// from a LIMS carry less than the PAS sent).
    CreateIfAbsent,
}

/// A business identifier: system and value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BusinessId {
    system: String,
    value: String,
}

struct Mapper<'a> {
    ctx: &'a MapContext,
    /// MSH-4.1, or the provider's ODS code when empty.
    facility: String,
}

fn is_nhs_identifier(rep: &Repetition) -> bool {
    let authority = rep.subcomponent(4, 1).unwrap_or("");
    let kind = rep.component(5).unwrap_or("");
    authority.eq_ignore_ascii_case("NHS") || kind.eq_ignore_ascii_case("NH") || kind.eq_ignore_ascii_case("NHS")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a search parameter value for a query string: FHIR's `\` escapes
/// for `|`, `,`, `$` and `\`, then percent-encoding (`:` and `/` kept, as
/// query strings allow them and systems read better).
fn query_value(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    pct(&escaped).replace("%3A", ":").replace("%2F", "/")
}

fn non_empty_array(values: Vec<Value>) -> Option<Value> {
    (!values.is_empty()).then_some(Value::Array(values))
}

fn insert_opt(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

fn insert_str(obj: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), Value::String(v.to_owned()));
    }
}

impl Mapper<'_> {
    fn local_system(&self, authority: &str, kind: &str) -> String {
        format!("{}:{}:{}", self.ctx.local_identifier_prefix, pct(authority), pct(kind))
    }

    /// The system for a CX identifier: `urn:oid:` when its assigning
    /// authority carries an ISO OID, else a local URN from the authority's
    /// namespace (or the sending facility) and the identifier type.
    fn cx_system(&self, rep: &Repetition, default_kind: &str) -> String {
        if rep.subcomponent(4, 3).is_some_and(|t| t.eq_ignore_ascii_case("ISO"))
            && let Some(oid) = rep.subcomponent(4, 2)
        {
            return format!("urn:oid:{oid}");
        }
        let authority = rep.subcomponent(4, 1).unwrap_or(&self.facility);
        let kind = rep.component(5).unwrap_or(default_kind);
        self.local_system(authority, kind)
    }

    fn meta(&self) -> Value {
        let mut meta = Map::new();
        meta.insert("source".into(), json!(self.ctx.source));
        meta.insert("tag".into(), json!([{ "system": ODS_SYSTEM, "code": self.ctx.provider_ods }]));
        if !self.ctx.security.is_empty() {
            meta.insert("security".into(), Value::Array(self.ctx.security.clone()));
        }
        Value::Object(meta)
    }

    /// `urn:uuid:` from a SHA-256 of the type and identifier, formatted as
    /// an RFC 9562 version 8 (custom) UUID.
    fn full_url(&self, resource_type: &str, id: &BusinessId) -> String {
        let digest = Sha256::digest(format!("{resource_type}|{}|{}", id.system, id.value).as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("urn:uuid:{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }

    fn entry(&self, resource_type: &str, full_url: &str, resource: Value, id: &BusinessId) -> Value {
        self.entry_with(Write::Update, resource_type, full_url, resource, id)
    }

    fn entry_with(&self, write: Write, resource_type: &str, full_url: &str, resource: Value, id: &BusinessId) -> Value {
        let search = format!("identifier={}|{}", query_value(&id.system), query_value(&id.value));
        let request = match write {
            Write::Update => json!({ "method": "PUT", "url": format!("{resource_type}?{search}") }),
            Write::CreateIfAbsent => {
                json!({ "method": "POST", "url": resource_type, "ifNoneExist": search })
            }
        };
        json!({ "fullUrl": full_url, "resource": resource, "request": request })
    }

    fn resource(&self, resource_type: &str) -> Map<String, Value> {
        let mut obj = Map::new();
        obj.insert("resourceType".into(), json!(resource_type));
        obj.insert("meta".into(), self.meta());
        obj
    }

    fn datetime(
        &self,
        seg: &Segment,
        segment: &'static str,
        sequence: usize,
        field: usize,
    ) -> Result<Option<String>, MapError> {
        let Some(value) = seg.value(field) else {
            return Ok(None);
        };
        datetime::to_datetime(value).map(Some).map_err(|_| MapError::InvalidDateTime {
            segment,
            sequence,
            field,
            value: value.to_owned(),
        })
    }

    // ---------------------------------------------------------------- Patient

    fn patient(&self, pid: &Segment, pd1: Option<&Segment>) -> Result<(Value, BusinessId), MapError> {
        let mut identifiers = Vec::new();
        let mut nhs_number: Option<String> = None;
        let mut first_local: Option<BusinessId> = None;
        for rep in pid.repetitions(3) {
            let Some(value) = rep.component(1) else {
                continue;
            };
            if is_nhs_identifier(rep) {
                let normalised =
                    nhs::normalise(value).ok_or_else(|| MapError::InvalidNhsNumber { value: value.to_owned() })?;
                match &nhs_number {
                    Some(first) if *first != normalised => {
                        return Err(MapError::ConflictingNhsNumbers { first: first.clone(), second: normalised });
                    }
                    Some(_) => {}
                    None => {
                        identifiers.push(json!({ "system": NHS_NUMBER_SYSTEM, "value": normalised }));
                        nhs_number = Some(normalised);
                    }
                }
            } else {
                let system = self.cx_system(rep, "PI");
                let mut identifier = Map::new();
                identifier.insert("use".into(), json!("usual"));
                if let Some(kind) = rep.component(5) {
                    identifier.insert(
                        "type".into(),
                        json!({ "coding": [{ "system": IDENTIFIER_TYPE_SYSTEM, "code": kind }] }),
                    );
                }
                identifier.insert("system".into(), json!(system));
                identifier.insert("value".into(), json!(value));
                identifiers.push(Value::Object(identifier));
                if first_local.is_none() {
                    first_local = Some(BusinessId { system, value: value.to_owned() });
                }
            }
        }
        let key = match (nhs_number, first_local) {
            (Some(nhs), _) => BusinessId { system: NHS_NUMBER_SYSTEM.to_owned(), value: nhs },
            (None, Some(local)) if !self.ctx.require_nhs_number => local,
            (None, _) if self.ctx.require_nhs_number => return Err(MapError::MissingNhsNumber),
            (None, _) => {
                return Err(MapError::MissingField {
                    segment: "PID",
                    sequence: 1,
                    field: 3,
                    name: "patient identifier list",
                });
            }
        };

        let mut patient = self.resource("Patient");
        patient.insert("identifier".into(), Value::Array(identifiers));
        insert_opt(&mut patient, "name", non_empty_array(names(pid)));
        insert_opt(&mut patient, "telecom", non_empty_array(telecoms(pid)));
        insert_str(&mut patient, "gender", pid.value(8).and_then(gender));
        if let Some(dob) = pid.value(7) {
            let date = datetime::to_date(dob).map_err(|_| MapError::InvalidDateTime {
                segment: "PID",
                sequence: 1,
                field: 7,
                value: dob.to_owned(),
            })?;
            patient.insert("birthDate".into(), json!(date));
        }
        if let Some(death) = self.datetime(pid, "PID", 1, 29)? {
            patient.insert("deceasedDateTime".into(), json!(death));
        } else {
            match pid.value(30) {
                Some("Y") => {
                    patient.insert("deceasedBoolean".into(), json!(true));
                }
                Some("N") => {
                    patient.insert("deceasedBoolean".into(), json!(false));
                }
                _ => {}
            }
        }
        insert_opt(&mut patient, "address", non_empty_array(addresses(pid)));
        if let Some(gp) = pd1.and_then(gp_practice) {
            patient.insert(
                "generalPractitioner".into(),
                json!([{ "type": "Organization", "identifier": { "system": ODS_SYSTEM, "value": gp } }]),
            );
        }
        Ok((Value::Object(patient), key))
    }

    // -------------------------------------------------------------- Encounter

    fn encounter(
        &self,
        msg: &Message,
        event: Event,
        pv1: &Segment,
        patient_url: &str,
        required: bool,
    ) -> Result<Option<(Value, BusinessId)>, MapError> {
        let Some(visit) = pv1.field(19).and_then(|f| f.first()).filter(|r| r.value().is_some()) else {
            if required {
                return Err(MapError::MissingField { segment: "PV1", sequence: 1, field: 19, name: "visit number" });
            }
            return Ok(None);
        };
        let identifier =
            BusinessId { system: self.cx_system(visit, "VN"), value: visit.value().unwrap_or_default().to_owned() };
        let start = self.datetime(pv1, "PV1", 1, 44)?;
        let mut end = self.datetime(pv1, "PV1", 1, 45)?;
        if end.is_none() && event == Event::AdtA03 {
            // A discharge without PV1-45: when the event occurred (EVN-6), else
            // was recorded (EVN-2).
            if let Some(evn) = msg.segment("EVN") {
                end = match self.datetime(evn, "EVN", 1, 6)? {
                    Some(t) => Some(t),
                    None => self.datetime(evn, "EVN", 1, 2)?,
                };
            }
        }
        let status = match event {
            Event::AdtA01 => "in-progress",
            Event::AdtA03 => "finished",
            Event::AdtA04 => "planned",
            // A08/ORU: the PUT replaces the Encounter, so derive the status
            // from the visit itself rather than the IG's "unknown" for A08.
            _ if end.is_some() => "finished",
            _ if start.is_some() => "in-progress",
            _ => "unknown",
        };

        let mut encounter = self.resource("Encounter");
        encounter.insert(
            "identifier".into(),
            json!([{
                "use": "official",
                "type": { "coding": [{ "system": IDENTIFIER_TYPE_SYSTEM, "code": "VN" }] },
                "system": identifier.system,
                "value": identifier.value,
            }]),
        );
        encounter.insert("status".into(), json!(status));
        encounter.insert("class".into(), encounter_class(pv1.value(2)));
        encounter.insert("subject".into(), json!({ "reference": patient_url }));
        let mut period = Map::new();
        insert_str(&mut period, "start", start.as_deref());
        insert_str(&mut period, "end", end.as_deref());
        if !period.is_empty() {
            encounter.insert("period".into(), Value::Object(period));
        }
        if let Some(attending) = pv1.field(7).and_then(|f| f.first()).and_then(practitioner) {
            encounter.insert(
                "participant".into(),
                json!([{
                    "type": [{ "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "ATND",
                        "display": "attender",
                    }] }],
                    "individual": attending,
                }]),
            );
        }
        if let Some(location) = pv1.field(3).and_then(|f| f.first()).and_then(location_display) {
            encounter.insert("location".into(), json!([{ "location": { "display": location } }]));
        }
        encounter.insert(
            "serviceProvider".into(),
            json!({ "type": "Organization", "identifier": { "system": ODS_SYSTEM, "value": self.ctx.provider_ods } }),
        );
        Ok(Some((Value::Object(encounter), identifier)))
    }

    // ---------------------------------------------------------------- Results

    fn results(
        &self,
        msg: &Message,
        patient_url: &str,
        encounter_url: Option<&str>,
        entries: &mut Vec<Value>,
    ) -> Result<(), MapError> {
        let mut obr_seq = 0;
        let mut obx_seq = 0;
        let mut current: Option<ReportBuilder> = None;
        let mut last_orc: Option<&Segment> = None;
        let mut last_was_obx = false;
        for seg in msg.segments() {
            match seg.id() {
                "ORC" => {
                    last_orc = Some(seg);
                    last_was_obx = false;
                }
                "OBR" => {
                    if let Some(report) = current.take() {
                        report.finish(self, entries);
                    }
                    obr_seq += 1;
                    current = Some(self.report(seg, last_orc.take(), obr_seq, patient_url, encounter_url)?);
                    last_was_obx = false;
                }
                "OBX" => {
                    obx_seq += 1;
                    let Some(report) = current.as_mut() else {
                        return Err(MapError::MissingSegment { segment: "OBR" });
                    };
                    self.observation(seg, obx_seq, report, patient_url, encounter_url)?;
                    last_was_obx = true;
                }
                "NTE" if last_was_obx => {
                    if let Some(text) = seg
                        .field(3)
                        .map(|f| f.repetitions().iter().filter_map(Repetition::value).collect::<Vec<_>>().join("\n"))
                        && let Some(obs) = current.as_mut().and_then(|r| r.observations.last_mut())
                        && !text.is_empty()
                    {
                        obs.notes.push(json!({ "text": text }));
                    }
                }
                _ => {}
            }
        }
        match current {
            Some(report) => {
                report.finish(self, entries);
                Ok(())
            }
            None => Err(MapError::MissingSegment { segment: "OBR" }),
        }
    }

    fn report(
        &self,
        obr: &Segment,
        orc: Option<&Segment>,
        sequence: usize,
        patient_url: &str,
        encounter_url: Option<&str>,
    ) -> Result<ReportBuilder, MapError> {
        // Filler order number: OBR-3, else ORC-3.
        let filler = obr
            .field(3)
            .and_then(|f| f.first())
            .filter(|r| r.value().is_some())
            .or_else(|| orc.and_then(|o| o.field(3)).and_then(|f| f.first()).filter(|r| r.value().is_some()))
            .ok_or(MapError::MissingField { segment: "OBR", sequence, field: 3, name: "filler order number" })?;
        let filler_value = filler.value().unwrap_or_default().to_owned();
        let namespace = filler.component(2).unwrap_or(&self.facility).to_owned();
        let identifier = BusinessId { system: self.local_system(&namespace, "FILL"), value: filler_value.clone() };
        let mut report = self.resource("DiagnosticReport");
        let mut identifiers = vec![json!({
            "use": "official",
            "type": { "coding": [{ "system": IDENTIFIER_TYPE_SYSTEM, "code": "FILL" }] },
            "system": identifier.system,
            "value": identifier.value,
        })];
        if let Some(placer) = obr.field(2).and_then(|f| f.first()).filter(|r| r.value().is_some()) {
            let ns = placer.component(2).unwrap_or(&self.facility);
            identifiers.push(json!({
                "type": { "coding": [{ "system": IDENTIFIER_TYPE_SYSTEM, "code": "PLAC" }] },
                "system": self.local_system(ns, "PLAC"),
                "value": placer.value(),
            }));
        }
        report.insert("identifier".into(), Value::Array(identifiers));
        report.insert("status".into(), json!(report_status(obr.value(25))));
        if let Some(section) = obr.value(24) {
            report.insert(
                "category".into(),
                json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": section }] }]),
            );
        }
        let code = obr.field(4).and_then(|f| f.first()).and_then(|r| self.codeable_concept(r)).ok_or(
            MapError::MissingField { segment: "OBR", sequence, field: 4, name: "universal service identifier" },
        )?;
        report.insert("code".into(), code);
        report.insert("subject".into(), json!({ "reference": patient_url }));
        if let Some(enc) = encounter_url {
            report.insert("encounter".into(), json!({ "reference": enc }));
        }
        let effective = self.datetime(obr, "OBR", sequence, 7)?;
        insert_str(&mut report, "effectiveDateTime", effective.as_deref());
        if let Some(issued) = obr.value(22) {
            let instant = datetime::to_instant(issued).map_err(|_| MapError::InvalidDateTime {
                segment: "OBR",
                sequence,
                field: 22,
                value: issued.to_owned(),
            })?;
            insert_str(&mut report, "issued", instant.as_deref());
        }
        report.insert(
            "performer".into(),
            json!([{ "type": "Organization", "identifier": { "system": ODS_SYSTEM, "value": self.ctx.provider_ods } }]),
        );
        Ok(ReportBuilder {
            resource: report,
            identifier,
            namespace,
            filler: filler_value,
            effective,
            observations: Vec::new(),
        })
    }

    fn observation(
        &self,
        obx: &Segment,
        sequence: usize,
        report: &mut ReportBuilder,
        patient_url: &str,
        encounter_url: Option<&str>,
    ) -> Result<(), MapError> {
        let set_id = obx.value(1).map(str::to_owned).unwrap_or_else(|| (report.observations.len() + 1).to_string());
        if report.observations.iter().any(|o| o.set_id == set_id) {
            return Err(MapError::DuplicateObservationId { filler: report.filler.clone(), set_id, sequence });
        }
        let identifier = BusinessId {
            system: self.local_system(&report.namespace, "FILL-OBX"),
            value: format!("{}-{}", report.filler, set_id),
        };
        let mut obs = self.resource("Observation");
        obs.insert(
            "identifier".into(),
            json!([{ "use": "official", "system": identifier.system, "value": identifier.value }]),
        );
        obs.insert("status".into(), json!(observation_status(obx.value(11))));
        if let Some(category) = report.resource.get("category") {
            obs.insert("category".into(), category.clone());
        }
        let code = obx
            .field(3)
            .and_then(|f| f.first())
            .and_then(|r| self.codeable_concept(r))
            .ok_or(MapError::MissingField { segment: "OBX", sequence, field: 3, name: "observation identifier" })?;
        obs.insert("code".into(), code);
        obs.insert("subject".into(), json!({ "reference": patient_url }));
        if let Some(enc) = encounter_url {
            obs.insert("encounter".into(), json!({ "reference": enc }));
        }
        match self.datetime(obx, "OBX", sequence, 14)? {
            Some(t) => {
                obs.insert("effectiveDateTime".into(), json!(t));
            }
            None => insert_str(&mut obs, "effectiveDateTime", report.effective.as_deref()),
        }
        let unit = obx.field(6).and_then(|f| f.first());
        if let Some((key, value)) = self.observation_value(obx, unit) {
            obs.insert(key.into(), value);
        }
        let interpretation: Vec<Value> = obx
            .repetitions(8)
            .iter()
            .filter_map(Repetition::value)
            .map(|code| json!({ "coding": [{ "system": INTERPRETATION_SYSTEM, "code": code }] }))
            .collect();
        insert_opt(&mut obs, "interpretation", non_empty_array(interpretation));
        if let Some(range) = obx.value(7) {
            obs.insert("referenceRange".into(), json!([reference_range(range, unit)]));
        }
        report.observations.push(PendingObservation {
            set_id,
            full_url: self.full_url("Observation", &identifier),
            identifier,
            resource: obs,
            notes: Vec::new(),
        });
        Ok(())
    }

    /// OBX-5 by OBX-2 value type.
    fn observation_value(&self, obx: &Segment, unit: Option<&Repetition>) -> Option<(&'static str, Value)> {
        let field = obx.field(5)?;
        let first = field.first()?;
        let value_type = obx.value(2).unwrap_or("ST").to_ascii_uppercase();
        match value_type.as_str() {
            "NM" => {
                let text = first.value()?;
                match numeric(text) {
                    Some((comparator, number)) => Some(("valueQuantity", quantity(comparator, number, unit))),
                    None => Some(("valueString", json!(text))),
                }
            }
            "SN" => {
                // comparator ^ num1 [^ separator ^ num2]
                let comparator = first.component(1);
                let num1 = first.component(2);
                let has_second = first.component(3).is_some() || first.component(4).is_some();
                match (num1.and_then(number_value), has_second) {
                    (Some(n), false) => {
                        let comparator = comparator.filter(|c| matches!(*c, "<" | "<=" | ">" | ">="));
                        Some(("valueQuantity", quantity(comparator, n, unit)))
                    }
                    _ => Some(("valueString", json!(raw_components(first).join("")))),
                }
            }
            "CE" | "CWE" | "CNE" | "CF" => self.codeable_concept(first).map(|c| ("valueCodeableConcept", c)),
            "DT" => datetime::to_date(first.value()?).ok().map(|d| ("valueDateTime", json!(d))),
            "TS" | "DTM" => datetime::to_datetime(first.value()?).ok().map(|d| ("valueDateTime", json!(d))),
            _ => {
                // ST, TX, FT and anything else: text, repetitions as lines.
                let text =
                    field.repetitions().iter().map(|r| raw_components(r).join("^")).collect::<Vec<_>>().join("\n");
                let text = text.trim_end_matches('^').to_owned();
                (!text.is_empty()).then(|| ("valueString", json!(text)))
            }
        }
    }

    /// A CE/CWE as a CodeableConcept: the identifier triplet and the
    /// alternate triplet as codings, CWE-9 (or the first text) as text.
    fn codeable_concept(&self, rep: &Repetition) -> Option<Value> {
        let mut codings = Vec::new();
        for (code_at, display_at, system_at) in [(1, 2, 3), (4, 5, 6)] {
            if let Some(code) = rep.component(code_at) {
                let mut coding = Map::new();
                coding.insert("system".into(), json!(self.code_system(rep.component(system_at))));
                coding.insert("code".into(), json!(code));
                insert_str(&mut coding, "display", rep.component(display_at));
                codings.push(Value::Object(coding));
            }
        }
        let text = rep.component(9).or_else(|| rep.component(2));
        if codings.is_empty() && text.is_none() {
            return None;
        }
        let mut concept = Map::new();
        insert_opt(&mut concept, "coding", non_empty_array(codings));
        insert_str(&mut concept, "text", text);
        Some(Value::Object(concept))
    }

    /// HL7 table 0396 coding system names to FHIR system URIs; local ones
    /// (`L`, `99zzz`, unnamed) to a URN under the sending facility.
    fn code_system(&self, name: Option<&str>) -> String {
        match name.map(str::to_ascii_uppercase).as_deref() {
            Some("LN") => "http://loinc.org".to_owned(),
            Some("SCT" | "SNOMEDCT" | "SNM") => "http://snomed.info/sct".to_owned(),
            Some("UCUM") => UCUM_SYSTEM.to_owned(),
            Some("I10") => "http://hl7.org/fhir/sid/icd-10".to_owned(),
            Some(table) if table.starts_with("HL7") && table.len() == 7 => {
                format!("http://terminology.hl7.org/CodeSystem/v2-{}", &table[3..])
            }
            Some(other) => format!("{}:{}", self.local_system(&self.facility, "codesystem"), pct(other)),
            None => self.local_system(&self.facility, "codesystem"),
        }
    }
}

struct PendingObservation {
    set_id: String,
    full_url: String,
    identifier: BusinessId,
    resource: Map<String, Value>,
    notes: Vec<Value>,
}

struct ReportBuilder {
    resource: Map<String, Value>,
    identifier: BusinessId,
    namespace: String,
    filler: String,
    effective: Option<String>,
    observations: Vec<PendingObservation>,
}

impl ReportBuilder {
    fn finish(mut self, mapper: &Mapper<'_>, entries: &mut Vec<Value>) {
        let results: Vec<Value> = self.observations.iter().map(|o| json!({ "reference": o.full_url })).collect();
        insert_opt(&mut self.resource, "result", non_empty_array(results));
        for mut obs in self.observations {
            if !obs.notes.is_empty() {
                obs.resource.insert("note".into(), Value::Array(obs.notes));
            }
            entries.push(mapper.entry("Observation", &obs.full_url, Value::Object(obs.resource), &obs.identifier));
        }
        let url = mapper.full_url("DiagnosticReport", &self.identifier);
        entries.push(mapper.entry("DiagnosticReport", &url, Value::Object(self.resource), &self.identifier));
    }
}

// ------------------------------------------------------------------ helpers

fn raw_components(rep: &Repetition) -> Vec<String> {
    rep.components().iter().map(|c| c.subcomponents().join("&")).collect()
}

/// PID-5 XPN repetitions.
fn names(pid: &Segment) -> Vec<Value> {
    pid.repetitions(5)
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut name = Map::new();
            let name_use = match r.component(7) {
                Some("L") | Some("C") | Some("I") => Some("official"),
                Some("D") | Some("A") => Some("usual"),
                Some("M") => Some("maiden"),
                Some("N") => Some("nickname"),
                Some("B") | Some("BAD") => Some("old"),
                Some("S") => Some("anonymous"),
                Some("T") => Some("temp"),
                _ => None,
            };
            insert_str(&mut name, "use", name_use);
            insert_str(&mut name, "family", r.subcomponent(1, 1));
            let given: Vec<Value> = [r.component(2), r.component(3)]
                .into_iter()
                .flatten()
                .flat_map(|g| g.split(' ').filter(|s| !s.is_empty()).map(|s| json!(s)).collect::<Vec<_>>())
                .collect();
            insert_opt(&mut name, "given", non_empty_array(given));
            insert_opt(&mut name, "prefix", r.component(5).map(|p| json!([p])));
            insert_opt(&mut name, "suffix", r.component(4).map(|s| json!([s])));
            Value::Object(name)
        })
        .collect()
}

/// PID-8 (table 0001) to administrative gender.
fn gender(code: &str) -> Option<&'static str> {
    match code.to_ascii_uppercase().as_str() {
        "M" => Some("male"),
        "F" => Some("female"),
        "O" | "A" => Some("other"),
        "U" | "N" => Some("unknown"),
        _ => None,
    }
}

/// PID-11 XAD repetitions.
fn addresses(pid: &Segment) -> Vec<Value> {
    pid.repetitions(11)
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut address = Map::new();
            let (address_use, address_type) = match r.component(7) {
                Some("H") => (Some("home"), None),
                Some("B") | Some("O") => (Some("work"), None),
                Some("C") => (Some("temp"), None),
                Some("M") => (None, Some("postal")),
                Some("BA") | Some("BDL") => (Some("old"), None),
                _ => (None, None),
            };
            insert_str(&mut address, "use", address_use);
            insert_str(&mut address, "type", address_type);
            let lines: Vec<Value> =
                [r.subcomponent(1, 1), r.component(2)].into_iter().flatten().map(|l| json!(l)).collect();
            insert_opt(&mut address, "line", non_empty_array(lines));
            insert_str(&mut address, "city", r.component(3));
            // UK Core: the county goes in district.
            insert_str(&mut address, "district", r.component(4));
            insert_str(&mut address, "postalCode", r.component(5));
            insert_str(&mut address, "country", r.component(6));
            Value::Object(address)
        })
        .collect()
}

/// PID-13 (home) and PID-14 (business) XTN repetitions.
fn telecoms(pid: &Segment) -> Vec<Value> {
    let mut out = Vec::new();
    for (field, default_use) in [(13, "home"), (14, "work")] {
        for r in pid.repetitions(field) {
            let use_code = r.component(2).unwrap_or("");
            let equipment = r.component(3).unwrap_or("");
            let is_email = use_code == "NET" || equipment.eq_ignore_ascii_case("Internet");
            let value = if is_email { r.component(4).or(r.component(1)) } else { r.component(12).or(r.component(1)) };
            let Some(value) = value else { continue };
            let system = if is_email {
                "email"
            } else if equipment == "FX" {
                "fax"
            } else if equipment == "BP" || use_code == "BPN" {
                "pager"
            } else {
                "phone"
            };
            let telecom_use = match (use_code, equipment) {
                (_, "CP") => "mobile",
                ("WPN", _) => "work",
                ("PRN" | "ORN" | "VHN", _) => "home",
                _ => default_use,
            };
            out.push(json!({ "system": system, "value": value, "use": telecom_use }));
        }
    }
    out
}

/// PD1-3 XON: the registered GP practice's ODS code (XON-10, else XON-3).
fn gp_practice(pd1: &Segment) -> Option<String> {
    let xon = pd1.field(3)?.first()?;
    xon.component(10).or_else(|| xon.component(3)).map(str::to_owned)
}

/// PV1-2 (table 0004) to `Encounter.class`.
fn encounter_class(code: Option<&str>) -> Value {
    let (code, display) = match code.map(str::to_ascii_uppercase).as_deref() {
        Some("I") => ("IMP", "inpatient encounter"),
        Some("O") => ("AMB", "ambulatory"),
        Some("E") => ("EMER", "emergency"),
        Some("P") => ("PRENC", "pre-admission"),
        _ => {
            return json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
                "code": "UNK",
                "display": "unknown",
            });
        }
    };
    json!({ "system": ACT_CODE_SYSTEM, "code": code, "display": display })
}

/// PV1-7 XCN: the attending doctor as a Reference by identifier and display
/// (the consultant's code, usually a GMC number, in XCN-1).
fn practitioner(xcn: &Repetition) -> Option<Value> {
    let id = xcn.component(1);
    let display: Vec<&str> =
        [xcn.component(6), xcn.component(3), xcn.subcomponent(2, 1)].into_iter().flatten().collect();
    if id.is_none() && display.is_empty() {
        return None;
    }
    let mut reference = Map::new();
    reference.insert("type".into(), json!("Practitioner"));
    if let Some(id) = id {
        // A consultant code is `C` + the GMC number; XCN-9 names the authority.
        let gmc = id.strip_prefix(['C', 'c']).unwrap_or(id);
        let identifier = if xcn.subcomponent(9, 1).is_some_and(|a| a.eq_ignore_ascii_case("GMC"))
            && gmc.len() == 7
            && gmc.bytes().all(|b| b.is_ascii_digit())
        {
            json!({ "system": GMC_SYSTEM, "value": gmc })
        } else {
            json!({ "value": id })
        };
        reference.insert("identifier".into(), identifier);
    }
    if !display.is_empty() {
        reference.insert("display".into(), json!(display.join(" ")));
    }
    Some(Value::Object(reference))
}

/// PV1-3 PL: point of care, room, bed, facility as a display string.
fn location_display(pl: &Repetition) -> Option<String> {
    let parts: Vec<&str> =
        [pl.component(1), pl.component(2), pl.component(3), pl.subcomponent(4, 1)].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// OBR-25 (table 0123) to DiagnosticReport.status.
fn report_status(code: Option<&str>) -> &'static str {
    match code {
        Some("F") => "final",
        Some("P") | Some("R") => "preliminary",
        Some("C") => "corrected",
        Some("A") | Some("S") => "partial",
        Some("I") | Some("O") => "registered",
        Some("X") => "cancelled",
        Some("D") => "entered-in-error",
        _ => "unknown",
    }
}

/// OBX-11 (table 0085) to Observation.status.
fn observation_status(code: Option<&str>) -> &'static str {
    match code {
        Some("F") | Some("U") => "final",
        Some("P") | Some("R") | Some("S") => "preliminary",
        Some("C") => "corrected",
        Some("I") | Some("O") => "registered",
        Some("D") | Some("W") => "entered-in-error",
        Some("X") => "cancelled",
        _ => "unknown",
    }
}

fn number_value(text: &str) -> Option<Value> {
    let text = text.trim();
    let plain = text.strip_prefix(['+', '-']).unwrap_or(text);
    let ok = !plain.is_empty()
        && plain.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && plain.bytes().filter(|&b| b == b'.').count() <= 1
        && plain.bytes().any(|b| b.is_ascii_digit());
    if !ok {
        return None;
    }
    serde_json::from_str::<Value>(text.trim_start_matches('+'))
        .ok()
        .or_else(|| {
            // "5." or ".5": valid HL7 NM, not JSON.
            text.parse::<f64>().ok().and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
        })
        .filter(Value::is_number)
}

/// An NM value, possibly with a leading comparator (`<5`, `>=90`).
fn numeric(text: &str) -> Option<(Option<&str>, Value)> {
    let text = text.trim();
    for comparator in ["<=", ">=", "<", ">"] {
        if let Some(rest) = text.strip_prefix(comparator) {
            return number_value(rest).map(|n| (Some(comparator), n));
        }
    }
    number_value(text).map(|n| (None, n))
}

/// A Quantity with OBX-6 as the unit: UCUM system and code when the unit
/// is UCUM (OBX-6.3 says so, or it is a common lab unit whose UCUM code is
/// known).
fn quantity(comparator: Option<&str>, value: Value, unit: Option<&Repetition>) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), value);
    insert_str(&mut q, "comparator", comparator);
    if let Some(unit) = unit {
        let code = unit.component(1);
        let text = unit.component(2).or(code);
        insert_str(&mut q, "unit", text);
        let says_ucum = unit.component(3).is_some_and(|s| s.eq_ignore_ascii_case("UCUM"));
        let ucum = match code {
            Some(c) if says_ucum => Some(c.to_owned()),
            Some(c) => ucum_code(c).map(str::to_owned),
            None => None,
        };
        if let Some(ucum) = ucum {
            q.insert("system".into(), json!(UCUM_SYSTEM));
            q.insert("code".into(), json!(ucum));
        }
    }
    Value::Object(q)
}

/// Common UK laboratory units and their UCUM codes. A unit not listed (and
/// not declared UCUM in OBX-6.3) keeps only its text: a wrong UCUM code is
/// worse than none.
fn ucum_code(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "mmol/L" | "mmol/l" => "mmol/L",
        "umol/L" | "umol/l" | "µmol/L" | "µmol/l" => "umol/L",
        "nmol/L" | "nmol/l" => "nmol/L",
        "pmol/L" | "pmol/l" => "pmol/L",
        "mmol/mol" => "mmol/mol",
        "g/L" | "g/l" => "g/L",
        "g/dL" | "g/dl" => "g/dL",
        "mg/L" | "mg/l" => "mg/L",
        "ug/L" | "ug/l" | "µg/L" => "ug/L",
        "ng/L" | "ng/l" => "ng/L",
        "ng/mL" | "ng/ml" => "ng/mL",
        "U/L" | "u/L" | "U/l" | "IU/L" | "iu/L" => "U/L",
        "mU/L" | "mIU/L" | "mu/L" => "mU/L",
        "%" => "%",
        "fL" | "fl" => "fL",
        "pg" => "pg",
        "L/L" | "l/l" => "L/L",
        "10*9/L" | "10^9/L" | "10^9/l" | "x10^9/L" | "x10*9/L" | "x10^9/l" => "10*9/L",
        "10*12/L" | "10^12/L" | "10^12/l" | "x10^12/L" | "x10*12/L" | "x10^12/l" => "10*12/L",
        "mL/min/1.73m2" | "mL/min/1.73m*2" | "ml/min/1.73m2" => "mL/min/{1.73_m2}",
        "mL/min" | "ml/min" => "mL/min",
        "mm/h" | "mm/hr" => "mm/h",
        "mmHg" | "mm[Hg]" => "mm[Hg]",
        "kg" => "kg",
        "cm" => "cm",
        "s" | "sec" => "s",
        "ratio" | "INR" => "{ratio}",
        _ => return None,
    })
}

/// OBX-7: `low-high`, `<high`, `>low`, else text.
fn reference_range(range: &str, unit: Option<&Repetition>) -> Value {
    let simple = |v: Value| {
        // Reuse the value's unit, without comparator.
        let Value::Object(mut q) = quantity(None, v, unit) else { unreachable!() };
        q.remove("comparator");
        Value::Object(q)
    };
    let text = range.trim();
    let mut out = Map::new();
    if let Some(rest) = text.strip_prefix("<=").or_else(|| text.strip_prefix('<')) {
        if let Some(high) = number_value(rest) {
            out.insert("high".into(), simple(high));
        }
    } else if let Some(rest) = text.strip_prefix(">=").or_else(|| text.strip_prefix('>')) {
        if let Some(low) = number_value(rest) {
            out.insert("low".into(), simple(low));
        }
    } else if let Some(split) = text.get(1..).and_then(|t| t.find('-')).map(|i| i + 1)
        && let (Some(low), Some(high)) = (number_value(&text[..split]), number_value(&text[split + 1..]))
    {
        out.insert("low".into(), simple(low));
        out.insert("high".into(), simple(high));
    }
    out.insert("text".into(), json!(range));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_ranges_parse_low_high_and_open_bounds() {
        let r = reference_range("3.5-5.3", None);
        assert_eq!(r["low"]["value"], json!(3.5));
        assert_eq!(r["high"]["value"], json!(5.3));
        let r = reference_range("-2.0-2.0", None);
        assert_eq!(r["low"]["value"], json!(-2.0));
        let r = reference_range("<5", None);
        assert_eq!(r["high"]["value"], json!(5));
        assert!(r.get("low").is_none());
        let r = reference_range("negative", None);
        assert_eq!(r, json!({ "text": "negative" }));
    }

    #[test]
    fn numbers_with_comparators_become_quantity_comparators() {
        assert_eq!(numeric(">90"), Some((Some(">"), json!(90))));
        assert_eq!(numeric("5.1"), Some((None, json!(5.1))));
        assert_eq!(numeric("5."), Some((None, json!(5.0))));
        assert_eq!(numeric("abc"), None);
        assert_eq!(numeric("1e5"), None);
    }

    #[test]
    fn query_values_escape_pipes_and_percent_encode() {
        assert_eq!(query_value("https://fhir.nhs.uk/Id/nhs-number"), "https://fhir.nhs.uk/Id/nhs-number");
        assert_eq!(query_value("a|b c"), "a%5C%7Cb%20c");
    }
}
