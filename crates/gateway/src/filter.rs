//! The response filter: a pure function from what the store answered to
//! what may leave. It withholds every resource (search matches, includes,
//! contained resources, resources inside nested Bundles and operation
//! output) of an unshared type, with an excluded security label, or about an
//! objecting patient; rewrites links and `fullUrl`s to the caller's base;
//! binds page ids to the caller; and drops `Bundle.total`, which would count
//! what was withheld.

use std::collections::BTreeSet;

use carerecord_fhir::{bundle, patient, security};
use serde_json::Value;

use crate::decision::FilterRules;
use crate::paging::PageKey;
use crate::request;

/// What may leave.
#[derive(Clone, Debug, PartialEq)]
pub enum Filtered {
    /// This body, filtered and rewritten.
    Pass(Value),
    /// Nothing: the single resource asked for is withheld (answer as not found).
    Withheld,
}

/// The filter's inputs besides the body.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub rules: &'a FilterRules,
    /// Logical ids of patients who object to sharing with this caller.
    pub objecting: &'a BTreeSet<String>,
    pub pages: &'a PageKey,
}

/// Filters a response body.
pub fn filter_response(body: Value, cx: Context<'_>) -> Filtered {
    if bundle::resource_type(&body) == Some("OperationOutcome") {
        return Filtered::Pass(body);
    }
    if is_response_envelope(&body) {
        return Filtered::Pass(filter_bundle(body, cx, true));
    }
    match keep(body, cx) {
        Some(resource) => Filtered::Pass(resource),
        None => Filtered::Withheld,
    }
}

/// A Bundle the store built to answer (search results, history, a batch or
/// transaction response), as opposed to a stored Bundle, which is a record
/// like any other and must itself be a shared type.
fn is_response_envelope(body: &Value) -> bool {
    bundle::is_bundle(body)
        && matches!(
            body.get("type").and_then(Value::as_str),
            Some("searchset" | "history" | "batch-response" | "transaction-response")
        )
}

/// Whether a resource may leave, judged on itself alone.
pub fn admits(resource: &Value, cx: Context<'_>) -> bool {
    let Some(resource_type) = bundle::resource_type(resource) else { return false };
    cx.rules.types.admits(resource_type)
        && !security::is_in_any(resource, &cx.rules.excluded)
        && !(cx.rules.honour_objections && patient::patient_ids(resource).iter().any(|p| cx.objecting.contains(p)))
}

/// The resource, cleaned inside, if it may leave.
fn keep(mut resource: Value, cx: Context<'_>) -> Option<Value> {
    if !admits(&resource, cx) {
        return None;
    }
    if let Some(contained) = bundle::contained_mut(&mut resource) {
        // Recursively: FHIR forbids contained inside contained, but a store may hold it anyway.
        let taken = std::mem::take(contained);
        *contained = taken.into_iter().filter_map(|c| keep(c, cx)).collect();
    }
    if bundle::is_bundle(&resource) {
        return Some(filter_bundle(resource, cx, false));
    }
    if bundle::resource_type(&resource) == Some("Parameters") {
        filter_parameters(&mut resource, cx);
    }
    Some(resource)
}

fn filter_parameters(parameters: &mut Value, cx: Context<'_>) {
    if let Some(list) = parameters.get_mut("parameter").and_then(Value::as_array_mut) {
        filter_parameter_list(list, cx);
    }
}

/// Operation output: each parameter's resource, and each part's, recursively.
fn filter_parameter_list(list: &mut Vec<Value>, cx: Context<'_>) {
    list.retain_mut(|p| {
        if let Some(resource) = p.get_mut("resource").map(Value::take) {
            match keep(resource, cx) {
                Some(kept) => p["resource"] = kept,
                None => return false,
            }
        }
        if let Some(parts) = p.get_mut("part").and_then(Value::as_array_mut) {
            filter_parameter_list(parts, cx);
        }
        true
    });
}

