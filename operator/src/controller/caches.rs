//! One watch per kind that more than one controller reads, shared.
//!
//! Each cache is a reflector store fed by one watch, and fans every change
//! out to its subscribers only after the store holds it. So a reconcile
//! woken by a change reads at least that change from the cache (never an
//! older copy, as a second watch of the same kind could give), and its
//! reads of tenants, connectors, agreements and tenant namespaces cost the
//! API server nothing. Before, tenants were watched three times, agreements
//! three times and connectors twice, and every reconcile listed or got them
//! again.
//!
//! kube-runtime's shared stores (`store_shared`) do not pass deletions on;
//! a tenant must hear that a connector went (its counts change), so the
//! fan-out here is our own: every applied or deleted object, after the
//! store has it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::lists;
use crate::api::{CareRecordTenant, ProviderConnector, SharingAgreement};
use crate::render::labels;

/// Who hears of each change a store has taken in: one unbounded queue per
/// subscriber (a controller's trigger stream), shared by `Cache` and the
/// child store.
pub struct Subscribers<T> {
    senders: Mutex<Vec<mpsc::UnboundedSender<Arc<T>>>>,
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Self { senders: Mutex::default() }
    }
}

impl<T: Send + Sync + 'static> Subscribers<T> {
    /// A stream of every object sent from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<T>> + Send + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    pub fn send(&self, object: Arc<T>) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        // A subscriber that has gone (its controller stopped) is dropped.
        senders.retain(|s| s.send(object.clone()).is_ok());
    }
}

/// A cache of every `K` a watch selects, with subscribers.
pub struct Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Subscribers<K>,
    listed: watch::Sender<bool>,
    /// The store's objects by namespace and name, so a namespace's
    /// connectors or agreements are found without a walk over every one
    /// on the platform (reconciles and wake-ups ask this thousands of times).
    by_namespace: RwLock<NamespaceIndex<K>>,
}

/// Objects by namespace and name, sharing the store's copies.
struct NamespaceIndex<K>(HashMap<String, BTreeMap<String, Arc<K>>>);

impl<K> Default for NamespaceIndex<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Resource> NamespaceIndex<K> {
    fn insert(&mut self, object: Arc<K>) {
        let (namespace, name) = (object.meta().namespace.clone().unwrap_or_default(), object.name_any());
        self.0.entry(namespace).or_default().insert(name, object);
    }

    fn remove(&mut self, object: &K) {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        if let Some(objects) = self.0.get_mut(&namespace) {
            objects.remove(&object.name_any());
            if objects.is_empty() {
                self.0.remove(&namespace);
            }
        }
    }

    fn of(&self, namespace: &str) -> Vec<Arc<K>> {
        self.0.get(namespace).map(|objects| objects.values().cloned().collect()).unwrap_or_default()
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    pub fn new() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Mutex::new(Some(writer)),
            subscribers: Subscribers::default(),
            listed: watch::channel(false).0,
            by_namespace: RwLock::default(),
        }
    }

    /// The objects in `namespace`, by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.by_namespace.read().unwrap_or_else(|p| p.into_inner()).of(namespace)
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, NamespaceIndex<K>> {
        self.by_namespace.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The objects as the watch last saw them.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object created, changed or deleted (its last state), once the
    /// store holds the change; after a (re)list, every object listed.
    /// Subscribe before `run`: earlier changes are not replayed.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.subscribers.subscribe()
    }

    /// Resolves once the first list is in the store (false if the watch
    /// ended first).
    pub fn synced(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut listed = self.listed.subscribe();
        async move { listed.wait_for(|l| *l).await.is_ok() }
    }

    /// Watches `api` (with `config`) into the store until the stream ends.
    /// Call once; a second call returns at once.
    pub async fn run(&self, api: Api<K>, config: watcher::Config) {
        let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        // managedFields are kept by the API server for server-side apply;
        // nothing here reads them, and on a connector written by a person,
        // the operator and a status writer they are most of the object:
        // dropped before the store keeps it.
        let events =
            lists::gated(watcher(api, config).default_backoff().modify(|object| object.managed_fields_mut().clear()))
                .reflect(writer);
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                // The index takes each change before any subscriber hears
                // of it, as the store does; both share the store's copy.
                Ok(watcher::Event::Apply(object)) => {
                    let stored = self.store.get(&reflector::ObjectRef::from_obj(&object));
                    let object = stored.unwrap_or_else(|| Arc::new(object));
                    self.index().insert(object.clone());
                    self.fan_out(object);
                }
                Ok(watcher::Event::Delete(object)) => {
                    self.index().remove(&object);
                    self.fan_out(Arc::new(object));
                }
                // Listed objects reach the store at InitDone, all at once.
                Ok(watcher::Event::InitDone) => {
                    let state = self.store.state();
                    let mut fresh = NamespaceIndex::default();
                    for object in &state {
                        fresh.insert(object.clone());
                    }
                    *self.index() = fresh;
                    self.listed.send_replace(true);
                    for object in state {
                        self.fan_out(object);
                    }
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff"),
            }
        }
    }

    fn fan_out(&self, object: Arc<K>) {
        self.subscribers.send(object);
    }
}

