//! Whether a tenant may take the namespace and hostname it names: the pure
//! judgement the controller makes before writing anything, so that no tenant
//! ever changes another tenant's namespace or route, or a platform namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::tenant::{CareRecordTenant, DatabaseMode};
use crate::render::labels;
use crate::settings::PlatformSettings;

/// Why a tenant may not take its namespace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceConflict {
    #[error("namespace {namespace} cannot belong to a tenant: {why}; choose another spec.namespace")]
    Reserved { namespace: String, why: String },
    #[error(
        "namespace {namespace} belongs to tenant {owner}; nothing was written to it. Choose another spec.namespace"
    )]
    HeldBy { namespace: String, owner: String },
    #[error(
        "namespace {namespace} exists and does not belong to a tenant; nothing was written to it. A tenant only takes a namespace it creates, or one a platform engineer labelled {label}={tenant}"
    )]
    Unmanaged { namespace: String, tenant: String, label: &'static str },
}

/// Judges the tenant's claim on its namespace, given the namespace as it is
/// (None when it does not exist). A namespace belongs to the tenant its
/// tenant label names: tenant names are unique in the cluster, and only the
/// operator (or a platform engineer) can label a namespace.
pub fn namespace(
    tenant: &CareRecordTenant,
    existing: Option<&ObjectMeta>,
    settings: &PlatformSettings,
) -> Result<(), NamespaceConflict> {
    let namespace = tenant.target_namespace();
    if let Some(why) = settings.reserved_namespace(&namespace) {
        return Err(NamespaceConflict::Reserved { namespace, why });
    }
    let Some(existing) = existing else { return Ok(()) };
    let owner = existing.labels.as_ref().and_then(|l| l.get(labels::TENANT));
    match owner {
        Some(owner) if *owner == tenant.name_any() => Ok(()),
        Some(owner) => Err(NamespaceConflict::HeldBy { namespace, owner: owner.clone() }),
        None => Err(NamespaceConflict::Unmanaged { namespace, tenant: tenant.name_any(), label: labels::TENANT }),
    }
}

/// The database mode the namespace's data was written in, as recorded on it
/// (see `labels::DATABASE_MODE`).
pub fn recorded_database_mode(existing: Option<&ObjectMeta>) -> Option<DatabaseMode> {
    let value = existing?.annotations.as_ref()?.get(labels::DATABASE_MODE)?;
    serde_json::from_value(serde_json::Value::String(value.clone())).ok()
}

/// The tenant that holds `tenant`'s hostname instead of it, if another does.
/// Of the tenants naming one hostname, the first created holds it (ties by
/// name); a tenant being deleted holds nothing.
pub fn hostname_holder<'a>(
    tenant: &CareRecordTenant,
    all: impl IntoIterator<Item = &'a CareRecordTenant>,
) -> Option<String> {
    let key = |t: &CareRecordTenant| (t.metadata.creation_timestamp.clone().map(|t| t.0), t.name_any());
    let mine = key(tenant);
    all.into_iter()
        .filter(|other| {
            other.name_any() != tenant.name_any()
                && other.metadata.deletion_timestamp.is_none()
                && other.spec.gateway.hostname == tenant.spec.gateway.hostname
        })
        .map(|other| (key(other), other.name_any()))
        .filter(|(k, _)| *k < mine)
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::render::tenant::fixtures;

    fn namespace_labelled(tenant: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("scr-cheshire-merseyside".into()),
            labels: tenant.map(|t| BTreeMap::from([(labels::TENANT.to_string(), t.to_string())])),
            ..ObjectMeta::default()
        }
    }

    fn tenant_named(name: &str, hostname: &str, created: &str) -> CareRecordTenant {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        t.metadata.name = Some(name.into());
        t.spec.gateway.hostname = hostname.into();
        t.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        t
    }

    #[test]
    fn a_namespace_that_does_not_exist_can_be_taken() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        assert_eq!(namespace(&t, None, &PlatformSettings::default()), Ok(()));
    }

    #[test]
    fn a_namespace_labelled_for_the_tenant_is_its_own() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let ns = namespace_labelled(Some("cheshire-merseyside"));
        assert_eq!(namespace(&t, Some(&ns), &PlatformSettings::default()), Ok(()));
    }

    #[test]
    fn another_tenants_namespace_is_refused_naming_its_owner() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let ns = namespace_labelled(Some("greater-manchester"));
        let err = namespace(&t, Some(&ns), &PlatformSettings::default()).unwrap_err();
        assert!(err.to_string().contains("belongs to tenant greater-manchester"), "{err}");
    }

    #[test]
    fn an_existing_namespace_of_no_tenant_is_refused() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let err = namespace(&t, Some(&namespace_labelled(None)), &PlatformSettings::default()).unwrap_err();
        assert!(matches!(err, NamespaceConflict::Unmanaged { .. }), "{err}");
    }

    #[test]
    fn platform_namespaces_are_refused_even_when_absent() {
        for ns in ["gateway-system", "kube-system", "default", "ics-system"] {
            let mut t = fixtures::tenant(fixtures::CHESHIRE);
            t.spec.namespace = Some(ns.into());
            let err = namespace(&t, None, &PlatformSettings::default()).unwrap_err();
            assert!(matches!(err, NamespaceConflict::Reserved { .. }), "{ns}: {err}");
        }
    }

    #[test]
    fn the_recorded_database_mode_is_read_from_the_namespace() {
        let mut ns = namespace_labelled(Some("cheshire-merseyside"));
        ns.annotations = Some(BTreeMap::from([(labels::DATABASE_MODE.to_string(), "StatefulSet".to_string())]));
        assert_eq!(recorded_database_mode(Some(&ns)), Some(DatabaseMode::StatefulSet));
        assert_eq!(recorded_database_mode(Some(&namespace_labelled(None))), None);
    }

    #[test]
    fn the_first_tenant_created_holds_a_shared_hostname() {
        let first = tenant_named("alpha", "scr.example.nhs.uk", "2026-01-01T00:00:00Z");
        let second = tenant_named("beta", "scr.example.nhs.uk", "2026-02-01T00:00:00Z");
        let all = [first.clone(), second.clone()];
        assert_eq!(hostname_holder(&first, &all), None);
        assert_eq!(hostname_holder(&second, &all), Some("alpha".into()));
    }

    #[test]
    fn a_tenant_being_deleted_holds_no_hostname() {
        let mut first = tenant_named("alpha", "scr.example.nhs.uk", "2026-01-01T00:00:00Z");
        first.metadata.deletion_timestamp = Some(Time("2026-03-01T00:00:00Z".parse().unwrap()));
        let second = tenant_named("beta", "scr.example.nhs.uk", "2026-02-01T00:00:00Z");
        assert_eq!(hostname_holder(&second, &[first, second.clone()]), None);
    }

    #[test]
    fn different_hostnames_never_conflict() {
        let first = tenant_named("alpha", "a.example.nhs.uk", "2026-01-01T00:00:00Z");
        let second = tenant_named("beta", "b.example.nhs.uk", "2026-02-01T00:00:00Z");
        assert_eq!(hostname_holder(&second, &[first, second.clone()]), None);
    }
}
