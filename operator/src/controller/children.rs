//! Every child the operator manages, watched once and kept small.
//!
//! One watch per child kind, selected by the operator's own label, feeds one
//! store shared by the three controllers. A reconcile reads its children
//! from here rather than listing thirteen kinds from the API server, and is
//! woken through `subscribe` when a child changes in a way that can change
//! its outcome.
//!
//! What is kept of each child is what the controllers read: its metadata
//! (without managedFields) and, for the kinds whose readiness is judged,
//! the few status and spec fields readiness reads (`project`). Everything
//! else (pod templates, ConfigMap and Secret data) stays in the API server:
//! Secret values never enter the operator's memory, and 10,000 children
//! cost a few MiB rather than a copy of etcd.
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

    /// Whether an object with `object_labels` is one of this owner's children.
    pub fn selects(&self, object_labels: &std::collections::BTreeMap<String, String>) -> bool {
        let is = |key: &str, value: &str| object_labels.get(key).is_some_and(|v| v == value);
        is(labels::MANAGED_BY, labels::MANAGER_VALUE)
            && match self {
                Self::Tenant(name) => {
                    is(labels::TENANT, name)
                        && !object_labels.contains_key(labels::CONNECTOR)
                        && !object_labels.contains_key(labels::AGREEMENT)
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

/// The object as the store keeps it: metadata without managedFields, and
/// only the projected fields.
pub fn slim(kind: ChildKind, mut object: DynamicObject) -> DynamicObject {
    object.managed_fields_mut().clear();
    object.data = project(kind, &object.data);
    object
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

/// What a change must alter for the child's owner to be woken: the
/// fingerprint, deletion, and the fields readiness reads. A Deployment's
/// status rewritten with the same replica counts wakes nobody. Pure.
pub fn relevance(object: &DynamicObject) -> u64 {
    let deleting = object.metadata.deletion_timestamp.is_some();
    hash_of((fingerprint(object), deleting, object.data.to_string()))
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
    /// Whether `desired` was confirmed in place on this very version of the child.
    pub fn holds(&self, key: &Key, desired: u64, live: &DynamicObject) -> bool {
        self.lock().get(key) == Some(&(desired, fingerprint(live)))
    }

    pub fn confirm(&self, key: Key, desired: u64, live: &DynamicObject) {
        self.lock().insert(key, (desired, fingerprint(live)));
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

type Bucket = HashMap<Key, Arc<DynamicObject>>;

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
    subscribers: Subscribers<DynamicObject>,
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
fn older(incoming: &DynamicObject, stored: &DynamicObject) -> bool {
    let version = |o: &DynamicObject| o.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
    matches!((version(incoming), version(stored)), (Some(i), Some(s)) if i < s)
}

impl Children {
    /// Every child created, changed in a way `relevance` sees, or deleted
    /// (its last state), once the store holds it. Subscribe before `run`.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<DynamicObject>> + Send + 'static {
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
    pub fn of(&self, kinds: &[ChildKind], namespace: &str, owner: Owner<'_>) -> Vec<(Key, Arc<DynamicObject>)> {
        let store = self.by_namespace.read().unwrap_or_else(|p| p.into_inner());
        let mut buckets = vec![namespace];
        if kinds.iter().any(|k| !k.namespaced()) {
            buckets.push("");
        }
        buckets
            .into_iter()
            .filter_map(|b| store.get(b))
            .flat_map(|bucket| bucket.iter())
            .filter(|(key, object)| kinds.contains(&key.kind) && owner.selects(object.labels()))
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect()
    }

    /// Records an object this operator just wrote (the API server's
    /// answer), so the reconcile that wrote it, and the next, read their own
    /// write. Its watch event, arriving later, then changes nothing and
    /// wakes nobody.
    pub fn wrote(&self, kind: ChildKind, object: &DynamicObject) {
        let slim = Arc::new(slim(kind, object.clone()));
        self.upsert(key_of(kind, &slim), slim, false);
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
    fn upsert(&self, key: Key, object: Arc<DynamicObject>, notify: bool) {
        let changed = {
            let mut store = self.by_namespace.write().unwrap_or_else(|p| p.into_inner());
            let bucket = store.entry(bucket_of(&key).to_string()).or_default();
            match bucket.get(&key) {
                Some(stored) if older(&object, stored) => false,
                Some(stored) => {
                    let changed = relevance(stored) != relevance(&object);
                    bucket.insert(key, object.clone());
                    changed
                }
                None => {
                    bucket.insert(key, object.clone());
                    true
                }
            }
        };
        if notify && changed {
            self.fan_out(object);
        }
    }

    fn remove(&self, key: &Key, last: Arc<DynamicObject>) {
        self.deleted(key);
        self.fan_out(last);
    }

    /// Replaces every child of `kind` with a fresh list, fanning out what
    /// the list changed, added or lost; the memo forgets what it lost.
    fn replace(&self, kind: ChildKind, listed: Bucket) {
        let (mut gone, mut changed) = (Vec::new(), Vec::new());
        {
            let mut store = self.by_namespace.write().unwrap_or_else(|p| p.into_inner());
            for bucket in store.values_mut() {
                bucket.retain(|key, object| {
                    let keep = key.kind != kind || listed.contains_key(key);
                    if !keep {
                        gone.push((key.clone(), object.clone()));
                    }
                    keep
                });
            }
            for (key, object) in listed {
                let bucket = store.entry(bucket_of(&key).to_string()).or_default();
                if bucket.get(&key).is_none_or(|stored| relevance(stored) != relevance(&object)) {
                    changed.push(object.clone());
                }
                bucket.insert(key, object);
            }
        }
        for (key, object) in gone {
            self.memo.forget(&key);
            self.fan_out(object);
        }
        for object in changed {
            self.fan_out(object);
        }
    }

    fn fan_out(&self, object: Arc<DynamicObject>) {
        self.subscribers.send(object);
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
                    this.follow(kind, events).await
                } else {
                    // Whole objects are slimmed as each page arrives, so
                    // the page bounds the peak (see `lists`).
                    let api = Api::<DynamicObject>::all_with(client, &ar);
                    let config = lists::paged(config, lists::WHOLE_PAGE);
                    this.follow(kind, watcher::watcher(api, config).default_backoff()).await
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
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(Bucket::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    let object = slim(kind, object);
                    listing.get_or_insert_default().insert(key_of(kind, &object), Arc::new(object));
                }
                Ok(watcher::Event::InitDone) => {
                    self.replace(kind, listing.take().unwrap_or_default());
                    self.progress.send_modify(|p| {
                        p.listed.insert(kind);
                    });
                }
                Ok(watcher::Event::Apply(object)) => {
                    let object = Arc::new(slim(kind, object));
                    self.upsert(key_of(kind, &object), object, true);
                }
                Ok(watcher::Event::Delete(object)) => {
                    let object = Arc::new(slim(kind, object));
                    self.remove(&key_of(kind, &object), object);
                }
                Err(error) => tracing::warn!(kind = ?kind, %error, "child watch failed; retrying with backoff"),
            }
        }
    }
}

/// A metadata-only watch event as the store keeps every child: a
/// DynamicObject with its type and metadata and no body.
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
        let slim = slim(ChildKind::Deployment, deployment(2, "t1"));
        assert_eq!(
            slim.data,
            json!({"spec": {"replicas": 2}, "status": {"observedGeneration": 2, "availableReplicas": 2, "updatedReplicas": 2}})
        );
        assert!(super::super::readiness::deployment(Some(&serde_json::to_value(&slim).unwrap())).ready);
    }

    #[test]
    fn a_kind_readiness_does_not_read_keeps_no_body() {
        let cm = object(ChildKind::ConfigMap, "ics-a", "policy", json!({"data": {"policy.json": "{}"}}));
        assert_eq!(slim(ChildKind::ConfigMap, cm).data, Value::Null);
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let mut d = deployment(2, "t1");
        d.metadata.managed_fields = Some(vec![Default::default()]);
        assert!(slim(ChildKind::Deployment, d).metadata.managed_fields.unwrap_or_default().is_empty());
    }

    #[test]
    fn a_status_rewrite_with_the_same_counts_wakes_nobody() {
        let before = slim(ChildKind::Deployment, deployment(2, "t1"));
        let after = slim(ChildKind::Deployment, deployment(2, "t2"));
        assert_eq!(relevance(&before), relevance(&after));
    }

    #[test]
    fn a_replica_becoming_available_wakes_the_owner_but_keeps_the_fingerprint() {
        let before = slim(ChildKind::Deployment, deployment(1, "t1"));
        let after = slim(ChildKind::Deployment, deployment(2, "t1"));
        assert_ne!(relevance(&before), relevance(&after));
        assert_eq!(fingerprint(&before), fingerprint(&after));
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
        let tenant = BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER_VALUE.to_string()),
            (labels::TENANT.to_string(), "ics-a".to_string()),
        ]);
        let mut connector = tenant.clone();
        connector.insert(labels::CONNECTOR.into(), "gp".into());
        let mut foreign = tenant.clone();
        foreign.insert(labels::MANAGED_BY.into(), "someone-else".into());
        assert!(Owner::Tenant("ics-a").selects(&tenant));
        assert!(!Owner::Tenant("ics-b").selects(&tenant));
        assert!(!Owner::Tenant("ics-a").selects(&connector));
        assert!(Owner::Connector("gp").selects(&connector));
        assert!(!Owner::Connector("gp").selects(&tenant));
        assert!(!Owner::Tenant("ics-a").selects(&foreign));
    }
    use std::collections::BTreeMap;

    #[test]
    fn a_memo_holds_only_for_the_desired_hash_and_version_it_confirmed() {
        let memo = Memo::default();
        let live = deployment(2, "t1");
        let key = key_of(ChildKind::Deployment, &live);
        memo.confirm(key.clone(), 7, &live);
        assert!(memo.holds(&key, 7, &live));
        assert!(!memo.holds(&key, 8, &live), "a changed render is checked again");
        let mut edited = live.clone();
        edited.metadata.generation = Some(3);
        assert!(!memo.holds(&key, 7, &edited), "someone else's edit is checked again");
    }

    #[test]
    fn a_watch_event_older_than_a_recorded_write_does_not_replace_it() {
        let children = Children::default();
        let mut written = deployment(2, "t1");
        written.metadata.resource_version = Some("20".into());
        children.wrote(ChildKind::Deployment, &written);
        let stale = Arc::new(slim(ChildKind::Deployment, deployment(1, "t0")));
        children.upsert(key_of(ChildKind::Deployment, &stale), stale, true);
        let kept = children.of(&[ChildKind::Deployment], "ics-a", Owner::Tenant("ics-a"));
        assert_eq!(kept[0].1.metadata.resource_version.as_deref(), Some("20"));
    }

    #[test]
    fn a_relist_forgets_children_that_are_gone_and_tells_their_owners() {
        let children = Children::default();
        let mut woken = Box::pin(children.subscribe());
        let gone = object(ChildKind::ConfigMap, "ics-a", "old", json!({}));
        children.wrote(ChildKind::ConfigMap, &gone);
        children.memo.confirm(key_of(ChildKind::ConfigMap, &gone), 1, &gone);
        children.replace(ChildKind::ConfigMap, Bucket::new());
        assert!(children.is_empty());
        assert!(children.memo.is_empty());
        let told = futures::executor::block_on(woken.next()).expect("the owner is told");
        assert_eq!(told.name_any(), "old");
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
