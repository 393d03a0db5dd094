//! The tenant's own `/fhir`, and push connectors' `/inbound/<name>`.

use carerecord_fhir::Interaction;

use super::{Decision, FilterRules, Forward, Reason, Target, TypeRule, json_only, open_page};
use crate::caller::Caller;
use crate::request::{self, ActionError, FhirAction, HttpRequest, Method};
use crate::settings::Settings;

const PAGE_ROUTE: &str = "tenant";

pub(super) fn decide(
    request: &HttpRequest<'_>,
    rest: &[String],
    mut query: Vec<(String, String)>,
    caller: &Caller,
    settings: &Settings,
) -> Decision {
    if !caller.organisation.as_ref().is_some_and(|o| settings.organisations.contains(o)) {
        return Decision::deny(Reason::OrganisationNotInTenant);
    }
    if let Err(reason) = json_only(request, &mut query) {
        return Decision::deny(reason);
    }
    let has_page = query.iter().any(|(k, _)| k == "_getpages");
    let action = match request::classify(request.method, rest, has_page) {
        Ok(a) => a,
        Err(e) => return Decision::deny(action_error(e)),
    };
    let scopes = &caller.scopes;
    let every_type = |i: Interaction| scopes.allows_all_types(i);
    let allowed = match &action {
        FhirAction::Capabilities => true,
        // The search that made the page was authorized; the page is bound to its caller.
        FhirAction::Page => true,
        FhirAction::Read { resource_type, .. } | FhirAction::HistoryInstance { resource_type, .. } => {
            scopes.allows(Interaction::Read, resource_type)
        }
        FhirAction::Search { resource_type } | FhirAction::HistoryType { resource_type } => {
            scopes.allows(Interaction::Search, resource_type)
        }
        FhirAction::Create { resource_type } => scopes.allows(Interaction::Create, resource_type),
        FhirAction::Update { resource_type, .. } => scopes.allows(Interaction::Update, resource_type),
        FhirAction::Delete { resource_type, .. } => scopes.allows(Interaction::Delete, resource_type),
        FhirAction::Compartment { resource_type, target, .. } => {
            scopes.allows(Interaction::Read, resource_type)
                && target.map_or_else(|| every_type(Interaction::Search), |t| scopes.allows(Interaction::Search, t))
        }
        // Across types, or with effects a type check cannot bound: only a
        // caller whose scopes cover every type and interaction.
        FhirAction::SearchSystem | FhirAction::HistorySystem => every_type(Interaction::Search),
        FhirAction::BatchOrTransaction | FhirAction::Operation { .. } => Interaction::ALL.into_iter().all(every_type),
    };
    if !allowed {
        return Decision::deny(Reason::ScopeInsufficient);
    }
    // `_has` and chains reach into other types; a caller limited to some types
    // must not search by what it may not read.
    let reaches_other_types = query.iter().any(|(k, _)| k.starts_with("_has") || k.contains('.'));
    if reaches_other_types && !every_type(Interaction::Search) {
        return Decision::deny(Reason::ScopeInsufficient);
    }
    if matches!(action, FhirAction::Page)
        && let Err(reason) = open_page(&mut query, settings, &caller.binding(), PAGE_ROUTE)
    {
        return Decision::deny(reason);
    }
    // Includes and pages can bring other types: let out only what the scopes read.
    let types = if every_type(Interaction::Read) {
        TypeRule::Any
    } else {
        TypeRule::Only(
            carerecord_fhir::R4_RESOURCE_TYPES
                .iter()
                .copied()
                .filter(|t| scopes.allows(Interaction::Read, t) || scopes.allows(Interaction::Search, t))
                .collect(),
        )
    };
    Decision::Allow {
        forward: Forward {
            target: Target::Store,
            method: request.method,
            path: canonical_path(&action, rest),
            query,
            action: Some(action),
        },
        filter: FilterRules {
            types,
            excluded: Default::default(),
            honour_objections: false,
            strip_total: false,
            generic_errors: false,
            caller_base: format!("{}/fhir", settings.public_base_url),
            upstream_base_path: settings.upstream_base_path().to_string(),
            page_caller: caller.binding(),
            page_route: PAGE_ROUTE.to_string(),
        },
    }
}

/// The path to send: the request's segments with type names in FHIR's
/// spelling (ids keep theirs, even one that spells a type).
pub(super) fn canonical_path(action: &FhirAction, rest: &[String]) -> Vec<String> {
    let mut path = rest.to_vec();
    if let (Some(t), Some(first)) = (action.resource_type(), path.first_mut())
        && !first.starts_with('$')
    {
        *first = t.to_string();
    }
    if let (FhirAction::Compartment { target: Some(t), .. }, Some(third)) = (action, path.get_mut(2)) {
        *third = t.to_string();
    }
    path
}

pub(super) fn action_error(error: ActionError) -> Reason {
    match error {
        ActionError::UnknownResourceType => Reason::UnknownResourceType,
        ActionError::BadId => Reason::BadId,
        ActionError::UnsupportedMethod | ActionError::NotAnInteraction => Reason::NotAnInteraction,
    }
}

pub(super) fn decide_inbound(
    request: &HttpRequest<'_>,
    connector: &str,
    rest: Vec<String>,
    query: Vec<(String, String)>,
    caller: &Caller,
    settings: &Settings,
) -> Decision {
    // One reason for "no such connector" and "not yours": names are not disclosed.
    let Some(inbound) = settings.inbound.get(connector) else {
        return Decision::deny(Reason::ConnectorNotAllowed);
    };
    if caller.organisation.as_deref() != Some(inbound.provider_ods_code.as_str()) {
        return Decision::deny(Reason::ConnectorNotAllowed);
    }
    if request.method != Method::Post {
        return Decision::deny(Reason::NotAnInteraction);
    }
    let may_write = carerecord_fhir::R4_RESOURCE_TYPES
        .iter()
        .any(|t| caller.scopes.allows(Interaction::Create, t) || caller.scopes.allows(Interaction::Update, t));
    if !may_write {
        return Decision::deny(Reason::ScopeInsufficient);
    }
    Decision::Allow {
        forward: Forward {
            target: Target::Connector(connector.to_string()),
            method: Method::Post,
            path: rest,
            query,
            action: None,
        },
        filter: FilterRules {
            types: TypeRule::Any,
            excluded: Default::default(),
            honour_objections: false,
            strip_total: false,
            generic_errors: false,
            caller_base: format!("{}/inbound/{connector}", settings.public_base_url),
            upstream_base_path: inbound.upstream.path().trim_end_matches('/').to_string(),
            page_caller: caller.binding(),
            page_route: format!("inbound:{connector}"),
        },
    }
}
