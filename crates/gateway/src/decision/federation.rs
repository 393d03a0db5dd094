//! `/federation/<consumer>/fhir/...`: another tenant reading under an
//! agreement. Read and search only, only agreed types, only parameters the
//! gateway understands; everything else is refused, because a parameter it
//! does not understand is a parameter it cannot prove harmless.

use carerecord_fhir::{Interaction, canonical_resource_type};
use jiff::Timestamp;

use super::tenant::{action_error, canonical_path};
use super::{Decision, FilterRules, Forward, Reason, Target, TypeRule, json_only, open_page};
use crate::caller::Caller;
use crate::policy::{Agreement, Policy};
use crate::request::{self, FhirAction, HttpRequest, Method};
use crate::settings::Settings;

/// Search parameters federation passes through: simple token, date, string
/// and patient-reference parameters that filter within the searched type.
/// Result controls understood besides: `_count`, `_sort`, `_include`,
/// `_revinclude`, `_pretty`. Anything else (chains, `_has`, `_contained`, `_elements`, `_summary`,
/// `_total`, `_type`, `_query`, `_filter`, ...) is refused.
const SEARCH_PARAMETERS: &[&str] = &[
    "_id",
    "_lastUpdated",
    "patient",
    "subject",
    "identifier",
    "code",
    "category",
    "status",
    "clinical-status",
    "verification-status",
    "date",
    "onset-date",
    "recorded-date",
    "authoredon",
    "effective",
    "period",
    "type",
    "class",
    "name",
    "family",
    "given",
    "birthdate",
    "gender",
];

/// Parameters of a paging request.
const PAGE_PARAMETERS: &[&str] = &["_getpages", "_getpagesoffset", "_count", "_bundletype", "_pretty"];

/// Modifiers that narrow a parameter within its own type.
const MODIFIERS: &[&str] = &["exact", "contains", "missing", "not", "text"];

/// Parameters that reference the patient.
const PATIENT_REFERENCES: &[&str] = &["patient", "subject"];

/// The largest page a consumer may ask for.
const MAX_COUNT: u32 = 500;