impl<K> Default for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// The caches the controllers share.
#[derive(Default)]
pub struct Caches {
    pub tenants: Cache<CareRecordTenant>,
    pub connectors: Cache<ProviderConnector>,
    pub agreements: Cache<SharingAgreement>,
    /// Tenant namespaces (those labelled with a tenant), metadata only.
    pub namespaces: Cache<PartialObjectMeta<Namespace>>,
}

impl Caches {
    /// Runs every watch until one stream ends (they end only on shutdown of
    /// the runtime).
    pub async fn run(self: Arc<Self>, client: Client) {
        // Listed a page at a time (see `lists`): a platform's connectors
        // listed whole are one body of tens of MiB.
        let whole = lists::paged(watcher::Config::default(), lists::WHOLE_PAGE);
        let metadata = lists::paged(watcher::Config::default().labels(labels::TENANT), lists::METADATA_PAGE);
        tokio::join!(
            self.tenants.run(Api::all(client.clone()), whole.clone()),
            self.connectors.run(Api::all(client.clone()), whole.clone()),
            self.agreements.run(Api::all(client.clone()), whole),
            self.namespaces.run(Api::all(client), metadata),
        );
    }

    /// Resolves once every cache has listed.
    pub async fn synced(&self) -> bool {
        let (a, b, c, d) = tokio::join!(
            self.tenants.synced(),
            self.connectors.synced(),
            self.agreements.synced(),
            self.namespaces.synced()
        );
        a && b && c && d
    }

    /// The tenant that owns `namespace`, unless it is being deleted. The
    /// namespace's tenant label says which tenant took it; that tenant must
    /// name the namespace too (a label alone proves nothing).
    pub fn tenant_of(&self, namespace: &str) -> Option<Arc<CareRecordTenant>> {
        let ns = self.namespaces.store.get(&reflector::ObjectRef::new(namespace))?;
        let name = ns.labels().get(labels::TENANT)?;
        let tenant = self.tenants.store.get(&reflector::ObjectRef::new(name))?;
        (tenant.target_namespace() == namespace && tenant.metadata.deletion_timestamp.is_none()).then_some(tenant)
    }

    /// A tenant by name, unless it is being deleted.
    pub fn tenant(&self, name: &str) -> Option<Arc<CareRecordTenant>> {
        self.tenants.store.get(&reflector::ObjectRef::new(name)).filter(|t| t.metadata.deletion_timestamp.is_none())
    }

    /// Every tenant.
    pub fn all_tenants(&self) -> Vec<Arc<CareRecordTenant>> {
        self.tenants.store.state()
    }

    /// The connectors in `namespace`.
    pub fn connectors_in(&self, namespace: &str) -> Vec<Arc<ProviderConnector>> {
        self.connectors.in_namespace(namespace)
    }

    /// The agreements in `namespace`.
    pub fn agreements_in(&self, namespace: &str) -> Vec<Arc<SharingAgreement>> {
        self.agreements.in_namespace(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(namespace: &str, name: &str) -> Arc<ProviderConnector> {
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: carerecord.dev/v1alpha1\nkind: ProviderConnector\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  provider: {{odsCode: A1, name: A, kind: GPPractice}}\n  system: emis-web\n  endpoint: {{url: 'https://a.example'}}\n"
            ))
            .expect("a connector"),
        )
    }

    #[test]
    fn a_namespace_index_answers_one_namespace_by_name_and_forgets_what_is_removed() {
        let mut index = NamespaceIndex::default();
        index.insert(connector("scr-a", "gp-2"));
        index.insert(connector("scr-a", "gp-1"));
        index.insert(connector("scr-b", "gp-1"));
        let names: Vec<String> = index.of("scr-a").iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["gp-1", "gp-2"]);
        index.remove(&connector("scr-b", "gp-1"));
        assert!(index.of("scr-b").is_empty());
        assert!(!index.0.contains_key("scr-b"));
    }
}
