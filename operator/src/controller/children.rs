//! Every child the operator manages, watched once and kept small.
//!
//! One watch per child kind, selected by the operator's own label, feeds one
//! store shared by the three controllers. A reconcile reads its children
//! from here rather than listing thirteen kinds from the API server, and is
//! woken through `subscribe` when a child changes in a way that can change
//! its outcome.
//!
//! What is kept of each child is what the controllers read (`Kept`): the
//! operator's own labels, its owners, whether it is being deleted, a
//! fingerprint of its metadata and, for the kinds whose readiness is
//! judged, the few spec and status fields readiness reads (`project`).
//! Everything else (the rest of the metadata, pod templates, ConfigMap and
//! Secret data) stays in the API server: Secret values never enter the
//! operator's memory, and a child costs a few hundred bytes.
//!
//! Whether a desired child is already in place is still decided against
//! the full live object, but that object is fetched only when something may
//! have changed. `Memo` remembers, per child, the hash of the desired
//! object last found (or made) in place and the child's `fingerprint` at
//! that moment: its labels, annotations, ownerReferences and generation
//! (resourceVersion for kinds without one). While both are unchanged the
//! child is in place and no request is made; a changed spec or someone
//! else's edit changes one of them, and the next reconcile fetches the
//! child and compares. A restarted operator has an empty memo: one GET per
//! child, no writes.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;

use super::apply::Key;
use super::caches::Subscribers;
use super::lists;
use crate::render::child::ChildKind;
use crate::render::labels;

/// Whose children a reconcile asks for: the label selectors of
/// `labels::*_selector`, matched in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A tenant's own children (not its connectors' or agreements').
    Tenant(&'a str),
    Connector(&'a str),
    Agreement(&'a str),
}

impl Owner<'_> {
    /// The same selection as a label selector, for the API server.
    pub fn selector(&self) -> String {
        match self {
            Self::Tenant(name) => labels::tenant_selector(name),
            Self::Connector(name) => labels::connector_selector(name),
            Self::Agreement(name) => labels::agreement_selector(name),
        }
    }

    /// Whether `child` is one of this owner's children.
    pub fn selects(&self, child: &Kept) -> bool {
        let is = |key: &str, value: &str| child.label(key) == Some(value);
        is(labels::MANAGED_BY, labels::MANAGER_VALUE)
            && match self {
                Self::Tenant(name) => {
                    is(labels::TENANT, name)
                        && child.label(labels::CONNECTOR).is_none()
                        && child.label(labels::AGREEMENT).is_none()
                }
                Self::Connector(name) => is(labels::CONNECTOR, name),
                Self::Agreement(name) => is(labels::AGREEMENT, name),
            }
    }
}

/// The fields of `kind` that readiness reads, besides metadata. Kinds with
/// none are watched as metadata only.
fn projected_fields(kind: ChildKind) -> &'static [&'static str] {
    match kind {
        ChildKind::Deployment => {
            &["/spec/replicas", "/status/observedGeneration", "/status/availableReplicas", "/status/updatedReplicas"]
        }
        ChildKind::StatefulSet => &["/spec/replicas", "/status/observedGeneration", "/status/readyReplicas"],
        ChildKind::PostgresCluster => &["/spec/instances", "/status/readyInstances", "/status/conditions"],
        ChildKind::HttpRoute => &["/status/parents"],
        ChildKind::Ingress => &["/status/loadBalancer"],
        ChildKind::ResourceQuota => &["/spec/hard", "/status/used"],
        ChildKind::Namespace => &["/status/phase"],
        _ => &[],
    }
}

/// `data` reduced to the fields of `kind` that readiness reads. Pure.
pub fn project(kind: ChildKind, data: &Value) -> Value {
    let mut out = Value::Null;
    for pointer in projected_fields(kind) {
        let Some(found) = data.pointer(pointer) else { continue };
        let mut at = &mut out;
        for segment in pointer.split('/').skip(1) {
            if !at.is_object() {
                *at = Value::Object(serde_json::Map::new());
            }
            at = at.as_object_mut().expect("just made an object").entry(segment).or_insert(Value::Null);
        }
        *at = found.clone();
    }
    out
}