fn route(agreement: &Agreement) -> String {
    format!("agreement:{}", agreement.id)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn decide(
    request: &HttpRequest<'_>,
    consumer: &str,
    rest: &[String],
    mut query: Vec<(String, String)>,
    caller: &Caller,
    settings: &Settings,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    let Some(organisation) = caller.organisation.as_deref() else {
        return Decision::deny(Reason::NoAgreement);
    };
    // The consumer in the path and the caller's organisation must both match:
    // the path alone never identifies a consumer.
    let candidates: Vec<&Agreement> = policy
        .agreements
        .iter()
        .filter(|a| a.consumer_tenant == consumer && a.consumer_organisations.contains(organisation))
        .collect();
    if candidates.is_empty() {
        return Decision::deny(Reason::NoAgreement);
    }
    let active: Vec<&Agreement> = candidates.into_iter().filter(|a| a.is_active_at(now)).collect();
    if active.is_empty() {
        return Decision::deny(Reason::AgreementNotActive);
    }
    if request.method != Method::Get {
        return Decision::deny(Reason::ReadOnly);
    }
    if let Err(reason) = json_only(request, &mut query) {
        return Decision::deny(reason);
    }
    let has_page = query.iter().any(|(k, _)| k == "_getpages");
    let action = match request::classify(request.method, rest, has_page) {
        Ok(a) => a,
        Err(e) => return Decision::deny(action_error(e)),
    };
    let binding = caller.binding();
    let (agreement, interaction) = match &action {
        FhirAction::Page => {
            if let Err(reason) = check_names(&query, PAGE_PARAMETERS) {
                return Decision::deny(reason);
            }
            // The page token names the agreement it was issued under.
            let token = query.iter().find(|(k, _)| k == "_getpages").map(|(_, v)| v.clone()).unwrap_or_default();
            let Some(agreement) =
                active.iter().copied().find(|a| settings.page_key.open(&token, &binding, &route(a)).is_some())
            else {
                return Decision::deny(Reason::PageNotBound);
            };
            if open_page(&mut query, settings, &binding, &route(agreement)).is_err() {
                return Decision::deny(Reason::PageNotBound);
            }
            (agreement, None)
        }
        FhirAction::Read { resource_type, .. } | FhirAction::Search { resource_type } => {
            let interaction =
                if matches!(action, FhirAction::Read { .. }) { Interaction::Read } else { Interaction::Search };
            let Some(agreement) = active.iter().copied().find(|a| a.shares(resource_type)) else {
                return Decision::deny(Reason::TypeNotShared);
            };
            (agreement, Some((interaction, *resource_type)))
        }
        _ => return Decision::deny(Reason::InteractionNotAllowed),
    };
    if let Some((interaction, resource_type)) = interaction {
        if !caller.scopes.allows(interaction, resource_type) {
            return Decision::deny(Reason::ScopeInsufficient);
        }
        let checked = match interaction {
            // A read takes no search parameters.
            Interaction::Read => check_names(&query, &["_pretty"]),
            _ => check_search(&query, agreement),
        };
        if let Err(reason) = checked {
            return Decision::deny(reason);
        }
    }
    Decision::AllowFederated {
        agreement: agreement.id.clone(),
        forward: Forward {
            target: Target::Store,
            method: Method::Get,
            path: canonical_path(&action, rest),
            query,
            action: Some(action),
        },
        filter: FilterRules {
            types: TypeRule::Only(agreement.resources.clone()),
            excluded: agreement.excluded.clone(),
            honour_objections: true,
            strip_total: true,
            generic_errors: true,
            caller_base: format!("{}/federation/{consumer}/fhir", settings.public_base_url),
            upstream_base_path: settings.upstream_base_path().to_string(),
            page_caller: binding,
            page_route: route(agreement),
        },
    }
}

fn check_names(query: &[(String, String)], allowed: &[&str]) -> Result<(), Reason> {
    match query.iter().all(|(k, _)| allowed.contains(&k.as_str())) {
        true => Ok(()),
        false => Err(Reason::ParameterNotAllowed),
    }
}

fn check_search(query: &[(String, String)], agreement: &Agreement) -> Result<(), Reason> {
    for (name, value) in query {
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (name.as_str(), None),
        };
        match base {
            "_include" | "_revinclude" => {
                // `:iterate`/`:recurse` follow references transitively, beyond what one check can see.
                if modifier.is_some() {
                    return Err(Reason::IncludeNotAllowed);
                }
                check_include(value, agreement)?;
            }
            "_count" => {
                if modifier.is_some() || !value.parse::<u32>().is_ok_and(|n| n <= MAX_COUNT) {
                    return Err(Reason::ParameterNotAllowed);
                }
            }
            "_sort" => {
                let known = value.split(',').all(|key| {
                    let key = key.strip_prefix('-').unwrap_or(key);
                    SEARCH_PARAMETERS.contains(&key)
                });
                if modifier.is_some() || !known {
                    return Err(Reason::ParameterNotAllowed);
                }
            }
            "_pretty" if modifier.is_none() => {}
            b if SEARCH_PARAMETERS.contains(&b) => {
                check_modifier(b, modifier)?;
                if PATIENT_REFERENCES.contains(&b) && modifier != Some("identifier") && modifier != Some("missing") {
                    check_patient_reference(value)?;
                }
            }
            _ => return Err(Reason::ParameterNotAllowed),
        }
    }
    Ok(())
}

fn check_modifier(base: &str, modifier: Option<&str>) -> Result<(), Reason> {
    let Some(modifier) = modifier else { return Ok(()) };
    let patient_reference = PATIENT_REFERENCES.contains(&base);
    let allowed = MODIFIERS.contains(&modifier) || (patient_reference && matches!(modifier, "Patient" | "identifier"));
    if allowed { Ok(()) } else { Err(Reason::ParameterNotAllowed) }
}

/// A patient reference value: `id`, `Patient/id`, or a comma list of them.
/// An absolute URL or another type would search through something unchecked.
fn check_patient_reference(value: &str) -> Result<(), Reason> {
    let ok = value.split(',').all(|v| request::is_fhir_id(v.strip_prefix("Patient/").unwrap_or(v)));
    if ok { Ok(()) } else { Err(Reason::ParameterNotAllowed) }
}

/// `_include=Type:param[:Target]`: explicit, shared types only.
fn check_include(value: &str, agreement: &Agreement) -> Result<(), Reason> {
    let parts: Vec<&str> = value.split(':').collect();
    let shared = |t: &str| canonical_resource_type(t).is_some_and(|c| c == t && agreement.shares(c));
    let param_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok = match parts.as_slice() {
        [source, param] => shared(source) && param_ok(param),
        [source, param, target] => shared(source) && param_ok(param) && shared(target),
        _ => false,
    };
    if ok { Ok(()) } else { Err(Reason::IncludeNotAllowed) }
}
