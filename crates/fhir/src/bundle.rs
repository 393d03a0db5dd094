//! Reading resources and Bundles as JSON.

use serde_json::Value;

/// The `resourceType` of a resource, if it has one.
pub fn resource_type(resource: &Value) -> Option<&str> {
    resource.get("resourceType")?.as_str()
}

/// The logical `id` of a resource, if it has one.
pub fn resource_id(resource: &Value) -> Option<&str> {
    resource.get("id")?.as_str()
}

/// Whether `resource` is a Bundle.
pub fn is_bundle(resource: &Value) -> bool {
    resource_type(resource) == Some("Bundle")
}

/// The `entry` list of a Bundle, to filter in place. `None` when `bundle` is
/// not a Bundle or has no entries.
pub fn entries_mut(bundle: &mut Value) -> Option<&mut Vec<Value>> {
    if !is_bundle(bundle) {
        return None;
    }
    bundle.get_mut("entry")?.as_array_mut()
}

/// The resources of a Bundle's entries, skipping entries without one.
pub fn entry_resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle.get("entry").and_then(Value::as_array).into_iter().flatten().filter_map(|e| e.get("resource"))
}

/// The `contained` resources of a resource, to filter in place.
pub fn contained_mut(resource: &mut Value) -> Option<&mut Vec<Value>> {
    resource.get_mut("contained")?.as_array_mut()
}

/// The `link` entries of a Bundle (`relation`, `url`), to rewrite in place.
pub fn links_mut(bundle: &mut Value) -> Option<&mut Vec<Value>> {
    bundle.get_mut("link")?.as_array_mut()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entry_resources_skip_entries_without_a_resource() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Patient", "id": "1"}},
            {"request": {"method": "DELETE", "url": "Patient/2"}}
        ]});
        let types: Vec<_> = entry_resources(&bundle).filter_map(resource_type).collect();
        assert_eq!(types, vec!["Patient"]);
    }

    #[test]
    fn entries_of_a_non_bundle_are_none() {
        let mut patient = json!({"resourceType": "Patient", "entry": []});
        assert!(entries_mut(&mut patient).is_none());
    }
}
