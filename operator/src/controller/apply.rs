//! The one apply/prune/release path every controller uses: `Applier`.
//!
//! - `observe` reads an owner's live children from the shared child store
//!   (see `children`), listing from the API server only kinds it does not
//!   watch.
//! - `apply` writes a desired child with server-side apply under one field
//!   manager, and only when the live object differs (a steady world gets
//!   zero writes, and, while the memo holds, zero reads).
//! - `prune` removes live children that are no longer desired, but only those
//!   whose ownerReferences name this owner (labels propagate; ownership does
//!   not). Children marked `retain` are orphaned instead of deleted.
//! - `release` is the finalizer's half: with `Retain` it deletes workloads
//!   and orphans data; with `Delete` it deletes everything.
//!
//! Every write is counted in `ics_operator_child_writes_total` and every
//! read that reaches the API server in `ics_operator_child_reads_total`, by
//! controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, TypeMeta};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::children::{self, Children, Kept, Owner};
use super::diff::{applied_fields, is_subset};
use super::metrics::{Metrics, WriteLabels};
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

/// An owner's children as they are in the cluster: what the shared child
/// store keeps of them or, for kinds it does not watch, listed whole; and
/// what this reconcile wrote, whole.
#[derive(Clone, Debug, Default)]
pub struct Live {
    objects: BTreeMap<Key, Seen>,
}

/// A live child as the store keeps it, and the whole object when this
/// reconcile has it (a list or a write answer).
#[derive(Clone, Debug)]
struct Seen {
    kept: Arc<Kept>,
    whole: Option<Arc<DynamicObject>>,
}

impl Live {
    pub fn get(&self, key: &Key) -> Option<&Kept> {
        self.objects.get(key).map(|s| &*s.kept)
    }

    /// What readiness reads of a live child, as JSON (see `Kept::view`).
    pub fn value(&self, kind: ChildKind, name: &str) -> Option<Value> {
        self.objects.iter().find(|(k, _)| k.kind == kind && k.name == name).map(|(_, s)| s.kept.view().clone())
    }

    /// Records a whole object (read from or written to the API server).
    pub fn insert(&mut self, key: Key, object: DynamicObject) {
        let kept = Arc::new(Kept::of(key.kind, &object));
        self.insert_whole(key, kept, object);
    }

    /// Records a whole object with what the store keeps of it.
    fn insert_whole(&mut self, key: Key, kept: Arc<Kept>, object: DynamicObject) {
        self.objects.insert(key, Seen { kept, whole: Some(Arc::new(object)) });
    }

    fn insert_kept(&mut self, key: Key, kept: Arc<Kept>) {
        self.objects.insert(key, Seen { kept, whole: None });
    }

