//! Offline validation: the very CEL rules the API server enforces, evaluated
//! locally (kube-cel), so `render` and the controller reject what
//! `kubectl apply` would, with the same messages.

use crate::api::tenant::CareRecordTenant;

/// A spec the operator will not act on, with one message per broken rule,
/// each naming its field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {}", problems.join("; "))]
pub struct InvalidSpec {
    pub problems: Vec<String>,
}

/// Checks a tenant against its CRD's CEL rules. Transition rules (those
/// comparing with `oldSelf`) need the previous object and are left to the API
/// server.
pub fn tenant(tenant: &CareRecordTenant) -> Result<(), InvalidSpec> {
    match tenant.validate_cel() {
        Ok(()) => Ok(()),
        Err(errors) => Err(InvalidSpec { problems: errors.as_slice().iter().map(ToString::to_string).collect() }),
    }
}

/// Checks a connector against its CRD's CEL rules.
pub fn connector(connector: &crate::api::ProviderConnector) -> Result<(), InvalidSpec> {
    connector
        .validate_cel()
        .map_err(|errors| InvalidSpec { problems: errors.as_slice().iter().map(ToString::to_string).collect() })
}

/// Checks an agreement against its CRD's CEL rules.
pub fn agreement(agreement: &crate::api::SharingAgreement) -> Result<(), InvalidSpec> {
    agreement
        .validate_cel()
        .map_err(|errors| InvalidSpec { problems: errors.as_slice().iter().map(ToString::to_string).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tenant::fixtures;

    fn problems(edit: impl FnOnce(&mut CareRecordTenant)) -> Vec<String> {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        edit(&mut t);
        tenant(&t).err().map(|e| e.problems).unwrap_or_default()
    }

    #[test]
    fn the_example_tenant_is_valid() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn lower_case_ods_code_is_rejected_naming_the_field() {
        let p = problems(|t| t.spec.ods_code = "qyg".into());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("odsCode must be 1 to 9 upper-case letters or digits"), "{p:?}");
        assert!(p[0].contains("spec.odsCode"), "{p:?}");
    }

    #[test]
    fn ten_character_ods_code_is_rejected() {
        assert!(!problems(|t| t.spec.ods_code = "ABCDEFGHIJ".into()).is_empty());
    }

    #[test]
    fn hostname_with_a_scheme_is_rejected() {
        let p = problems(|t| t.spec.gateway.hostname = "https://scr.example.nhs.uk".into());
        assert!(p.iter().any(|m| m.contains("gateway.hostname must be a fully qualified")), "{p:?}");
    }

    #[test]
    fn external_mode_without_external_is_rejected() {
        let p = problems(|t| {
            t.spec.database.mode = Some(crate::api::tenant::DatabaseMode::External);
            t.spec.database.storage_size = None;
        });
        assert!(p.iter().any(|m| m.contains("database.external is required")), "{p:?}");
    }

    #[test]
    fn instances_with_statefulset_mode_is_rejected() {
        let p = problems(|t| t.spec.database.instances = Some(3));
        assert!(p.iter().any(|m| m.contains("database.instances only applies")), "{p:?}");
    }

    #[test]
    fn eleven_record_store_replicas_are_rejected() {
        let p = problems(|t| t.spec.record_store.replicas = Some(11));
        assert!(p.iter().any(|m| m.contains("between 1 and 10")), "{p:?}");
    }

    #[test]
    fn namespace_that_is_not_a_dns_label_is_rejected() {
        let p = problems(|t| t.spec.namespace = Some("SCR_Cheshire".into()));
        assert!(p.iter().any(|m| m.contains("namespace must be a DNS label")), "{p:?}");
    }
}
