//! Controllers: when and how desired objects are written.

pub mod agreement;
pub mod apply;
pub mod caches;
pub mod capabilities;
pub mod children;
pub mod connector;
pub mod diff;
pub mod events;
pub mod generated;
pub mod lists;
pub mod metrics;
pub mod pacing;
pub mod prober;
pub mod rbac;
pub mod readiness;
pub mod ready_pods;
pub mod status;
pub mod steady;
pub mod sync;
pub mod tenant;
pub mod tenant_conditions;
pub mod triggers;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Reporter;

use crate::render::child::ChildError;
use crate::settings::PlatformSettings;
use capabilities::Capabilities;
use events::Events;

/// Finalizer that guards tenant data on deletion.
pub const TENANT_FINALIZER: &str = "carerecord.dev/tenant-protection";

/// Everything a reconcile can fail with. Invalid specs are not errors: they
/// settle into a status condition and wait for the spec to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Render(#[from] ChildError),
    #[error(transparent)]
    Generate(#[from] generated::GenerateError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("leader election: {0}")]
    Leadership(String),
}

impl Error {
    /// A small fixed set, used as the Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(e)) if e.code == 403 => "Forbidden",
            Self::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Self::Kube(_) => "ApiError",
            Self::Render(_) => "RenderFailed",
            Self::Generate(_) => "GenerateFailed",
            Self::Finalizer(_) => "FinalizerFailed",
            Self::Leadership(_) => "LeaderElection",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub settings: PlatformSettings,
    pub capabilities: Capabilities,
    pub events: Events,
    pub catalogue: crate::catalogue::Catalogue,
    /// Why the extra catalogue from the settings' ConfigMap did not load.
    pub catalogue_error: Option<String>,
    pub prober: prober::Prober,
    /// Tenants, connectors, agreements and tenant namespaces, watched once
    /// and read by every reconcile.
    pub caches: std::sync::Arc<caches::Caches>,
    /// Every managed child, watched once, kept small and read by every
    /// reconcile.
    pub children: std::sync::Arc<children::Children>,
    /// What running connectors last said about their feeds.
    pub sync: std::sync::Arc<sync::SyncReader>,
    pub metrics: std::sync::Arc<metrics::Metrics>,
    /// Tenants whose last reconcile found every child in place.
    pub(crate) steady: steady::Steady<tenant::HeldBack>,
    /// When each tenant's status was last written, so that counts still
    /// converging are written at a steady pace (`pacing.rs`).
    pub(crate) progress: pacing::Pacer,
    backoff: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: PlatformSettings, metrics: std::sync::Arc<metrics::Metrics>) -> Self {
        let reporter = Reporter { controller: crate::MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            capabilities: Capabilities::new(client.clone()),
            catalogue: crate::catalogue::Catalogue::built_in(),
            catalogue_error: None,
            prober: prober::Prober::new(&settings.probe),
            sync: std::sync::Arc::new(sync::SyncReader::new(&settings.connector_status)),
            caches: std::sync::Arc::default(),
            children: std::sync::Arc::default(),
            metrics,
            events: Events::new(client.clone(), reporter),
            client,
            settings,
            steady: steady::Steady::default(),
            progress: pacing::Pacer::new(tenant::PROGRESS_EVERY),
            backoff: Mutex::default(),
        }
    }

    /// Per-object exponential backoff: 1s, 2s, 4s ... capped at 5 minutes.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let failures = map.entry(key.to_string()).or_insert(0);
        *failures = (*failures + 1).min(9);
        backoff_delay(*failures)
    }

    pub fn reset_backoff(&self, key: &str) {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// How this replica takes part in leader election.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
}

/// What the binary (or a test) gives the controllers besides a client.
pub struct Runtime {
    pub settings: PlatformSettings,
    pub leader_election: Option<LeaderElection>,
    pub metrics: std::sync::Arc<metrics::Metrics>,
    pub health: std::sync::Arc<metrics::Health>,
}