    fn whole(&self, key: &Key) -> Option<&DynamicObject> {
        self.objects.get(key).and_then(|s| s.whole.as_deref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Kept)> {
        self.objects.iter().map(|(k, s)| (k, &*s.kept))
    }

    fn extend(&mut self, other: Live) {
        self.objects.extend(other.objects);
    }

    /// The same children as only the store would have them.
    #[cfg(test)]
    pub fn as_kept(&self) -> Live {
        let objects = self.objects.iter().map(|(k, s)| (k.clone(), Seen { kept: s.kept.clone(), whole: None }));
        Live { objects: objects.collect() }
    }
}

fn api(client: &Client, kind: ChildKind, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    match namespace {
        Some(ns) if kind.namespaced() => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Lists the children of one owner from the API server: namespaced kinds
/// in `namespace`, cluster-scoped kinds cluster-wide, all by label
/// selector, all kinds at once. Secrets are read as metadata only: the
/// operator never needs their values. Used where the shared store may not
/// hold everything: kinds it does not watch, and the finalizer, which must
/// not miss a child the watch has not delivered yet.
pub async fn list(client: &Client, kinds: &[ChildKind], namespace: &str, selector: &str) -> Result<Live, kube::Error> {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Applies and prunes the children of one controller's owners, reading and
/// recording them in the shared child store. One per reconcile; cheap.
pub struct Applier<'a> {
    client: &'a Client,
    children: &'a Children,
    metrics: &'a Metrics,
    /// The controller, as the metrics name it.
    controller: &'static str,
}

impl<'a> Applier<'a> {
    pub fn new(client: &'a Client, children: &'a Children, metrics: &'a Metrics, controller: &'static str) -> Self {
        Self { client, children, metrics, controller }
    }

    fn read(&self, verb: &'static str) {
        self.metrics.child_read(self.controller, verb);
    }

    /// The children of `owner` of `kinds`: from the store for every kind it
    /// watches (no request), listed for the others.
    pub async fn observe(&self, kinds: &[ChildKind], namespace: &str, owner: Owner<'_>) -> Result<Live, kube::Error> {
        let (watched, unwatched): (Vec<ChildKind>, Vec<ChildKind>) =
            kinds.iter().partition(|&&k| self.children.watches(k));
        let mut live = Live::default();
        for (key, object) in self.children.of(&watched, namespace, owner) {
            live.insert_kept(key, object);
        }
        if !unwatched.is_empty() {
            self.read("list");
            live.extend(list(self.client, &unwatched, namespace, &owner.selector()).await?);
        }
        Ok(live)
    }

    /// Lists the children of `owner` from the API server, bypassing the
    /// store: for the finalizer, which must see every child there is.
    pub async fn list(&self, kinds: &[ChildKind], namespace: &str, owner: Owner<'_>) -> Result<Live, kube::Error> {
        self.read("list");
        list(self.client, kinds, namespace, &owner.selector()).await
    }

    /// Applies every child in turn, recording what is there afterwards in
    /// `live`. Returns how many were written.
    pub async fn apply_all<'c>(
        &self,
        desired: impl IntoIterator<Item = &'c Child>,
        live: &mut Live,
    ) -> Result<usize, kube::Error> {
        let mut writes = 0;
        for child in desired {
            if self.apply(child, live).await? != Outcome::Unchanged {
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// Writes one child if, and only if, the live object differs from it,
    /// and records the object as it now is in `live`.
    pub async fn apply(&self, child: &Child, live: &mut Live) -> Result<Outcome, kube::Error> {
        let key = Key::of(child);
        let (outcome, object) = self.write(&key, child, live).await?;
        if outcome != Outcome::Unchanged {
            tracing::debug!(child = %key, ?outcome, "wrote child");
            self.metrics
                .child_writes
                .get_or_create(&WriteLabels { kind: self.controller, outcome: outcome.as_str() })
                .inc();
        }
        if let Some(object) = object {
            let kept = self.children.wrote(child.kind, &object);
            live.insert_whole(key, kept, object);
        }
        Ok(outcome)
    }

    async fn write(
        &self,
        key: &Key,
        child: &Child,
        live: &Live,
    ) -> Result<(Outcome, Option<DynamicObject>), kube::Error> {
        let api = api(self.client, child.kind, child.namespace());
        let current = live.get(key);
        match (child.write, current) {
            (WritePolicy::CreateOnce, Some(current)) if current.label(labels::RETAINED).is_some() => {
                // Retained from an earlier tenant of this name: adopted again,
                // its contents untouched.
                let owner = child.object.annotations().get(labels::OWNER_UID).cloned();
                let patch = json!({"metadata": {
                    "labels": {labels::RETAINED: null},
                    "annotations": {labels::RETAINED_FROM: null, labels::OWNER_UID: owner},
                }});
                let adopted = api.patch(child.name(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
                Ok((Outcome::Applied, Some(strip_secret(child.kind, adopted))))
            }
            (WritePolicy::CreateOnce, Some(_)) => Ok((Outcome::Unchanged, None)),
            (WritePolicy::CreateOnce, None) => {
                let pp = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
                match api.create(&pp, &child.object).await {
                    Ok(created) => Ok((Outcome::Created, Some(strip_secret(child.kind, created)))),
                    // Created by an earlier run whose labels were since
                    // removed, or moments ago by this one and not yet seen
                    // by the watch: never overwrite it.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok((Outcome::Unchanged, None)),
                    Err(e) => Err(e),
                }
            }
            (WritePolicy::Apply, current) => {
                let retained = current.is_some_and(|l| l.label(labels::RETAINED).is_some());
                // Data written by an older operator still carries an
                // ownerReference; applying again drops it (see labels::OWNER_UID).
                let stale_owner = child.retain() && current.is_some_and(|l| !l.owner_references().is_empty());
                let wanted = applied_fields(&serde_json::to_value(&child.object).unwrap_or_default());
                let desired_hash = children::desired_hash(&wanted);
                if let Some(current) = current
                    && !retained
                    && !stale_owner
                    && self.in_place(key, child, &wanted, desired_hash, current, live).await?
                {
                    return Ok((Outcome::Unchanged, None));
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
                self.children.memo.confirm(key.clone(), desired_hash, children::fingerprint(&applied));
                Ok((Outcome::Applied, Some(applied)))
            }
        }
    }

    /// Whether the live child already holds everything `wanted` (what the
    /// apply would set) holds:
    /// without a request while the memo says so for this version of the
    /// child, else against the whole object (fetched unless this reconcile
    /// already has it).
    async fn in_place(
        &self,
        key: &Key,
        child: &Child,
        wanted: &Value,
        desired_hash: u64,
        current: &Kept,
        live: &Live,
    ) -> Result<bool, kube::Error> {
        if self.children.memo.holds(key, desired_hash, current.fingerprint()) {
            return Ok(true);
        }
        let whole = match live.whole(key) {
            Some(whole) => whole.clone(),
            None => {
                self.read("get");
                match api(self.client, child.kind, child.namespace()).get_opt(child.name()).await? {
                    Some(whole) => whole,
                    // Gone since the watch saw it: apply creates it again.
                    None => return Ok(false),
                }
            }
        };
        let holds = is_subset(wanted, &serde_json::to_value(&whole).unwrap_or_default());
        if holds {
            let kept = self.children.wrote(child.kind, &whole);
            self.children.memo.confirm(key.clone(), desired_hash, kept.fingerprint());
        }
        Ok(holds)
    }

    /// Removes owned children that are not desired. Children holding data
    /// are orphaned, never deleted, unless `policy` is `Delete`.
    pub async fn prune(
        &self,
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
            out.push(self.dispose(key, object, owner_uid, policy).await?);
        }
        Ok(out)
    }

    /// Lets go of every owned child as the owner is deleted. Cluster-scoped
    /// children (the namespace) go last, after what lives inside them.
    pub async fn release(
        &self,
        live: &Live,
        owner_uid: &str,
        policy: DeletionPolicy,
    ) -> Result<Vec<Disposal>, kube::Error> {
        let mut owned: Vec<(&Key, &Kept)> = live.iter().filter(|(_, o)| owned_by(o, owner_uid)).collect();
        owned.sort_by_key(|(k, _)| !k.kind.namespaced());
        let mut out = Vec::new();
        for (key, object) in owned {
            out.push(self.dispose(key, object, owner_uid, policy).await?);
        }
        Ok(out)
    }

    async fn dispose(
        &self,
        key: &Key,
        object: &Kept,
        owner_uid: &str,
        policy: DeletionPolicy,
    ) -> Result<Disposal, kube::Error> {
        self.children.memo.forget(key);
        if retain_marked(object) && policy == DeletionPolicy::Retain {
            orphan(self.client, key, object, owner_uid).await?;
            Ok(Disposal::Orphaned(key.clone()))
        } else {
            delete(self.client, key).await?;
            self.children.deleted(key);
            Ok(Disposal::Deleted(key.clone()))
        }
    }
}

/// Secrets are recorded as metadata only, whatever the API server answered.
fn strip_secret(kind: ChildKind, mut object: DynamicObject) -> DynamicObject {
    if kind == ChildKind::Secret {
        object.data = Value::Null;
    }
    object
}

/// Whether `uid` owns `object`: by ownerReference (workloads, routes) or, for
/// data, by the owner annotation that garbage collection does not follow.
fn owned_by(object: &Kept, uid: &str) -> bool {
    !uid.is_empty() && (object.owner_references().iter().any(|o| o.uid == uid) || object.owner_uid() == Some(uid))
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
async fn orphan(client: &Client, key: &Key, object: &Kept, uid: &str) -> Result<(), kube::Error> {
    let remaining: Vec<_> = object.owner_references().iter().filter(|o| o.uid != uid).cloned().collect();
    let owners = if remaining.is_empty() { Value::Null } else { json!(remaining) };
    let tenant = object.label(labels::TENANT).unwrap_or_default();
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

fn retain_marked(object: &Kept) -> bool {
    object.label(labels::RETAIN) == Some("true")
}
