//! The one apply/prune/release path every controller uses.
//!
//! - `observe` lists an owner's live children (one LIST per kind, by label).
//! - `apply` writes a desired child with server-side apply under one field
//!   manager, and only when the live object differs (a steady world gets
//!   zero writes).
//! - `prune` removes live children that are no longer desired, but only those
//!   whose ownerReferences name this owner (labels propagate; ownership does
//!   not). Children marked `retain` are orphaned instead of deleted.
//! - `release` is the finalizer's half: with `Retain` it deletes workloads
//!   and orphans data; with `Delete` it deletes everything.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, TypeMeta};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::diff::{applied_fields, is_subset};
use crate::MANAGER;
use crate::api::tenant::DeletionPolicy;
use crate::render::child::{Child, ChildKind, WritePolicy};
use crate::render::labels;

/// Identifies a child across desired and live sets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: ChildKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    pub fn of(child: &Child) -> Self {
        Self { kind: child.kind, namespace: child.namespace().map(String::from), name: child.name().to_string() }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// An owner's children as they are in the cluster.
#[derive(Clone, Debug, Default)]
pub struct Live {
    objects: BTreeMap<Key, DynamicObject>,
}

impl Live {
    pub fn get(&self, key: &Key) -> Option<&DynamicObject> {
        self.objects.get(key)
    }

    /// The live object as JSON, for readiness checks.
    pub fn value(&self, kind: ChildKind, name: &str) -> Option<Value> {
        self.objects
            .iter()
            .find(|(k, _)| k.kind == kind && k.name == name)
            .and_then(|(_, o)| serde_json::to_value(o).ok())
    }

    pub fn insert(&mut self, key: Key, object: DynamicObject) {
        self.objects.insert(key, object);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &DynamicObject)> {
        self.objects.iter()
    }
}

fn api(client: &Client, kind: ChildKind, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    match namespace {
        Some(ns) if kind.namespaced() => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Lists the children of one owner: namespaced kinds in `namespace`,
/// cluster-scoped kinds cluster-wide, all by label selector, all kinds at
/// once (a tenant has a dozen child kinds; one round trip each in series
/// made up most of a no-op reconcile). Secrets are read as metadata only:
/// the operator never needs their values.
pub async fn observe(
    client: &Client,
    kinds: &[ChildKind],
    namespace: &str,
    selector: &str,
) -> Result<Live, kube::Error> {
    let lp = ListParams::default().labels(selector);
    let lists = kinds.iter().map(|&kind| {
        let (api, lp) = (api(client, kind, Some(namespace)), &lp);
        async move {
            let items: Vec<DynamicObject> = if kind == ChildKind::Secret {
                let gvk = kind.gvk();
                api.list_metadata(lp)
                    .await?
                    .items
                    .into_iter()
                    .map(|m| DynamicObject {
                        types: Some(TypeMeta { api_version: gvk.api_version(), kind: gvk.kind.clone() }),
                        metadata: m.metadata,
                        data: Value::Null,
                    })
                    .collect()
            } else {
                api.list(lp).await?.items
            };
            Ok::<_, kube::Error>(
                items
                    .into_iter()
                    .map(move |item| (Key { kind, namespace: item.namespace(), name: item.name_any() }, item)),
            )
        }
    });
    let mut live = Live::default();
    for (key, item) in futures::future::try_join_all(lists).await?.into_iter().flatten() {
        live.insert(key, item);
    }
    Ok(live)
}

/// What `apply` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
    Created,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Applied => "applied",
            Self::Created => "created",
        }
    }
}

