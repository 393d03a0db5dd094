//! Labels and annotations the operator puts on what it manages.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const NAME: &str = "app.kubernetes.io/name";
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Name of the tenant a child belongs to. Prune lists by this label.
pub const TENANT: &str = "carerecord.dev/tenant";
/// Name of the connector a child belongs to.
pub const CONNECTOR: &str = "carerecord.dev/connector";
/// Name of the sharing agreement a child belongs to.
pub const AGREEMENT: &str = "carerecord.dev/agreement";
/// Marks a child that holds or protects patient data: it is kept (orphaned,
/// never deleted) when no longer desired or when a `Retain` tenant is
/// deleted.
pub const RETAIN: &str = "carerecord.dev/retain";
/// Set on children kept after their tenant was deleted.
pub const RETAINED: &str = "carerecord.dev/retained";
/// Annotation recording which tenant (by UID) owns a child that holds or
/// protects patient data. Such children carry no ownerReference, so no
/// garbage collection (a foreground or background cascade, an Argo CD prune,
/// a finalizer removed by hand) can ever delete them: only the operator,
/// acting on `deletionPolicy: Delete`, does.
pub const OWNER_UID: &str = "carerecord.dev/owner-uid";
/// Annotation on retained data recording the tenant and UID it belonged to.
pub const RETAINED_FROM: &str = "carerecord.dev/retained-from";
/// Annotation on the namespace and database objects recording the database
/// mode their data was written in, so a tenant re-created over retained data
/// re-attaches to it instead of starting an empty database.
pub const DATABASE_MODE: &str = "carerecord.dev/database-mode";
/// Pod label that network policies select on.
pub const POD_COMPONENT: &str = "carerecord.dev/component";

pub const MANAGER_VALUE: &str = "ics-operator";

/// Labels every child of a tenant carries.
pub fn tenant_labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER_VALUE.to_string()),
        (PART_OF.to_string(), "carerecord".to_string()),
        (COMPONENT.to_string(), component.to_string()),
        (TENANT.to_string(), tenant.to_string()),
    ])
}

/// Label selector matching the tenant's own children (not those of its
/// connectors or agreements, which carry the tenant label too).
pub fn tenant_selector(tenant: &str) -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE},{TENANT}={tenant},!{CONNECTOR},!{AGREEMENT}")
}

/// Label selector matching a connector's children.
pub fn connector_selector(connector: &str) -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE},{CONNECTOR}={connector}")
}

/// Label selector matching an agreement's children.
pub fn agreement_selector(agreement: &str) -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE},{AGREEMENT}={agreement}")
}

/// Label selector matching every object the operator manages: what the
/// tenant controller watches, mapping each to its owner.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE}")
}

/// Label selector matching every managed object carrying `owner_label`
/// (CONNECTOR or AGREEMENT): what a controller watches of its children.
pub fn owned_selector(owner_label: &str) -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE},{owner_label}")
}

/// Pod labels for a component of a tenant.
pub fn pod_labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), component.to_string()),
        (TENANT.to_string(), tenant.to_string()),
        (POD_COMPONENT.to_string(), component.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_manager_and_the_owner() {
        assert_eq!(connector_selector("gp"), "app.kubernetes.io/managed-by=ics-operator,carerecord.dev/connector=gp");
        assert_eq!(agreement_selector("dsa"), "app.kubernetes.io/managed-by=ics-operator,carerecord.dev/agreement=dsa");
        assert_eq!(owned_selector(AGREEMENT), "app.kubernetes.io/managed-by=ics-operator,carerecord.dev/agreement");
        assert_eq!(managed_selector(), "app.kubernetes.io/managed-by=ics-operator");
    }
}
