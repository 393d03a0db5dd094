//! The Kubernetes permissions the operator's code paths use. The Helm
//! chart's ClusterRole must grant exactly these (a test compares them), so
//! a new child kind cannot ship without its RBAC, and nothing extra is granted.

use std::collections::{BTreeMap, BTreeSet};

use crate::render::child::ChildKind;

/// (API group, resource) -> verbs.
pub type Rules = BTreeMap<(String, String), BTreeSet<String>>;

fn add(rules: &mut Rules, group: &str, resource: &str, verbs: &[&str]) {
    rules.entry((group.into(), resource.into())).or_default().extend(verbs.iter().map(|v| v.to_string()));
}

/// Cluster-wide permissions (the ClusterRole).
pub fn cluster_rules() -> Rules {
    let mut r = Rules::new();
    // Own kinds: watched, finalizer patched, status applied.
    for kind in ["carerecordtenants", "providerconnectors", "sharingagreements"] {
        add(&mut r, "carerecord.dev", kind, &["get", "list", "watch"]);
        add(&mut r, "carerecord.dev", &format!("{kind}/status"), &["patch"]);
    }
    add(&mut r, "carerecord.dev", "carerecordtenants", &["patch"]);
    // Children block their owner's foreground deletion
    // (`blockOwnerDeletion`), which the OwnerReferencesPermissionEnforcement
    // admission plugin allows only to whoever may update the owner's
    // finalizers.
    for kind in ["carerecordtenants", "providerconnectors", "sharingagreements"] {
        add(&mut r, "carerecord.dev", &format!("{kind}/finalizers"), &["update"]);
    }
    // Children: observed by label, applied (server-side apply that creates
    // an object is authorised as create), pruned or orphaned.
    for kind in ChildKind::ALL {
        let gvk = kind.gvk();
        add(&mut r, &gvk.group, kind.plural(), &["get", "list", "watch", "create", "patch", "delete"]);
    }
    // Connector pods, watched (stripped to name, labels and address) to
    // read each connector's /status into the ProviderConnector's status.sync.
    add(&mut r, "", "pods", &["get", "list", "watch"]);
    // Events for people, aggregated by the recorder (create, then patch).
    add(&mut r, "events.k8s.io", "events", &["create", "patch"]);
    r
}

/// The only ClusterRole the operator binds admins to; binding it needs `bind`.
pub const BIND_CLUSTER_ROLE: &str = "bind";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_kind_can_be_pruned() {
        let rules = cluster_rules();
        for kind in ChildKind::ALL {
            let verbs = &rules[&(kind.gvk().group, kind.plural().to_string())];
            assert!(verbs.contains("delete") && verbs.contains("patch"), "{kind:?}");
        }
    }

    #[test]
    fn no_wildcards() {
        for ((group, resource), verbs) in cluster_rules() {
            assert!(group != "*" && resource != "*" && !verbs.contains("*"));
        }
    }
}