/// What readiness reads of `kind`'s metadata: the generation its status
/// must have observed, and, for the quota, when and where it was created
/// (see `tenant::nudge_uncounted_quota`). Empty for other kinds.
fn project_metadata(kind: ChildKind, meta: &ObjectMeta) -> serde_json::Map<String, Value> {
    let mut picked = serde_json::Map::new();
    let mut pick = |field: &str, value: Option<Value>| {
        if let Some(value) = value {
            picked.insert(field.into(), value);
        }
    };
    match kind {
        ChildKind::Deployment | ChildKind::StatefulSet => pick("generation", meta.generation.map(Value::from)),
        ChildKind::ResourceQuota => {
            pick("creationTimestamp", meta.creation_timestamp.as_ref().and_then(|t| serde_json::to_value(t).ok()));
            pick("namespace", meta.namespace.clone().map(Value::from));
        }
        _ => {}
    }
    picked
}

/// The labels of a child that anything here reads: whose it is, and
/// whether it is data to retain or retained.
const KEPT_LABELS: [&str; 6] =
    [labels::MANAGED_BY, labels::TENANT, labels::CONNECTOR, labels::AGREEMENT, labels::RETAIN, labels::RETAINED];

/// A child as the store keeps it: what the controllers read of it, taken
/// as it arrives, and nothing else of its metadata or body. Whether an
/// apply finds it in place is decided by its `fingerprint`, computed from
/// the whole metadata before the rest is dropped. A few hundred bytes
/// rather than the KiB of a parsed ObjectMeta: at England's size (about
/// 34,000 children) the difference is most of the operator's heap.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    labels: Box<[(&'static str, Box<str>)]>,
    owner_references: Box<[OwnerReference]>,
    /// The owner annotation of data children (see `labels::OWNER_UID`).
    owner_uid: Option<Box<str>>,
    deleting: bool,
    /// The resourceVersion, where it is an integer (see `older`).
    version: Option<u64>,
    fingerprint: u64,
    relevance: u64,
    /// What readiness reads, as JSON (`Live::value`); null for kinds whose
    /// readiness is not judged.
    view: Value,
}

impl Kept {
    /// What the store keeps of `object`, a child of `kind`. Pure.
    pub fn of(kind: ChildKind, object: &DynamicObject) -> Self {
        let meta = &object.metadata;
        let labels = meta.labels.as_ref();
        let kept_labels = KEPT_LABELS
            .iter()
            .filter_map(|&key| labels.and_then(|l| l.get(key)).map(|v| (key, v.as_str().into())))
            .collect();
        let mut view = project(kind, &object.data);
        let metadata = project_metadata(kind, meta);
        if !metadata.is_empty() {
            if view.is_null() {
                view = Value::Object(serde_json::Map::new());
            }
            if let Some(view) = view.as_object_mut() {
                view.insert("metadata".into(), Value::Object(metadata));
            }
        }
        let fingerprint = fingerprint(object);
        let deleting = meta.deletion_timestamp.is_some();
        Self {
            labels: kept_labels,
            owner_references: meta.owner_references.clone().unwrap_or_default().into(),
            owner_uid: meta.annotations.as_ref().and_then(|a| a.get(labels::OWNER_UID)).map(|u| u.as_str().into()),
            deleting,
            version: meta.resource_version.as_deref().and_then(|v| v.parse().ok()),
            fingerprint,
            relevance: hash_of((fingerprint, deleting, view.to_string())),
            view,
        }
    }

    /// The value of one of `KEPT_LABELS`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| &**v)
    }

    pub fn owner_references(&self) -> &[OwnerReference] {
        &self.owner_references
    }

    pub fn owner_uid(&self) -> Option<&str> {
        self.owner_uid.as_deref()
    }

    pub fn deleting(&self) -> bool {
        self.deleting
    }

    /// See `fingerprint`.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// What readiness reads (see `projected_fields`, `project_metadata`).
    pub fn view(&self) -> &Value {
        &self.view
    }

    /// What a change must alter for the child's owner to be woken: the
    /// fingerprint, deletion, and what readiness reads. A Deployment's
    /// status rewritten with the same replica counts wakes nobody.
    fn relevance(&self) -> u64 {
        self.relevance
    }
}

