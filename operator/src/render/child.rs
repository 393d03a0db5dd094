//! A rendered child object, type-erased so one apply/prune path serves every
//! kind and every controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;

use super::labels;

/// The reference an owned child carries to the resource it belongs to, when
/// that resource has a UID (always in the cluster; not for a file rendered
/// offline). `controller`, so one owner reconciles it; `blockOwnerDeletion`,
/// so a foreground deletion of the owner waits until garbage collection has
/// removed the child, as Kubernetes' own controllers mark theirs. Without
/// it the collector drops the owner's `foregroundDeletion` finalizer at
/// once, and while the operator's finalizer still holds the owner (the
/// operator stopped), every child it had not yet reached stays behind.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference { block_owner_deletion: Some(true), ..owner.controller_owner_ref(&())? })
}

/// Every kind of object the operator creates. The controller lists these to
/// prune, and the Helm chart's ClusterRole must grant exactly what they need
/// (a test checks the two agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    Namespace,
    ResourceQuota,
    LimitRange,
    NetworkPolicy,
    Secret,
    Service,
    StatefulSet,
    PostgresCluster,
    Deployment,
    HttpRoute,
    Ingress,
    RoleBinding,
    ConfigMap,
    PodDisruptionBudget,
}

impl ChildKind {
    pub const ALL: [ChildKind; 14] = [
        Self::Namespace,
        Self::ResourceQuota,
        Self::LimitRange,
        Self::NetworkPolicy,
        Self::Secret,
        Self::Service,
        Self::StatefulSet,
        Self::PostgresCluster,
        Self::Deployment,
        Self::HttpRoute,
        Self::Ingress,
        Self::RoleBinding,
        Self::ConfigMap,
        Self::PodDisruptionBudget,
    ];

    pub fn gvk(self) -> GroupVersionKind {
        let (g, v, k) = match self {
            Self::Namespace => ("", "v1", "Namespace"),
            Self::ResourceQuota => ("", "v1", "ResourceQuota"),
            Self::LimitRange => ("", "v1", "LimitRange"),
            Self::NetworkPolicy => ("networking.k8s.io", "v1", "NetworkPolicy"),
            Self::Secret => ("", "v1", "Secret"),
            Self::Service => ("", "v1", "Service"),
            Self::StatefulSet => ("apps", "v1", "StatefulSet"),
            Self::PostgresCluster => ("postgresql.cnpg.io", "v1", "Cluster"),
            Self::Deployment => ("apps", "v1", "Deployment"),
            Self::HttpRoute => ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            Self::Ingress => ("networking.k8s.io", "v1", "Ingress"),
            Self::RoleBinding => ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            Self::ConfigMap => ("", "v1", "ConfigMap"),
            Self::PodDisruptionBudget => ("policy", "v1", "PodDisruptionBudget"),
        };
        GroupVersionKind::gvk(g, v, k)
    }

    pub fn plural(self) -> &'static str {
        match self {
            Self::Namespace => "namespaces",
            Self::ResourceQuota => "resourcequotas",
            Self::LimitRange => "limitranges",
            Self::NetworkPolicy => "networkpolicies",
            Self::Secret => "secrets",
            Self::Service => "services",
            Self::StatefulSet => "statefulsets",
            Self::PostgresCluster => "clusters",
            Self::Deployment => "deployments",
            Self::HttpRoute => "httproutes",
            Self::Ingress => "ingresses",
            Self::RoleBinding => "rolebindings",
            Self::ConfigMap => "configmaps",
            Self::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&self.gvk(), self.plural())
    }

    pub fn namespaced(self) -> bool {
        self != Self::Namespace
    }

    /// Kinds served only when an optional CRD is installed.
    pub fn optional(self) -> bool {
        matches!(self, Self::PostgresCluster | Self::HttpRoute)
    }
}

/// How the controller writes a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePolicy {
    /// Server-side apply on every change (the normal case).
    Apply,
    /// Create if absent, never update: generated credentials, which must
    /// never be regenerated or overwritten.
    CreateOnce,
}

/// One desired object.
#[derive(Clone, Debug)]
pub struct Child {
    pub kind: ChildKind,
    pub object: DynamicObject,
    pub write: WritePolicy,
}

/// Why a child could not be turned into a dynamic object. Only a bug in a
/// builder can cause this.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialise {kind:?} {name}: {source}")]
pub struct ChildError {
    kind: ChildKind,
    name: String,
    source: serde_json::Error,
}

impl Child {
    /// Wraps a typed object. `retain` marks children that hold or protect
    /// patient data (see `labels::RETAIN`).
    pub fn new<T: Serialize>(kind: ChildKind, typed: &T, retain: bool) -> Result<Self, ChildError> {
        let value = serde_json::to_value(typed).map_err(|source| ChildError { kind, name: String::new(), source })?;
        Self::from_value(kind, value, retain)
    }

    pub fn from_value(kind: ChildKind, value: serde_json::Value, retain: bool) -> Result<Self, ChildError> {
        let mut object: DynamicObject =
            serde_json::from_value(value).map_err(|source| ChildError { kind, name: String::new(), source })?;
        if retain {
            object.metadata.labels.get_or_insert_with(Default::default).insert(labels::RETAIN.into(), "true".into());
            // Ownership of data is recorded where garbage collection cannot
            // see it: an ownerReference would let a cascade delete patient
            // data behind the finalizer's back.
            for owner in object.metadata.owner_references.take().unwrap_or_default() {
                object
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(labels::OWNER_UID.into(), owner.uid);
            }
        }
        Ok(Self { kind, object, write: WritePolicy::Apply })
    }

    pub fn create_once(mut self) -> Self {
        self.write = WritePolicy::CreateOnce;
        self
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    pub fn retain(&self) -> bool {
        self.object.metadata.labels.as_ref().and_then(|l| l.get(labels::RETAIN)).is_some_and(|v| v == "true")
    }

    /// The object as YAML-ready JSON (apiVersion and kind first).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.object).unwrap_or(serde_json::Value::Null)
    }
}