fn filter_bundle(mut bundle: Value, cx: Context<'_>, top: bool) -> Value {
    if cx.rules.strip_total
        && let Some(object) = bundle.as_object_mut()
    {
        object.remove("total");
    }
    if let Some(entries) = bundle::entries_mut(&mut bundle) {
        let taken = std::mem::take(entries);
        *entries = taken.into_iter().filter_map(|entry| filter_entry(entry, cx)).collect();
    }
    if let Some(links) = bundle::links_mut(&mut bundle) {
        let taken = std::mem::take(links);
        *links = taken
            .into_iter()
            .filter_map(|mut link| {
                // Only the top Bundle's links point at the store; a nested Bundle's are someone else's.
                let url = link.get("url")?.as_str()?;
                let rewritten = if top { rewrite_url(url, cx, true)? } else { url.to_string() };
                link["url"] = Value::String(rewritten);
                Some(link)
            })
            .collect();
    }
    bundle
}

fn filter_entry(mut entry: Value, cx: Context<'_>) -> Option<Value> {
    let resource = entry.get_mut("resource").map(Value::take)?;
    // An outcome entry says something about the search, not about a record.
    let outcome = bundle::resource_type(&resource) == Some("OperationOutcome")
        && entry.pointer("/search/mode").and_then(Value::as_str) == Some("outcome");
    let resource = if outcome { resource } else { keep(resource, cx)? };
    let object = entry.as_object_mut()?;
    match (bundle::resource_type(&resource), bundle::resource_id(&resource)) {
        (Some(t), Some(id)) if !outcome => {
            object.insert("fullUrl".into(), Value::String(format!("{}/{t}/{id}", cx.rules.caller_base)));
        }
        _ => {
            object.remove("fullUrl");
        }
    }
    if let Some(location) = entry.pointer_mut("/response/location") {
        let rewritten = location.as_str().and_then(|l| rewrite_url(l, cx, false));
        match rewritten {
            Some(r) => *location = Value::String(r),
            None => {
                if let Some(response) = entry.get_mut("response").and_then(Value::as_object_mut) {
                    response.remove("location");
                }
            }
        }
    }
    entry.as_object_mut()?.insert("resource".into(), resource);
    Some(entry)
}

/// A store URL (absolute, or relative to the store's base) moved under the
/// caller's base, with `_getpages` bound to the caller. `None` for a URL
/// that does not point into the store: it is dropped rather than leaked.
fn rewrite_url(url: &str, cx: Context<'_>, bind_pages: bool) -> Option<String> {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let path = match before_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => before_query,
    };
    let base = cx.rules.upstream_base_path.as_str();
    let absolute = before_query.contains("://") || path.starts_with('/');
    let below = match path.strip_prefix(base) {
        // `/fhir` itself or `/fhir/...`, never `/fhirx`.
        Some(rest) if absolute && (rest.is_empty() || rest.starts_with('/')) => rest.to_string(),
        _ if absolute => return None,
        // Relative to the store's base, e.g. `Patient/1/_history/1`.
        _ if path.is_empty() => String::new(),
        _ => format!("/{path}"),
    };
    let mut rewritten = format!("{}{below}", cx.rules.caller_base);
    if let Some(query) = query {
        let mut params = request::parse_query(Some(query));
        for (k, v) in params.iter_mut() {
            if k == "_getpages" && bind_pages {
                *v = cx.pages.bind(v, &cx.rules.page_caller, &cx.rules.page_route);
            }
        }
        // The store always answers JSON; a `_format` in its links means nothing to the caller.
        params.retain(|(k, _)| k != "_format");
        if !params.is_empty() {
            rewritten.push('?');
            rewritten.push_str(&request::encode_query(&params));
        }
    }
    Some(rewritten)
}

/// A `Location`/`Content-Location` header from the store, under the caller's base.
pub fn rewrite_location(location: &str, cx: Context<'_>) -> Option<String> {
    rewrite_url(location, cx, false)
}

#[cfg(test)]
mod tests;
