//! What wakes each controller, and how many objects wait for a reconcile.
//!
//! Every trigger of every controller is a stream built here, so the queue
//! depth (objects a watch asked to reconcile that no reconcile has picked up
//! yet) is counted where requests enter and where reconciles start.
//! kube-runtime's scheduler does not expose its queue (kube-rs/kube#1917).
//! Every watch here backs off on errors: a watch that fails (a CRD removed,
//! RBAC narrowed) retries with client-go's backoff rather than in a hot loop.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, watcher};
use prometheus_client::metrics::gauge::Gauge;

use super::apply::Key;
use super::caches::Cache;
use super::children::{Children, Kept};
use super::lists;
use super::metrics::{KindLabel, Metrics};

/// How long a request for an object missing from the cache is remembered.
/// The controller drops such requests without a reconcile (the object was
/// deleted), so they would otherwise count as queued forever.
const FORGET_MISSING_AFTER: Duration = Duration::from_secs(20);
/// Pending requests are checked against the cache at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Objects asked for by a watch and not yet picked up by a reconcile. A
/// request for an object already pending counts once, as the scheduler
/// merges it too.
pub struct Queue<K: Resource<DynamicType = ()> + 'static> {
    state: Mutex<Pending<K>>,
    depth: Gauge,
    store: Store<K>,
}

struct Pending<K: Resource<DynamicType = ()>> {
    since: HashMap<ObjectRef<K>, Instant>,
    swept: Instant,
}

impl<K> Queue<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(depth: Gauge, store: Store<K>) -> Self {
        Self { state: Mutex::new(Pending { since: HashMap::new(), swept: Instant::now() }), depth, store }
    }

    pub fn requested(&self, object: ObjectRef<K>) {
        self.update(|pending| {
            pending.since.entry(object).or_insert_with(Instant::now);
        });
    }

    pub fn picked(&self, object: &K) {
        let object = ObjectRef::from_obj(object);
        self.update(|pending| {
            pending.since.remove(&object);
        });
    }

    /// Forgets requests for objects gone from the cache. `drive` calls it
    /// on a timer, so a deleted object does not count as queued while
    /// nothing else happens.
    pub fn sweep(&self) {
        self.update(|_| {});
    }

    pub fn depth(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).since.len()
    }

    fn update(&self, change: impl FnOnce(&mut Pending<K>)) {
        let mut pending = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut pending);
        if pending.swept.elapsed() >= SWEEP_EVERY {
            pending.swept = Instant::now();
            let store = &self.store;
            pending.since.retain(|object, since| since.elapsed() < FORGET_MISSING_AFTER || store.get(object).is_some());
        }
        self.depth.set(pending.since.len() as i64);
    }
}

/// A controller with its triggers, each counted by its queue.
pub struct Triggers<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + 'static,
{
    pub(super) kind: &'static str,
    pub(super) controller: Controller<K>,
    pub(super) queue: Arc<Queue<K>>,
    synced: futures::future::Shared<futures::future::BoxFuture<'static, bool>>,
}

impl<K> Triggers<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::Scope: 'static,
{
    /// A controller for `K` over its shared cache, woken by every change to
    /// a `K` (status and metadata included: the finalizer and a changed
    /// status are both things a reconcile acts on).
    pub fn new(kind: &'static str, cache: &Cache<K>, metrics: &Metrics) -> Self {
        let store = cache.store();
        let depth = metrics.queue_depth.get_or_create(&KindLabel { kind }).clone();
        let queue = Arc::new(Queue::new(depth, store.clone()));
        let counted = queue.clone();
        let primary = cache.subscribe().inspect(move |object| counted.requested(ObjectRef::from_obj(&**object)));
        Self {
            kind,
            controller: Controller::for_shared_stream(primary, store),
            queue,
            synced: cache.synced().boxed().shared(),
        }
    }

    /// Resolves once the cache has listed every `K` (false if the watch
    /// ended first).
    pub fn synced(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        self.synced.clone()
    }

    /// The controller's cache of `K`.
    pub fn store(&self) -> Store<K> {
        self.controller.store()
    }

