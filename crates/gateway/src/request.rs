//! What a request asks for, read from its method, path and query after
//! normalisation. Decisions are made on this, and the upstream request is
//! built from this, never from the raw path: what was checked is what is sent.

use carerecord_fhir::canonical_resource_type;
use percent_encoding::percent_decode_str;

/// HTTP method, as far as FHIR cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Other,
}

impl Method {
    pub fn parse(method: &str) -> Self {
        match method {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Other => "OTHER",
        }
    }
}

/// A request as it arrived, before any decision.
#[derive(Clone, Debug)]
pub struct HttpRequest<'a> {
    pub method: Method,
    /// The raw (percent-encoded) path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Accept` header.
    pub accept: Option<&'a str>,
}

/// Why a path cannot be read safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// `.` or `..`, raw or percent-encoded: refused rather than resolved, so no
    /// two spellings of a path can be judged differently.
    DotSegment,
    /// A segment that decodes to a separator, `%`, or a control character.
    BadSegment,
}

/// The path's segments, percent-decoded once, with empty segments (`//`)
/// dropped.
pub fn normalise_path(path: &str) -> Result<Vec<String>, PathError> {
    let mut segments = Vec::new();
    for raw in path.split('/') {
        if raw.is_empty() {
            continue;
        }
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| PathError::BadSegment)?;
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        // A decoded separator or `%` means the client encoded what it meant as
        // structure (or double-encoded): no honest FHIR path needs either.
        if decoded.chars().any(|c| c == '/' || c == '\\' || c == '%' || c.is_control()) {
            return Err(PathError::BadSegment);
        }
        segments.push(decoded.into_owned());
    }
    Ok(segments)
}

/// Which public entry point a path belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/fhir/...`: the tenant's own callers.
    Tenant(Vec<String>),
    /// `/federation/<consumer>/fhir/...`: another tenant under an agreement.
    Federation { consumer: String, rest: Vec<String> },
    /// `/inbound/<connector>/...`: a provider pushing to its connector.
    Inbound { connector: String, rest: Vec<String> },
    /// Anything else.
    Unknown,
}

impl Route {
    pub fn of(segments: Vec<String>) -> Self {
        let mut it = segments.into_iter();
        match it.next().as_deref() {
            Some("fhir") => Self::Tenant(it.collect()),
            Some("federation") => match (it.next(), it.next().as_deref()) {
                (Some(consumer), Some("fhir")) => Self::Federation { consumer, rest: it.collect() },
                _ => Self::Unknown,
            },
            Some("inbound") => match it.next() {
                Some(connector) => Self::Inbound { connector, rest: it.collect() },
                None => Self::Unknown,
            },
            _ => Self::Unknown,
        }
    }
}