pub(crate) fn hash_of(parts: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// What changes when the child is written by anyone: what an apply sets in
/// metadata, and the generation (spec changes) or, for kinds without one,
/// the resourceVersion (any change). Status writes of a Deployment leave
/// it as it is. Pure.
pub fn fingerprint(object: &DynamicObject) -> u64 {
    let meta = &object.metadata;
    let owners = serde_json::to_string(&meta.owner_references).unwrap_or_default();
    let version = match meta.generation {
        Some(generation) => generation.to_string(),
        None => meta.resource_version.clone().unwrap_or_default(),
    };
    hash_of((&meta.labels, &meta.annotations, owners, version))
}

/// The hash of what an apply sets (`diff::applied_fields` of the desired child).
pub fn desired_hash(applied: &Value) -> u64 {
    hash_of(applied.to_string())
}

/// For each child: the desired hash last found or made in place, and the
/// child's fingerprint then.
#[derive(Default)]
pub struct Memo {
    confirmed: Mutex<HashMap<Key, (u64, u64)>>,
}

impl Memo {
    /// Whether `desired` was confirmed in place on the very version of the
    /// child that `fingerprint` names.
    pub fn holds(&self, key: &Key, desired: u64, fingerprint: u64) -> bool {
        self.lock().get(key) == Some(&(desired, fingerprint))
    }

    pub fn confirm(&self, key: Key, desired: u64, fingerprint: u64) {
        self.lock().insert(key, (desired, fingerprint));
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u64, u64)>> {
        self.confirmed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Bucket = HashMap<Key, Arc<Kept>>;

/// A child the store took in, changed or lost (its last state), as its
/// owner's trigger hears of it.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: Key,
    pub kept: Arc<Kept>,
}

/// Which kinds are watched and which have been listed.
#[derive(Clone, Debug, Default)]
struct Progress {
    watched: Option<BTreeSet<ChildKind>>,
    listed: BTreeSet<ChildKind>,
}

/// The store of every managed child, by namespace ("" for cluster-scoped
/// children), with its subscribers.
#[derive(Default)]
pub struct Children {
    by_namespace: RwLock<HashMap<String, Bucket>>,
    subscribers: Subscribers<Change>,
    progress: watch::Sender<Progress>,
    pub memo: Memo,
}

/// Which `bucket` of the store `key` lives in.
fn bucket_of(key: &Key) -> &str {
    key.namespace.as_deref().unwrap_or_default()
}

fn key_of(kind: ChildKind, object: &DynamicObject) -> Key {
    Key { kind, namespace: object.namespace(), name: object.name_any() }
}

/// Whether `incoming` is older than `stored`. resourceVersions are opaque
/// to clients in general; where both are integers (etcd's revisions, as on
/// every API server today) a watch event older than a write this operator
/// already recorded is not let overwrite it. Otherwise the newcomer wins.
fn older(incoming: &Kept, stored: &Kept) -> bool {
    matches!((incoming.version, stored.version), (Some(i), Some(s)) if i < s)
}

impl Children {
    /// Every child created, changed in a way `Kept::relevance` sees, or
    /// deleted (its last state), once the store holds it. Subscribe before
    /// `run`.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<Change>> + Send + 'static {
        self.subscribers.subscribe()
    }

    /// Whether `kind` is watched (kinds whose CRD was installed after the
    /// operator started are not; their children are listed instead).
    pub fn watches(&self, kind: ChildKind) -> bool {
        self.progress.borrow().watched.as_ref().is_some_and(|w| w.contains(&kind))
    }

    /// Resolves once every watched kind has been listed (false if the
    /// store is dropped first).
    pub fn synced(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut progress = self.progress.subscribe();
        async move { progress.wait_for(|p| p.watched.as_ref().is_some_and(|w| w.is_subset(&p.listed))).await.is_ok() }
    }

    /// The children of `owner` of the given kinds, in `namespace` (and,
    /// for cluster-scoped kinds, cluster-wide), as the watches last saw them.
    pub fn of(&self, kinds: &[ChildKind], namespace: &str, owner: Owner<'_>) -> Vec<(Key, Arc<Kept>)> {
        let store = self.by_namespace.read().unwrap_or_else(|p| p.into_inner());
        let mut buckets = vec![namespace];
        if kinds.iter().any(|k| !k.namespaced()) {
            buckets.push("");
        }
        buckets
            .into_iter()
            .filter_map(|b| store.get(b))
            .flat_map(|bucket| bucket.iter())
            .filter(|(key, kept)| kinds.contains(&key.kind) && owner.selects(kept))
            .map(|(key, kept)| (key.clone(), kept.clone()))
            .collect()
    }

    /// Records an object this operator just wrote (the API server's
    /// answer), so the reconcile that wrote it, and the next, read their own
    /// write. Its watch event, arriving later, then changes nothing and
    /// wakes nobody. Returns what the store now keeps of it.
    pub fn wrote(&self, kind: ChildKind, object: &DynamicObject) -> Arc<Kept> {
        let kept = Arc::new(Kept::of(kind, object));
        self.upsert(key_of(kind, object), kept.clone(), false);
        kept
    }

    /// Forgets a child this operator just deleted.
    pub fn deleted(&self, key: &Key) {
        self.memo.forget(key);
        let mut store = self.by_namespace.write().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = store.get_mut(bucket_of(key)) {
            bucket.remove(key);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_namespace.read().unwrap_or_else(|p| p.into_inner()).values().all(HashMap::is_empty)
    }

    /// Inserts or replaces a child; fans it out if `notify` and it changed
    /// in a way its owner reads.
    fn upsert(&self, key: Key, kept: Arc<Kept>, notify: bool) {
        let changed = {
            let mut store = self.by_namespace.write().unwrap_or_else(|p| p.into_inner());
            let bucket = store.entry(bucket_of(&key).to_string()).or_default();
            match bucket.get(&key) {
                Some(stored) if older(&kept, stored) => false,
                Some(stored) => {
                    let changed = stored.relevance() != kept.relevance();
                    bucket.insert(key.clone(), kept.clone());
                    changed
                }
                None => {
                    bucket.insert(key.clone(), kept.clone());
                    true
                }
            }
        };
        if notify && changed {
            self.fan_out(key, kept);
        }
    }

    fn remove(&self, key: Key, last: Arc<Kept>) {
        self.deleted(&key);
        self.fan_out(key, last);
    }

    /// Replaces every child of `kind` with a fresh list, fanning out what
    /// the list changed, added or lost; the memo forgets what it lost.
    fn replace(&self, kind: ChildKind, listed: Bucket) {
        let (mut gone, mut changed) = (Vec::new(), Vec::new());
        {
            let mut store = self.by_namespace.write().unwrap_or_else(|p| p.into_inner());
            for bucket in store.values_mut() {
                bucket.retain(|key, kept| {
                    let keep = key.kind != kind || listed.contains_key(key);
                    if !keep {
                        gone.push((key.clone(), kept.clone()));
                    }
                    keep
                });
            }
            for (key, kept) in listed {
                let bucket = store.entry(bucket_of(&key).to_string()).or_default();
                if bucket.get(&key).is_none_or(|stored| stored.relevance() != kept.relevance()) {
                    changed.push((key.clone(), kept.clone()));
                }
                bucket.insert(key, kept);
            }
        }
        for (key, kept) in gone {
            self.memo.forget(&key);
            self.fan_out(key, kept);
        }
        for (key, kept) in changed {
            self.fan_out(key, kept);
        }
    }

    fn fan_out(&self, key: Key, kept: Arc<Kept>) {
        self.subscribers.send(Arc::new(Change { key, kept }));
    }

    /// Watches every kind in `kinds` until the streams end. Call once.
    pub async fn run(self: Arc<Self>, client: Client, kinds: Vec<ChildKind>) {
        self.progress.send_modify(|p| p.watched = Some(kinds.iter().copied().collect()));
        let config = watcher::Config::default().labels(&labels::managed_selector());
        let watches = kinds.into_iter().map(|kind| {
            let (this, client, config, ar) = (self.clone(), client.clone(), config.clone(), kind.api_resource());
            async move {
                if projected_fields(kind).is_empty() {
                    // Metadata only: nothing of the object's body is read.
                    let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client, &ar);
                    let events = watcher::watcher(api, lists::paged(config, lists::METADATA_PAGE))
                        .default_backoff()
                        .map(move |e| e.map(|e| as_dynamic_event(kind, e)));
                    this.follow(kind, lists::gated(events)).await
                } else {
                    // Whole objects are kept small as each page arrives, so
                    // the page bounds the peak (see `lists`).
                    let api = Api::<DynamicObject>::all_with(client, &ar);
                    let config = lists::paged(config, lists::WHOLE_PAGE);
                    this.follow(kind, lists::gated(watcher::watcher(api, config).default_backoff())).await
                }
            }
        });
        futures::future::join_all(watches).await;
    }

    async fn follow(
        &self,
        kind: ChildKind,
        events: impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        let mut listing: Option<Bucket> = None;
        let kept = |object: &DynamicObject| (key_of(kind, object), Arc::new(Kept::of(kind, object)));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(Bucket::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    let (key, kept) = kept(&object);
                    listing.get_or_insert_default().insert(key, kept);
                }
                Ok(watcher::Event::InitDone) => {
                    self.replace(kind, listing.take().unwrap_or_default());
                    self.progress.send_modify(|p| {
                        p.listed.insert(kind);
                    });
                }
                Ok(watcher::Event::Apply(object)) => {
                    let (key, kept) = kept(&object);
                    self.upsert(key, kept, true);
                }
                Ok(watcher::Event::Delete(object)) => {
                    let (key, kept) = kept(&object);
                    self.remove(key, kept);
                }
                Err(error) => tracing::warn!(kind = ?kind, %error, "child watch failed; retrying with backoff"),
            }
        }
    }
}

