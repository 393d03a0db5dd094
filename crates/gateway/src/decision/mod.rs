//! The decision: a pure function of the request, the caller, the
//! configuration, the policy and the time. It says whether to forward, where,
//! exactly what, and how to filter what comes back.

mod federation;
mod reason;
mod tenant;

use std::collections::BTreeSet;

use carerecord_fhir::SensitiveCategory;
use jiff::Timestamp;

pub use reason::Reason;

use crate::caller::Caller;
use crate::policy::Policy;
use crate::request::{self, FhirAction, HttpRequest, Method, Route};
use crate::settings::Settings;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Forward on the tenant's own path or to a push connector; filter the answer by `filter`.
    Allow { forward: Forward, filter: FilterRules },
    /// Forward under an agreement; filter the answer by the agreement.
    AllowFederated { agreement: String, forward: Forward, filter: FilterRules },
    /// Refuse.
    Deny { status: u16, reason: Reason },
}

impl Decision {
    fn deny(reason: Reason) -> Self {
        Self::Deny { status: reason.status(), reason }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The tenant's record store.
    Store,
    /// A push connector, by name.
    Connector(String),
}

/// The upstream request, built from what was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub target: Target,
    pub method: Method,
    /// Path segments below the target's base, canonical (type names spelt as FHIR spells them).
    pub path: Vec<String>,
    /// Query parameters, decoded; re-encoded on the way out.
    pub query: Vec<(String, String)>,
    /// The FHIR interaction, when the target is the store.
    pub action: Option<FhirAction>,
}

/// Which resource types may leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeRule {
    /// Every type (the caller's scopes cover every type).
    Any,
    /// Only these.
    Only(BTreeSet<&'static str>),
}

impl TypeRule {
    pub fn admits(&self, resource_type: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(types) => types.contains(resource_type),
        }
    }
}

/// How the answer is filtered and rewritten before it leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterRules {
    /// Types that may leave; others are withheld.
    pub types: TypeRule,
    /// Categories whose labelled resources are withheld.
    pub excluded: BTreeSet<SensitiveCategory>,
    /// Whether patients' objections apply (federation).
    pub honour_objections: bool,
    /// Whether `Bundle.total` is removed (it could count withheld resources).
    pub strip_total: bool,
    /// Whether an error from the store is replaced by a generic one, so that
    /// its wording cannot tell what exists.
    pub generic_errors: bool,
    /// The caller's FHIR base, e.g. `https://host/federation/gm/fhir`.
    pub caller_base: String,
    /// The store's base path, e.g. `/fhir`: links under it are rewritten.
    pub upstream_base_path: String,
    /// Page ids are bound to this caller ...
    pub page_caller: String,
    /// ... on this route.
    pub page_route: String,
}

/// Decides what to do with `request` from `caller` at `now`.
pub fn decide(
    request: &HttpRequest<'_>,
    caller: &Caller,
    settings: &Settings,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    let segments = match request::normalise_path(request.path) {
        Ok(s) => s,
        Err(_) => return Decision::deny(Reason::BadPath),
    };
    let query = request::parse_query(request.query);
    match Route::of(segments) {
        Route::Tenant(rest) => tenant::decide(request, &rest, query, caller, settings),
        Route::Federation { consumer, rest } => {
            federation::decide(request, &consumer, &rest, query, caller, settings, policy, now)
        }
        Route::Inbound { connector, rest } => {
            tenant::decide_inbound(request, &connector, rest, query, caller, settings)
        }
        Route::Unknown => Decision::deny(Reason::UnknownRoute),
    }
}

/// Checks `_format` and `Accept`, and drops `_format` from the forwarded
/// query: the store is always asked for JSON, the only form the filter reads.
fn json_only(request: &HttpRequest<'_>, query: &mut Vec<(String, String)>) -> Result<(), Reason> {
    if !request::accepts_json(request.accept) {
        return Err(Reason::FormatNotAcceptable);
    }
    if query.iter().any(|(k, v)| k == "_format" && !request::format_is_json(v)) {
        return Err(Reason::FormatNotAcceptable);
    }
    query.retain(|(k, _)| k != "_format");
    Ok(())
}

/// Replaces a bound `_getpages` token by the store's page id.
fn open_page(query: &mut [(String, String)], settings: &Settings, caller: &str, route: &str) -> Result<(), Reason> {
    let mut opened = false;
    for (k, v) in query.iter_mut() {
        if k == "_getpages" {
            *v = settings.page_key.open(v, caller, route).ok_or(Reason::PageNotBound)?;
            opened = true;
        }
    }
    if opened { Ok(()) } else { Err(Reason::PageNotBound) }
}

#[cfg(test)]
mod tests;