/// Runs every controller until `shutdown` resolves. With leader election,
/// waits for the Lease first, and returns `LostLeadership` if it is lost, so
/// the process exits and restarts as a standby rather than risk two writers.
pub async fn run(
    client: Client,
    runtime: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    use futures::FutureExt;
    let Runtime { settings, leader_election, metrics, health } = runtime;
    let shutdown = Box::pin(shutdown).shared();
    let Some(election) = leader_election else {
        metrics.leader.set(1);
        return run_controllers(client, settings, metrics, health, shutdown).await;
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(crate::MANAGER)
        .build()
        .await
        .map_err(|e| Error::Leadership(e.to_string()))?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby knows its role, so it is ready (it serves health and metrics).
    health.set_ready(true);
    tracing::info!(identity = %election.identity, lease = %election.lease_name, "waiting for leadership");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return Err(Error::Leadership("lease watcher stopped".into())) },
            _ = shutdown.clone() => { drop(leading); let _ = lease_task.await; return Ok(()) }
        }
    }
    tracing::info!(identity = %election.identity, "acquired leadership");
    metrics.leader.set(1);
    // Ready again once the leader's caches are synced.
    health.set_ready(false);
    let mut watch = leading.clone();
    let lost = async move {
        loop {
            if watch.changed().await.is_err() || !*watch.borrow_and_update() {
                return;
            }
        }
    }
    .shared();
    let stop = {
        let (shutdown, lost) = (shutdown.clone(), lost.clone());
        Box::pin(async move {
            tokio::select! { _ = shutdown => {}, _ = lost => {} }
        })
        .shared()
    };
    let result = run_controllers(client, settings, metrics.clone(), health, stop).await;
    metrics.leader.set(0);
    let lost_it = lost.clone().now_or_never().is_some() && shutdown.clone().now_or_never().is_none();
    // Dropping every receiver makes the lease task release the Lease.
    drop(lost);
    drop(leading);
    let _ = lease_task.await;
    result?;
    if lost_it { Err(Error::Leadership("lost the leader Lease".into())) } else { Ok(()) }
}

async fn run_controllers(
    client: Client,
    settings: PlatformSettings,
    metrics: std::sync::Arc<metrics::Metrics>,
    health: std::sync::Arc<metrics::Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Result<()> {
    let mut ctx = Context::new(client, settings, metrics);
    if let Some(source) = ctx.settings.catalogue.clone() {
        match load_catalogue(&ctx.client, &source).await {
            Ok(catalogue) => ctx.catalogue = catalogue,
            Err(problem) => {
                tracing::error!(%problem, "extra connector profiles not loaded; using the built-in catalogue");
                ctx.catalogue_error = Some(problem);
            }
        }
    }
    let ctx = std::sync::Arc::new(ctx);
    let served = ctx.capabilities.get().await?;
    tracing::info!(
        version = crate::VERSION,
        cloud_native_pg = served.cloud_native_pg,
        gateway_api = served.gateway_api,
        "starting controllers"
    );
    let tenants = tenant::triggers(&ctx);
    let (wake_connectors, woken_connectors) = tokio::sync::mpsc::channel(1024);
    let connectors = connector::triggers(&ctx).on(tokio_stream_from(woken_connectors));
    tokio::spawn(ctx.sync.clone().watch_pods(ctx.client.clone()));
    tokio::spawn(ctx.sync.clone().refresh(wake_connectors));
    tokio::spawn(connector::forget_deleted(connectors.store(), ctx.clone()));
    let agreements = agreement::triggers(&ctx);
    tokio::spawn(tenant::count_phases(tenants.store(), ctx.clone()));
    // Every controller has subscribed: the shared watches may start.
    tokio::spawn(ctx.caches.clone().run(ctx.client.clone()));
    tokio::spawn(ctx.children.clone().run(ctx.client.clone(), served.child_kinds()));
    // No reconcile before every cache holds its first list: a tenant that
    // saw no agreements yet would render an empty sharing policy, a
    // connector whose namespace was not yet listed would be judged outside
    // any tenant and lose its children, and a tenant whose children were
    // not yet listed would try to create them all again. Changes meanwhile
    // wait in the subscribers' queues.
    let listed = tokio::select! {
        listed = async {
            let (caches, children, pods) = tokio::join!(ctx.caches.synced(), ctx.children.synced(), ctx.sync.pods_synced());
            (caches && children, pods)
        } => listed,
        _ = shutdown.clone() => return Ok(()),
    };
    if listed != (true, true) {
        tracing::info!("a watch ended before its first list; stopping");
        return Ok(());
    }
    tracing::info!("caches synced");
    health.set_ready(true);
    tokio::join!(
        drive(tenants, tenant::reconcile, ctx.clone(), shutdown.clone()),
        drive(connectors, connector::reconcile, ctx.clone(), shutdown.clone()),
        drive(agreements, agreement::reconcile, ctx.clone(), shutdown.clone()),
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// A stream of what arrives on `receiver`.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Runs a controller the way every controller here runs: bounded
/// concurrency, graceful shutdown, the shared error policy, the queue depth
/// kept, and results logged at debug (failures are already logged and
/// published by `on_error`).
pub async fn drive<K, F, Fut>(
    triggers: triggers::Triggers<K>,
    mut reconcile: F,
    ctx: std::sync::Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut(std::sync::Arc<K>, std::sync::Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action>> + Send + 'static,
{
    use futures::StreamExt;
    let triggers::Triggers { kind, controller, queue, .. } = triggers;
    let sweeper = {
        let queue = queue.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                queue.sweep();
            }
        }
    };
    let run = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(16))
        .graceful_shutdown_on(shutdown)
        .run(
            move |object, ctx| {
                queue.picked(&object);
                reconcile(object, ctx)
            },
            move |object, error, ctx| on_error(kind, &*object, error, ctx),
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(kind, %error, "reconcile did not complete");
            }
        });
    tokio::select! {
        _ = run => {}
        _ = sweeper => {}
    }
}