/// Writes one child if, and only if, the live object differs from it. Returns
/// the object as it now is.
pub async fn apply(
    client: &Client,
    child: &Child,
    live: Option<&DynamicObject>,
) -> Result<(Outcome, Option<DynamicObject>), kube::Error> {
    let api = api(client, child.kind, child.namespace());
    match (child.write, live) {
        (WritePolicy::CreateOnce, Some(live)) if live.labels().contains_key(labels::RETAINED) => {
            // Retained from an earlier tenant of this name: adopted again,
            // its contents untouched.
            let owner = child.object.annotations().get(labels::OWNER_UID).cloned();
            let patch = json!({"metadata": {
                "labels": {labels::RETAINED: null},
                "annotations": {labels::RETAINED_FROM: null, labels::OWNER_UID: owner},
            }});
            let adopted = api.patch(child.name(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok((Outcome::Applied, Some(adopted)))
        }
        (WritePolicy::CreateOnce, Some(live)) => Ok((Outcome::Unchanged, Some(live.clone()))),
        (WritePolicy::CreateOnce, None) => {
            let pp = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
            match api.create(&pp, &child.object).await {
                Ok(created) => Ok((Outcome::Created, Some(created))),
                // Created by an earlier run whose labels were since removed:
                // never overwrite it.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok((Outcome::Unchanged, None)),
                Err(e) => Err(e),
            }
        }
        (WritePolicy::Apply, live) => {
            let retained = live.is_some_and(|l| l.labels().contains_key(labels::RETAINED));
            // Data written by an older operator still carries an
            // ownerReference; applying again drops it (see labels::OWNER_UID).
            let stale_owner = child.retain() && live.is_some_and(|l| !l.owner_references().is_empty());
            if let Some(live) = live {
                let desired = applied_fields(&serde_json::to_value(&child.object).unwrap_or_default());
                let current = serde_json::to_value(live).unwrap_or_default();
                if is_subset(&desired, &current) && !retained && !stale_owner {
                    return Ok((Outcome::Unchanged, Some(live.clone())));
                }
            }
            let pp = PatchParams::apply(MANAGER).force();
            let mut applied = api.patch(child.name(), &pp, &Patch::Apply(&child.object)).await?;
            if retained {
                // Adopted again after its tenant was deleted and recreated.
                let patch = json!({"metadata": {
                    "labels": {labels::RETAINED: null},
                    "annotations": {labels::RETAINED_FROM: null},
                }});
                applied = api.patch(child.name(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            Ok((Outcome::Applied, Some(applied)))
        }
    }
}

/// Whether `uid` owns `object`: by ownerReference (workloads, routes) or, for
/// data, by the owner annotation that garbage collection does not follow.
fn owned_by(object: &DynamicObject, uid: &str) -> bool {
    !uid.is_empty()
        && (object.owner_references().iter().any(|o| o.uid == uid)
            || object.annotations().get(labels::OWNER_UID).is_some_and(|o| o == uid))
}

/// What happened to a child that left the desired set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposal {
    Deleted(Key),
    Orphaned(Key),
}

async fn delete(client: &Client, key: &Key) -> Result<(), kube::Error> {
    let dp = DeleteParams::background();
    match api(client, key.kind, key.namespace.as_deref()).delete(&key.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Drops this owner's claim and marks the object retained, recording whose
/// it was, so that a tenant re-created under the same name finds it again.
async fn orphan(client: &Client, key: &Key, object: &DynamicObject, uid: &str) -> Result<(), kube::Error> {
    let remaining: Vec<_> = object.owner_references().iter().filter(|o| o.uid != uid).cloned().collect();
    let owners = if remaining.is_empty() { Value::Null } else { json!(remaining) };
    let tenant = object.labels().get(labels::TENANT).cloned().unwrap_or_default();
    let patch = json!({"metadata": {
        "ownerReferences": owners,
        "labels": {labels::RETAINED: "true"},
        "annotations": {labels::OWNER_UID: null, labels::RETAINED_FROM: format!("{tenant}/{uid}")},
    }});
    match api(client, key.kind, key.namespace.as_deref())
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn retain_marked(object: &DynamicObject) -> bool {
    object.labels().get(labels::RETAIN).is_some_and(|v| v == "true")
}

/// Removes owned children that are not desired. Children holding data are
/// orphaned, never deleted, unless `policy` is `Delete`.
pub async fn prune(
    client: &Client,
    live: &Live,
    desired: &BTreeSet<Key>,
    owner_uid: &str,
    policy: DeletionPolicy,
) -> Result<Vec<Disposal>, kube::Error> {
    let mut out = Vec::new();
    for (key, object) in live.iter() {
        if desired.contains(key) || !owned_by(object, owner_uid) {
            continue;
        }
        out.push(dispose(client, key, object, owner_uid, policy).await?);
    }
    Ok(out)
}

async fn dispose(
    client: &Client,
    key: &Key,
    object: &DynamicObject,
    owner_uid: &str,
    policy: DeletionPolicy,
) -> Result<Disposal, kube::Error> {
    if retain_marked(object) && policy == DeletionPolicy::Retain {
        orphan(client, key, object, owner_uid).await?;
        Ok(Disposal::Orphaned(key.clone()))
    } else {
        delete(client, key).await?;
        Ok(Disposal::Deleted(key.clone()))
    }
}

/// Lets go of every owned child as the owner is deleted. Cluster-scoped
/// children (the namespace) go last, after what lives inside them.
pub async fn release(
    client: &Client,
    live: &Live,
    owner_uid: &str,
    policy: DeletionPolicy,
) -> Result<Vec<Disposal>, kube::Error> {
    let mut owned: Vec<(&Key, &DynamicObject)> = live.iter().filter(|(_, o)| owned_by(o, owner_uid)).collect();
    owned.sort_by_key(|(k, _)| !k.kind.namespaced());
    let mut out = Vec::new();
    for (key, object) in owned {
        out.push(dispose(client, key, object, owner_uid, policy).await?);
    }
    Ok(out)
}