/// A FHIR RESTful interaction, classified from method and path below the base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FhirAction {
    /// `GET [base]/metadata`.
    Capabilities,
    /// `GET [base]?_getpages=...`: a further page of an earlier search.
    Page,
    /// `GET [base]?...` or `POST [base]/_search`: a search across types.
    SearchSystem,
    /// `POST [base]`: a batch or transaction Bundle.
    BatchOrTransaction,
    /// `GET [base]/_history`.
    HistorySystem,
    /// `GET [base]/[type]/_history`.
    HistoryType { resource_type: &'static str },
    /// `GET [base]/[type]/[id]/_history[/[vid]]`.
    HistoryInstance { resource_type: &'static str, id: String, version: Option<String> },
    /// `GET [base]/[type]` or `POST [base]/[type]/_search`.
    Search { resource_type: &'static str },
    /// `POST [base]/[type]`.
    Create { resource_type: &'static str },
    /// `GET [base]/[type]/[id]`.
    Read { resource_type: &'static str, id: String },
    /// `PUT`/`PATCH [base]/[type]/[id]`, or conditional (`[base]/[type]?...`) without id.
    Update { resource_type: &'static str, id: Option<String> },
    /// `DELETE [base]/[type]/[id]`, or conditional without id.
    Delete { resource_type: &'static str, id: Option<String> },
    /// `[base]/[type]/[id]/[type2]`: a compartment search.
    Compartment { resource_type: &'static str, id: String, target: Option<&'static str> },
    /// `$operation` at system, type or instance level.
    Operation { resource_type: Option<&'static str>, id: Option<String>, name: String },
}

impl FhirAction {
    /// The resource type the interaction is on, if it is on one.
    pub fn resource_type(&self) -> Option<&'static str> {
        match self {
            Self::Capabilities | Self::Page | Self::SearchSystem | Self::BatchOrTransaction | Self::HistorySystem => {
                None
            }
            Self::HistoryType { resource_type }
            | Self::HistoryInstance { resource_type, .. }
            | Self::Search { resource_type }
            | Self::Create { resource_type }
            | Self::Read { resource_type, .. }
            | Self::Update { resource_type, .. }
            | Self::Delete { resource_type, .. }
            | Self::Compartment { resource_type, .. } => Some(resource_type),
            Self::Operation { resource_type, .. } => *resource_type,
        }
    }

    /// The logical id the interaction is on, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::HistoryInstance { id, .. } | Self::Read { id, .. } | Self::Compartment { id, .. } => Some(id),
            Self::Update { id, .. } | Self::Delete { id, .. } | Self::Operation { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The FHIR restful-interaction code, as AuditEvent.subtype names it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Capabilities => "capabilities",
            Self::Page | Self::SearchSystem | Self::Search { .. } | Self::Compartment { .. } => "search-type",
            Self::BatchOrTransaction => "transaction",
            Self::HistorySystem | Self::HistoryType { .. } | Self::HistoryInstance { .. } => "history-instance",
            Self::Create { .. } => "create",
            Self::Read { .. } => "read",
            Self::Update { .. } => "update",
            Self::Delete { .. } => "delete",
            Self::Operation { .. } => "operation",
        }
    }
}

/// Why a FHIR path is not an interaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionError {
    UnknownResourceType,
    BadId,
    UnsupportedMethod,
    NotAnInteraction,
}

/// A FHIR logical id: 1 to 64 letters, digits, `-` and `.`.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn resource_type(segment: &str) -> Result<&'static str, ActionError> {
    canonical_resource_type(segment).ok_or(ActionError::UnknownResourceType)
}

fn id(segment: &str) -> Result<String, ActionError> {
    if is_fhir_id(segment) { Ok(segment.to_string()) } else { Err(ActionError::BadId) }
}

fn operation(segment: &str) -> Option<String> {
    segment.strip_prefix('$').map(str::to_string)
}

/// Classifies a request below the FHIR base. `has_page` is whether the query
/// carries `_getpages`.
pub fn classify(method: Method, rest: &[String], has_page: bool) -> Result<FhirAction, ActionError> {
    use FhirAction as A;
    use Method as M;
    let segments: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        (M::Get | M::Head, []) if has_page => Ok(A::Page),
        (M::Get | M::Head, []) => Ok(A::SearchSystem),
        (M::Post, []) => Ok(A::BatchOrTransaction),
        (M::Get | M::Head, ["metadata"]) => Ok(A::Capabilities),
        (M::Post, ["_search"]) => Ok(A::SearchSystem),
        (M::Get | M::Head, ["_history"]) => Ok(A::HistorySystem),
        (_, [op]) if op.starts_with('$') => Ok(A::Operation { resource_type: None, id: None, name: op[1..].into() }),
        (_, [t, rest @ ..]) => {
            let resource_type = resource_type(t)?;
            match (method, rest) {
                (M::Get | M::Head, []) => Ok(A::Search { resource_type }),
                (M::Post, []) => Ok(A::Create { resource_type }),
                (M::Put | M::Patch, []) => Ok(A::Update { resource_type, id: None }),
                (M::Delete, []) => Ok(A::Delete { resource_type, id: None }),
                (M::Post, ["_search"]) => Ok(A::Search { resource_type }),
                (M::Get | M::Head, ["_history"]) => Ok(A::HistoryType { resource_type }),
                (_, [op]) if op.starts_with('$') => {
                    Ok(A::Operation { resource_type: Some(resource_type), id: None, name: operation(op).unwrap() })
                }
                (_, [i, rest @ ..]) => {
                    let id = id(i)?;
                    match (method, rest) {
                        (M::Get | M::Head, []) => Ok(A::Read { resource_type, id }),
                        (M::Put | M::Patch, []) => Ok(A::Update { resource_type, id: Some(id) }),
                        (M::Delete, []) => Ok(A::Delete { resource_type, id: Some(id) }),
                        (M::Get | M::Head, ["_history"]) => Ok(A::HistoryInstance { resource_type, id, version: None }),
                        (M::Get | M::Head, ["_history", v]) => {
                            Ok(A::HistoryInstance { resource_type, id, version: Some(self::id(v)?) })
                        }
                        (_, [op]) if op.starts_with('$') => Ok(A::Operation {
                            resource_type: Some(resource_type),
                            id: Some(id),
                            name: operation(op).unwrap(),
                        }),
                        (M::Get | M::Head, ["*"]) => Ok(A::Compartment { resource_type, id, target: None }),
                        (M::Get | M::Head, [target]) => {
                            Ok(A::Compartment { resource_type, id, target: Some(self::resource_type(target)?) })
                        }
                        (M::Other, _) => Err(ActionError::UnsupportedMethod),
                        _ => Err(ActionError::NotAnInteraction),
                    }
                }
                (M::Other, _) => Err(ActionError::UnsupportedMethod),
            }
        }
        (M::Other, _) => Err(ActionError::UnsupportedMethod),
        _ => Err(ActionError::NotAnInteraction),
    }
}

/// The query's parameters, decoded. Forwarded re-encoded from these pairs, so
/// the store reads exactly what was checked.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// Re-encodes query parameters.
pub fn encode_query(params: &[(String, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// Whether an `Accept` header admits a JSON answer. Absent means anything.
pub fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return true };
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        // q=0 means "not this one".
        let refused = parts.any(|p| {
            p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().map(|q| q <= 0.0).unwrap_or(false))
        });
        !refused
            && (media == "*/*"
                || media == "application/*"
                || media == "application/json"
                || media == "application/fhir+json"
                || media == "application/json+fhir")
    })
}