/// The error policy every controller uses: log, count by category, publish
/// a Warning Event with the error chain, and back off per object.
pub fn on_error<K>(
    kind: &'static str,
    object: &K,
    error: &Error,
    ctx: std::sync::Arc<Context>,
) -> kube::runtime::controller::Action
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::ResourceExt;
    let key = format!("{kind}/{}/{}", object.namespace().unwrap_or_default(), object.name_any());
    tracing::warn!(object = %key, category = error.category(), %error, "reconcile failed");
    ctx.metrics.failures.get_or_create(&metrics::ErrorLabels { kind, category: error.category() }).inc();
    let delay = ctx.next_backoff(&key);
    let reference = object.object_ref(&());
    let (reason, note) = (error.category().to_string(), error.to_string());
    tokio::spawn(async move { ctx.events.publish(&reference, true, &reason, "Reconcile", note).await });
    kube::runtime::controller::Action::requeue(delay)
}

/// The backoff key `on_error` uses, for `reset_backoff` after a success.
pub fn backoff_key<K: kube::Resource>(kind: &str, object: &K) -> String {
    use kube::ResourceExt;
    format!("{kind}/{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// Delay after the n-th consecutive failure (n >= 1).
fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.saturating_sub(1).min(9)).min(300))
}

/// Whether a tenant's Ready condition is True for its current generation.
pub fn tenant_ready(tenant: &crate::api::CareRecordTenant) -> bool {
    use crate::api::ConditionsExt;
    tenant.status.as_ref().is_some_and(|s| {
        s.observed_generation == tenant.metadata.generation
            && s.conditions.is_true(tenant_conditions::TenantCondition::Ready.as_str())
    })
}

/// What connectors and agreements read of a tenant besides its spec, as
/// a watch predicate: generation, phase, readiness and deletion. They are
/// woken when this changes, not on every status write (a tenant's
/// connector counts change twice per connector while it onboards).
pub fn tenant_standing(tenant: &crate::api::CareRecordTenant) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let phase = tenant.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (tenant.metadata.generation, phase, tenant_ready(tenant), tenant.metadata.deletion_timestamp.is_some())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Built-in profiles plus those in the settings' ConfigMap (key `profiles.yaml`).
async fn load_catalogue(
    client: &Client,
    source: &crate::settings::ConfigMapRef,
) -> Result<crate::catalogue::Catalogue, String> {
    let api = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &source.namespace);
    let cm = api.get(&source.name).await.map_err(|e| format!("ConfigMap {}/{}: {e}", source.namespace, source.name))?;
    let yaml = cm.data.unwrap_or_default().remove("profiles.yaml").unwrap_or_default();
    crate::catalogue::Catalogue::with_extra(&yaml)
        .map_err(|e| format!("ConfigMap {}/{}: {e}", source.namespace, source.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        let seq: Vec<_> = (1..=11).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