    /// Wakes each object that `requests` names.
    pub fn on(mut self, requests: impl Stream<Item = ObjectRef<K>> + Send + 'static) -> Self {
        let counted = self.queue.clone();
        self.controller = self.controller.reconcile_on(requests.inspect(move |r| counted.requested(r.clone())));
        self
    }

    /// Wakes the owner that each changed child names in its
    /// ownerReferences (or, for data, its owner annotation), for every
    /// change of a managed child the shared child store passes on: those
    /// that can change the owner's outcome (see `children::relevance`).
    pub fn owned(self, children: &Children) -> Self {
        self.on(children.subscribe().filter_map(|change| std::future::ready(owner_of::<K>(&change.key, &change.kept))))
    }

    /// Wakes what `map` names for each change of a related object.
    pub fn related<T, I>(self, api: Api<T>, map: impl Fn(T) -> I + Send + 'static) -> Self
    where
        T: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
        T::DynamicType: Default + Clone + Eq + Hash + Send + Sync,
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        self.on(mapped(watch(api, watcher::Config::default()).touched_objects(), map))
    }

    /// Wakes what `map` names for each change the shared `cache` sees.
    pub fn related_cached<T, I>(self, cache: &Cache<T>, map: impl Fn(&T) -> I + Send + 'static) -> Self
    where
        T: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        self.on(cache.subscribe().flat_map(move |object| futures::stream::iter(map(&object))))
    }

    /// `related_cached`, but only for changes that alter what `standing`
    /// hashes (for example a tenant's generation, phase and readiness, not
    /// its counts), creation and deletion.
    pub fn related_cached_when<T, I>(
        self,
        cache: &Cache<T>,
        standing: impl Fn(&T) -> Option<u64> + Send + 'static,
        map: impl Fn(&T) -> I + Send + 'static,
    ) -> Self
    where
        T: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        let mut seen: HashMap<ObjectRef<T>, Option<u64>> = HashMap::new();
        let changed = cache.subscribe().filter(move |object| {
            let key = ObjectRef::from_obj(&**object);
            let now = standing(object);
            // A deleted object is forgotten (and its deletion passes: the
            // deletion timestamp, set before, is part of what `standing` hashes).
            let passes = seen.get(&key) != Some(&now);
            seen.insert(key, now);
            std::future::ready(passes)
        });
        self.on(changed.flat_map(move |object| futures::stream::iter(map(&object))))
    }

    /// `related`, but only for changes that alter what `predicate` hashes
    /// (for example the generation: spec changes, creation, deletion).
    pub fn related_when<T, I>(
        self,
        api: Api<T>,
        predicate: impl Predicate<T> + Send + 'static,
        map: impl Fn(T) -> I + Send + 'static,
    ) -> Self
    where
        T: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
        T::DynamicType: Default + Clone + Eq + Hash + Send + Sync,
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        let changes =
            watch(api, watcher::Config::default()).touched_objects().predicate_filter(predicate, Default::default());
        self.on(mapped(changes, map))
    }
}

/// What `map` names for each changed object (watch errors are retried by
/// the watch's backoff, so they wake nothing).
fn mapped<T, R, I>(
    changes: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    map: impl Fn(T) -> I + Send + 'static,
) -> impl Stream<Item = R> + Send + 'static
where
    T: Send + 'static,
    I: IntoIterator<Item = R>,
    I::IntoIter: Send + 'static,
{
    changes
        .filter_map(|object| std::future::ready(object.ok()))
        .flat_map(move |object| futures::stream::iter(map(object)))
}

fn watch<T>(
    api: Api<T>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static
where
    T: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    // Paged as every list is (see `lists`); at the whole-object page size,
    // since `T` may be a whole object.
    lists::gated(watcher(api, lists::paged(config, lists::WHOLE_PAGE)).default_backoff())
}