/// A metadata-only watch event as a DynamicObject with its type and
/// metadata and no body, as `Kept::of` reads every child.
fn as_dynamic_event(
    kind: ChildKind,
    event: watcher::Event<PartialObjectMeta<DynamicObject>>,
) -> watcher::Event<DynamicObject> {
    let gvk = kind.gvk();
    let convert = |m: PartialObjectMeta<DynamicObject>| DynamicObject {
        types: Some(TypeMeta { api_version: gvk.api_version(), kind: gvk.kind.clone() }),
        metadata: m.metadata,
        data: Value::Null,
    };
    match event {
        watcher::Event::Apply(m) => watcher::Event::Apply(convert(m)),
        watcher::Event::Delete(m) => watcher::Event::Delete(convert(m)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(m) => watcher::Event::InitApply(convert(m)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: ChildKind, namespace: &str, name: &str, extra: Value) -> DynamicObject {
        let gvk = kind.gvk();
        let mut value = json!({
            "apiVersion": gvk.api_version(),
            "kind": gvk.kind,
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "10",
                         "labels": {labels::MANAGED_BY: labels::MANAGER_VALUE, labels::TENANT: "ics-a"}},
        });
        if let (Value::Object(base), Value::Object(more)) = (&mut value, extra) {
            for (k, v) in more {
                if k == "metadata" {
                    let meta = base.get_mut("metadata").and_then(Value::as_object_mut).expect("metadata");
                    meta.extend(v.as_object().cloned().unwrap_or_default());
                } else {
                    base.insert(k, v);
                }
            }
        }
        serde_json::from_value(value).expect("a valid object")
    }

    fn deployment(available: i64, condition_time: &str) -> DynamicObject {
        object(
            ChildKind::Deployment,
            "ics-a",
            "record-store",
            json!({
                "metadata": {"generation": 2},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "hapi", "image": "hapi:8"}]}}},
                "status": {"observedGeneration": 2, "availableReplicas": available, "updatedReplicas": 2,
                           "conditions": [{"type": "Available", "lastUpdateTime": condition_time}]},
            }),
        )
    }

    #[test]
    fn a_deployment_keeps_only_what_readiness_reads() {
        let kept = Kept::of(ChildKind::Deployment, &deployment(2, "t1"));
        assert_eq!(
            kept.view(),
            &json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
                    "status": {"observedGeneration": 2, "availableReplicas": 2, "updatedReplicas": 2}})
        );
        assert!(super::super::readiness::deployment(Some(kept.view())).ready);
    }

    #[test]
    fn a_quota_keeps_when_and_where_it_was_created() {
        let quota = object(
            ChildKind::ResourceQuota,
            "ics-a",
            "tenant-quota",
            json!({"metadata": {"creationTimestamp": "2026-12-07T12:00:00Z"}, "spec": {"hard": {"pods": "50"}}}),
        );
        let kept = Kept::of(ChildKind::ResourceQuota, &quota);
        assert_eq!(kept.view().pointer("/metadata/creationTimestamp"), Some(&json!("2026-12-07T12:00:00Z")));
        assert_eq!(kept.view().pointer("/metadata/namespace"), Some(&json!("ics-a")));
        assert_eq!(kept.view().pointer("/spec/hard/pods"), Some(&json!("50")));
    }

    #[test]
    fn a_kind_readiness_does_not_read_keeps_no_body() {
        let cm = object(ChildKind::ConfigMap, "ics-a", "policy", json!({"data": {"policy.json": "{}"}}));
        assert_eq!(Kept::of(ChildKind::ConfigMap, &cm).view(), &Value::Null);
    }

    #[test]
    fn only_the_operators_own_labels_and_the_owner_annotation_are_kept() {
        let mut d = deployment(2, "t1");
        d.labels_mut().insert(labels::NAME.into(), "record-store".into());
        d.annotations_mut().insert("deployment.kubernetes.io/revision".into(), "3".into());
        d.annotations_mut().insert(labels::OWNER_UID.into(), "u-1".into());
        let kept = Kept::of(ChildKind::Deployment, &d);
        assert_eq!(kept.label(labels::TENANT), Some("ics-a"));
        assert_eq!(kept.label(labels::NAME), None);
        assert_eq!(kept.owner_uid(), Some("u-1"));
    }

    #[test]
    fn what_is_dropped_still_counts_in_the_fingerprint() {
        let before = deployment(2, "t1");
        let mut after = before.clone();
        after.annotations_mut().insert("someone".into(), "edited".into());
        assert_ne!(
            Kept::of(ChildKind::Deployment, &before).fingerprint(),
            Kept::of(ChildKind::Deployment, &after).fingerprint()
        );
    }

    #[test]
    fn a_status_rewrite_with_the_same_counts_wakes_nobody() {
        let before = Kept::of(ChildKind::Deployment, &deployment(2, "t1"));
        let after = Kept::of(ChildKind::Deployment, &deployment(2, "t2"));
        assert_eq!(before.relevance(), after.relevance());
    }

    #[test]
    fn a_replica_becoming_available_wakes_the_owner_but_keeps_the_fingerprint() {
        let before = Kept::of(ChildKind::Deployment, &deployment(1, "t1"));
        let after = Kept::of(ChildKind::Deployment, &deployment(2, "t1"));
        assert_ne!(before.relevance(), after.relevance());
        assert_eq!(before.fingerprint(), after.fingerprint());
    }

    #[test]
    fn a_spec_change_by_anyone_changes_the_fingerprint() {
        let before = deployment(2, "t1");
        let mut after = before.clone();
        after.metadata.generation = Some(3);
        assert_ne!(fingerprint(&before), fingerprint(&after));
    }

    #[test]
    fn a_label_change_changes_the_fingerprint() {
        let before = deployment(2, "t1");
        let mut after = before.clone();
        after.labels_mut().insert("x".into(), "y".into());
        assert_ne!(fingerprint(&before), fingerprint(&after));
    }

    #[test]
    fn any_write_to_a_kind_without_generation_changes_the_fingerprint() {
        let before = object(ChildKind::ConfigMap, "ics-a", "policy", json!({}));
        let mut after = before.clone();
        after.metadata.resource_version = Some("11".into());
        assert_ne!(fingerprint(&before), fingerprint(&after));
    }

    #[test]
    fn owners_select_their_children_as_their_label_selectors_do() {
        let with = |extra: Value| Kept::of(ChildKind::ConfigMap, &object(ChildKind::ConfigMap, "ics-a", "c", extra));
        let tenant = with(json!({}));
        let connector = with(json!({"metadata": {"labels": {labels::MANAGED_BY: labels::MANAGER_VALUE,
            labels::TENANT: "ics-a", labels::CONNECTOR: "gp"}}}));
        let foreign =
            with(json!({"metadata": {"labels": {labels::MANAGED_BY: "someone-else", labels::TENANT: "ics-a"}}}));
        assert!(Owner::Tenant("ics-a").selects(&tenant));
        assert!(!Owner::Tenant("ics-b").selects(&tenant));
        assert!(!Owner::Tenant("ics-a").selects(&connector));
        assert!(Owner::Connector("gp").selects(&connector));
        assert!(!Owner::Connector("gp").selects(&tenant));
        assert!(!Owner::Tenant("ics-a").selects(&foreign));
    }

    #[test]
    fn a_memo_holds_only_for_the_desired_hash_and_version_it_confirmed() {
        let memo = Memo::default();
        let live = deployment(2, "t1");
        let key = key_of(ChildKind::Deployment, &live);
        memo.confirm(key.clone(), 7, fingerprint(&live));
        assert!(memo.holds(&key, 7, Kept::of(ChildKind::Deployment, &live).fingerprint()));
        assert!(!memo.holds(&key, 8, fingerprint(&live)), "a changed render is checked again");
        let mut edited = live.clone();
        edited.metadata.generation = Some(3);
        assert!(!memo.holds(&key, 7, fingerprint(&edited)), "someone else's edit is checked again");
    }

    #[test]
    fn a_watch_event_older_than_a_recorded_write_does_not_replace_it() {
        let children = Children::default();
        let mut written = deployment(2, "t1");
        written.metadata.resource_version = Some("20".into());
        children.wrote(ChildKind::Deployment, &written);
        let stale = deployment(1, "t0");
        children.upsert(key_of(ChildKind::Deployment, &stale), Arc::new(Kept::of(ChildKind::Deployment, &stale)), true);
        let kept = children.of(&[ChildKind::Deployment], "ics-a", Owner::Tenant("ics-a"));
        assert_eq!(kept[0].1.version, Some(20));
    }

    #[test]
    fn a_relist_forgets_children_that_are_gone_and_tells_their_owners() {
        let children = Children::default();
        let mut woken = Box::pin(children.subscribe());
        let gone = object(ChildKind::ConfigMap, "ics-a", "old", json!({}));
        children.wrote(ChildKind::ConfigMap, &gone);
        children.memo.confirm(key_of(ChildKind::ConfigMap, &gone), 1, fingerprint(&gone));
        children.replace(ChildKind::ConfigMap, Bucket::new());
        assert!(children.is_empty());
        assert!(children.memo.is_empty());
        let told = futures::executor::block_on(woken.next()).expect("the owner is told");
        assert_eq!(told.key.name, "old");
    }

    #[test]
    fn cluster_scoped_children_are_found_with_the_namespaced_ones() {
        let children = Children::default();
        let mut ns = object(ChildKind::Namespace, "", "ics-a", json!({}));
        ns.metadata.namespace = None;
        children.wrote(ChildKind::Namespace, &ns);
        children.wrote(ChildKind::ConfigMap, &object(ChildKind::ConfigMap, "ics-a", "policy", json!({})));
        let found = children.of(&[ChildKind::Namespace, ChildKind::ConfigMap], "ics-a", Owner::Tenant("ics-a"));
        assert_eq!(found.len(), 2);
        assert!(children.of(&[ChildKind::ConfigMap], "ics-b", Owner::Tenant("ics-a")).is_empty());
    }
}
