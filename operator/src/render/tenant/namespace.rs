//! The tenant namespace and its guard rails (quota, default limits).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Ctx;
use crate::render::labels;

/// The namespace, enforcing Pod Security `restricted`.
pub(super) fn namespace(ctx: &Ctx) -> Namespace {
    let mut l = labels::tenant_labels(&ctx.name, "namespace");
    for mode in ["enforce", "audit", "warn"] {
        l.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".into());
        l.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".into());
    }
    let annotations = BTreeMap::from([
        ("carerecord.dev/display-name".to_string(), ctx.tenant.spec.display_name.clone()),
        ("carerecord.dev/ods-code".to_string(), ctx.tenant.spec.ods_code.clone()),
        (labels::DATABASE_MODE.to_string(), ctx.facts.database_mode.as_str().to_string()),
    ]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(ctx.namespace.clone()),
            labels: Some(l),
            annotations: Some(annotations),
            owner_references: super::owner_reference(ctx.tenant).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Name of the tenant's ResourceQuota.
pub const QUOTA: &str = "tenant-quota";

const DEFAULT_CPU: &str = "16";
const DEFAULT_MEMORY: &str = "64Gi";
const DEFAULT_STORAGE: &str = "500Gi";
const DEFAULT_MAX_CONNECTORS: i32 = 50;

/// Caps the namespace's compute, storage and number of connectors.
pub(super) fn quota(ctx: &Ctx) -> ResourceQuota {
    let q = ctx.tenant.spec.quota.as_ref();
    let pick = |v: Option<&Quantity>, d: &str| v.cloned().unwrap_or_else(|| Quantity(d.into()));
    let max_connectors = q.and_then(|q| q.max_connectors).unwrap_or(DEFAULT_MAX_CONNECTORS);
    let hard = BTreeMap::from([
        ("requests.cpu".to_string(), pick(q.and_then(|q| q.cpu.as_ref()), DEFAULT_CPU)),
        ("requests.memory".to_string(), pick(q.and_then(|q| q.memory.as_ref()), DEFAULT_MEMORY)),
        ("requests.storage".to_string(), pick(q.and_then(|q| q.storage.as_ref()), DEFAULT_STORAGE)),
        ("count/providerconnectors.carerecord.dev".to_string(), Quantity(max_connectors.to_string())),
    ]);
    ResourceQuota {
        metadata: ctx.meta(QUOTA, "quota"),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..ResourceQuotaSpec::default() }),
        ..ResourceQuota::default()
    }
}

/// Defaults for containers that do not say what they need, so that the
/// quota's request totals can be enforced.
pub(super) fn limit_range(ctx: &Ctx) -> LimitRange {
    let q = |s: &str| Quantity(s.into());
    LimitRange {
        metadata: ctx.meta("tenant-limits", "quota"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(BTreeMap::from([("memory".to_string(), q("1Gi"))])),
                default_request: Some(BTreeMap::from([
                    ("cpu".to_string(), q("100m")),
                    ("memory".to_string(), q("256Mi")),
                ])),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, render};
    use crate::api::tenant::DatabaseMode;
    use crate::settings::PlatformSettings;

    #[test]
    fn namespace_enforces_restricted_pod_security() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let ns = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).namespace;
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    }

    #[test]
    fn quota_counts_connectors() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let quota = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).quota;
        let hard = quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["count/providerconnectors.carerecord.dev"].0, "50");
    }
}