/// Whether a `_format` value asks for JSON.
pub fn format_is_json(format: &str) -> bool {
    matches!(format, "json" | "application/json" | "application/fhir+json" | "application/json+fhir")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        normalise_path(path).unwrap()
    }

    #[test]
    fn double_slashes_collapse() {
        assert_eq!(segs("//fhir///Patient/1"), vec!["fhir", "Patient", "1"]);
    }

    #[test]
    fn dot_segments_are_refused() {
        assert_eq!(normalise_path("/federation/x/fhir/../../../fhir/Patient"), Err(PathError::DotSegment));
        assert_eq!(normalise_path("/fhir/%2e%2e/Patient"), Err(PathError::DotSegment));
        assert_eq!(normalise_path("/fhir/%2E/Patient"), Err(PathError::DotSegment));
    }

    #[test]
    fn encoded_separators_are_refused() {
        assert_eq!(normalise_path("/fhir/Patient%2F1"), Err(PathError::BadSegment));
        assert_eq!(normalise_path("/fhir/Patient%252F1"), Err(PathError::BadSegment));
    }

    #[test]
    fn routes_are_read_from_the_first_segments() {
        assert_eq!(Route::of(segs("/fhir/Patient")), Route::Tenant(vec!["Patient".into()]));
        assert_eq!(
            Route::of(segs("/federation/gm/fhir/Condition")),
            Route::Federation { consumer: "gm".into(), rest: vec!["Condition".into()] }
        );
        assert_eq!(Route::of(segs("/federation/gm/Condition")), Route::Unknown);
        assert_eq!(Route::of(segs("/metadata")), Route::Unknown);
    }

    #[test]
    fn type_names_are_read_in_any_case() {
        assert_eq!(
            classify(Method::Get, &segs("/condition"), false),
            Ok(FhirAction::Search { resource_type: "Condition" })
        );
    }

    #[test]
    fn compartment_searches_are_recognised() {
        assert_eq!(
            classify(Method::Get, &segs("/Patient/1/Condition"), false),
            Ok(FhirAction::Compartment { resource_type: "Patient", id: "1".into(), target: Some("Condition") })
        );
    }

    #[test]
    fn operations_are_recognised_at_every_level() {
        assert!(matches!(
            classify(Method::Get, &segs("/Patient/1/$everything"), false),
            Ok(FhirAction::Operation { .. })
        ));
        assert!(matches!(classify(Method::Post, &segs("/$graphql"), false), Ok(FhirAction::Operation { .. })));
        assert!(matches!(classify(Method::Get, &segs("/Patient/$match"), false), Ok(FhirAction::Operation { .. })));
    }

    #[test]
    fn a_page_is_a_get_on_the_base_with_getpages() {
        assert_eq!(classify(Method::Get, &[], true), Ok(FhirAction::Page));
        assert_eq!(classify(Method::Get, &[], false), Ok(FhirAction::SearchSystem));
    }

    #[test]
    fn bad_ids_are_refused() {
        assert_eq!(classify(Method::Get, &segs("/Patient/a b"), false), Err(ActionError::BadId));
    }

    #[test]
    fn xml_only_accept_is_not_json() {
        assert!(!accepts_json(Some("application/fhir+xml")));
        assert!(accepts_json(Some("application/fhir+xml;q=0.9, application/fhir+json")));
        assert!(accepts_json(Some("*/*")));
        assert!(!accepts_json(Some("application/fhir+json;q=0, application/xml")));
        assert!(accepts_json(None));
    }
}