/// The `K` that `child` names as an owner. Matching by group rather than
/// apiVersion keeps children written by an older API version found.
pub fn owner_of<K>(key: &Key, child: &Kept) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + 'static,
    K::Scope: 'static,
{
    let (kind, group) = (K::kind(&()), K::group(&()));
    let by_reference = child
        .owner_references()
        .iter()
        .find(|o| o.kind == kind && o.api_version.split('/').next() == Some(group.as_ref()));
    let Some(owner) = by_reference else {
        // Data children carry no ownerReference (see labels::OWNER_UID):
        // their tenant is the one their tenant label names.
        let is_tenant =
            kind == crate::api::CareRecordTenant::kind(&()) && group == crate::api::CareRecordTenant::group(&());
        let tenant = child.label(crate::render::labels::TENANT)?;
        return (is_tenant && child.owner_uid().is_some()).then(|| ObjectRef::<K>::new(tenant));
    };
    let reference = ObjectRef::<K>::new(&owner.name);
    // Owner references carry no namespace: a namespaced owner shares its
    // child's namespace; a cluster-scoped owner (a tenant) has none.
    Some(if TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>() {
        reference.within(key.namespace.as_deref()?)
    } else {
        reference
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CareRecordTenant, ProviderConnector};
    use crate::render::child::ChildKind;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(kind: &str, api_version: &str, name: &str) -> ConfigMap {
        let mut child = ConfigMap::default();
        child.metadata.namespace = Some("ics-a".into());
        child.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }]);
        child
    }

    /// `owner_of` for `child` as the child store keeps it.
    fn owner<K>(child: &ConfigMap) -> Option<ObjectRef<K>>
    where
        K: Resource<DynamicType = ()> + 'static,
        K::Scope: 'static,
    {
        let object: kube::api::DynamicObject = serde_json::from_value(serde_json::to_value(child).unwrap()).unwrap();
        let key = Key { kind: ChildKind::ConfigMap, namespace: child.metadata.namespace.clone(), name: "c".into() };
        owner_of::<K>(&key, &Kept::of(ChildKind::ConfigMap, &object))
    }

    fn queue() -> Queue<ConfigMap> {
        let (store, _writer) = kube::runtime::reflector::store();
        Queue::new(Gauge::default(), store)
    }

    #[test]
    fn a_cluster_scoped_owner_is_found_without_a_namespace() {
        let child = owned_by("CareRecordTenant", "carerecord.dev/v1alpha1", "ics-a");
        assert_eq!(owner::<CareRecordTenant>(&child), Some(ObjectRef::new("ics-a")));
    }

    #[test]
    fn a_namespaced_owner_is_found_in_its_childs_namespace() {
        let child = owned_by("ProviderConnector", "carerecord.dev/v1alpha1", "gp");
        assert_eq!(owner::<ProviderConnector>(&child), Some(ObjectRef::new("gp").within("ics-a")));
    }

    #[test]
    fn data_without_an_owner_reference_is_mapped_to_its_tenant_by_label() {
        let mut child = ConfigMap::default();
        child.metadata.labels = Some([(crate::render::labels::TENANT.to_string(), "ics-a".to_string())].into());
        child.metadata.annotations = Some([(crate::render::labels::OWNER_UID.to_string(), "u".to_string())].into());
        assert_eq!(owner::<CareRecordTenant>(&child), Some(ObjectRef::new("ics-a")));
        assert_eq!(owner::<ProviderConnector>(&child), None);
    }

    #[test]
    fn an_owner_of_another_group_is_not_ours() {
        let child = owned_by("CareRecordTenant", "example.com/v1", "ics-a");
        assert_eq!(owner::<CareRecordTenant>(&child), None);
    }

    #[test]
    fn repeated_requests_for_one_object_count_once() {
        let q = queue();
        q.requested(ObjectRef::new("a").within("ics-a"));
        q.requested(ObjectRef::new("a").within("ics-a"));
        q.requested(ObjectRef::new("b").within("ics-a"));
        assert_eq!(q.depth(), 2);
        assert_eq!(q.depth.get(), 2);
    }

    #[test]
    fn a_reconcile_takes_its_object_off_the_queue() {
        let q = queue();
        q.requested(ObjectRef::new("a").within("ics-a"));
        let mut object = ConfigMap::default();
        object.metadata.name = Some("a".into());
        object.metadata.namespace = Some("ics-a".into());
        q.picked(&object);
        assert_eq!(q.depth(), 0);
        assert_eq!(q.depth.get(), 0);
    }
}
