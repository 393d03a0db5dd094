//! FHIR R4 facts the CRDs validate against. The list itself lives in
//! `carerecord-fhir`, shared with the data plane, so the operator, the CEL
//! rules and the record gateway can never disagree on what a resource type
//! is.

pub use carerecord_fhir::{R4_RESOURCE_TYPES, is_resource_type};

/// CEL rule: every element of a list of strings is an R4 resource type.
pub fn resource_types_rule() -> String {
    let list: Vec<String> = R4_RESOURCE_TYPES.iter().map(|t| format!("'{t}'")).collect();
    format!("self.all(t, t in [{}])", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cel_rule_names_every_r4_type() {
        let rule = resource_types_rule();
        assert!(R4_RESOURCE_TYPES.iter().all(|t| rule.contains(&format!("'{t}'"))));
    }
}
