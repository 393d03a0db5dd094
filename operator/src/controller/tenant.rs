//! The CareRecordTenant controller.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::apply::{Applier, Disposal, Key, Live};
use super::capabilities::Served;
use super::children::Owner;
use super::generated;
use super::metrics::PhaseLabel;
use super::readiness;
use super::status;
use super::steady;
use super::tenant_conditions::{Concluded, TenantCondition as C, TenantReason as R};
use super::triggers::Triggers;
use super::{Context, Error, Result, TENANT_FINALIZER};
use crate::api::agreement::{AgreementPhase, Role, SharingAgreement};
use crate::api::condition::{self, ConditionStatus, ConditionsExt, Observed};
use crate::api::connector::ProviderConnector;
use crate::api::tenant::{
    CareRecordTenant, CareRecordTenantStatus, ConnectorCounts, DatabaseMode, DatabaseStatus, DeletionPolicy,
    TenantPhase,
};
use crate::render::child::{Child, ChildKind, WritePolicy};
use crate::render::labels;
use crate::render::tenant::{
    ActiveAgreement, CNPG_CLUSTER, DATABASE_STATEFULSET, DatabaseConnection, DatabaseModeError, Facts, QUOTA,
    RECORD_GATEWAY, RECORD_STORE, claim, resolve_database_mode,
};
use crate::render::{tenant as render_tenant, validate};

/// Requeue of a Ready tenant: a safety net only, since watches drive changes.
const RESYNC_READY: Duration = Duration::from_secs(15 * 60);
/// Requeue while onboarding, in case a child's controller is silent.
const RESYNC_WAITING: Duration = Duration::from_secs(60);

/// The pace of status writes that only report connectors still becoming
/// ready (`pacing.rs` says why).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How soon to look again at a quota the quota controller has not counted.
const QUOTA_RECHECK: Duration = Duration::from_secs(5);
/// How long a quota may stay uncounted before it is created afresh.
const QUOTA_PATIENCE: Duration = Duration::from_secs(30);

/// kube-controller-manager counts a new ResourceQuota once; when it was
/// created before the quota controller had discovered a resource it caps
/// (the connectors' CRD, installed moments before), the count stays
/// missing until the controller's full resync (5 minutes by default) and
/// every connector is refused meanwhile. A quota created afresh is counted
/// at once: so an uncounted quota older than `QUOTA_PATIENCE` is deleted,
/// to be applied again by the next reconcile. Returns the age of an
/// uncounted quota, if there is one.
async fn nudge_uncounted_quota(ctx: &Context, live: &Live) -> Result<Option<Duration>> {
    let Some(quota) = live.value(ChildKind::ResourceQuota, QUOTA) else { return Ok(None) };
    if readiness::uncounted_quota(Some(&quota)).is_empty() {
        return Ok(None);
    }
    let created = quota
        .pointer("/metadata/creationTimestamp")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let age = created
        .map(|c| jiff::Timestamp::now().duration_since(c))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    if age > QUOTA_PATIENCE
        && let Some(namespace) = quota.pointer("/metadata/namespace").and_then(|n| n.as_str())
    {
        info!(namespace, "quota not counted after {}s: creating it afresh", age.as_secs());
        let api = Api::<ResourceQuota>::namespaced(ctx.client.clone(), namespace);
        match api.delete(QUOTA, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(age))
}

/// What wakes the tenant controller.
pub fn triggers(ctx: &Arc<Context>) -> Triggers<CareRecordTenant> {
    let client = ctx.client.clone();
    // Children are mapped to their tenant through ownerReferences rather
    // than with `owns()`: `owns()` gives a cluster-scoped owner the child's
    // namespace, so the same tenant would get a second queue key and two
    // concurrent reconciles.
    let triggers = Triggers::new("tenant", &ctx.caches.tenants, &ctx.metrics).owned(&ctx.children);
    let store = triggers.store();
    // Secrets matter to a tenant whether it owns them (generated
    // credentials) or not (an External database's, CloudNativePG's app
    // secret): any change in a tenant namespace wakes that tenant. Metadata
    // only: values never enter the operator's memory. Connectors and
    // agreements change the tenant's counts and sharing policy.
    let (secrets, connectors, agreements) =
        (in_tenant_namespace(store.clone()), in_tenant_namespace(store.clone()), in_tenant_namespace(store));
    triggers
        .related(Api::<PartialObjectMeta<Secret>>::all(client.clone()), move |s: PartialObjectMeta<Secret>| secrets(&s))
        .related_cached(&ctx.caches.connectors, move |c: &ProviderConnector| connectors(c))
        .related_cached(&ctx.caches.agreements, move |a: &SharingAgreement| agreements(a))
}

/// Keeps the tenants-by-phase gauge current from the controller's cache.
pub async fn count_phases(store: kube::runtime::reflector::Store<CareRecordTenant>, ctx: Arc<Context>) {
    let phases = [
        TenantPhase::Onboarding,
        TenantPhase::Ready,
        TenantPhase::Degraded,
        TenantPhase::Suspended,
        TenantPhase::Terminating,
    ];
    loop {
        let state = store.state();
        for phase in phases {
            let n = state.iter().filter(|t| t.status.as_ref().and_then(|s| s.phase) == Some(phase)).count();
            ctx.metrics.tenants.get_or_create(&PhaseLabel { phase: phase.as_str() }).set(n as i64);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The tenant whose namespace holds a changed object.
fn in_tenant_namespace<T: Resource>(
    tenants: kube::runtime::reflector::Store<CareRecordTenant>,
) -> impl Fn(&T) -> Option<ObjectRef<CareRecordTenant>> + Send + 'static {
    move |object: &T| {
        let ns = object.namespace()?;
        tenants.state().iter().find(|t| t.target_namespace() == ns).map(|t| ObjectRef::from_obj(&**t))
    }
}

#[instrument(skip(tenant, ctx), fields(tenant = %tenant.name_any()))]
pub async fn reconcile(tenant: Arc<CareRecordTenant>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("tenant");
    let api = Api::<CareRecordTenant>::all(ctx.client.clone());
    let tenant_ref = tenant.clone();
    let action = finalizer(&api, TENANT_FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(t) => apply_tenant(t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(t, &ctx).await,
        }
    })
    .await;
    use kube::runtime::finalizer::Error as FinalizerError;
    let action = match action {
        Ok(action) => action,
        // A reconcile queued before the tenant went away: already released.
        Err(FinalizerError::RemoveFinalizer(kube::Error::Api(e))) if e.code == 404 => Action::await_change(),
        // The cached tenant was older than the API server's (another wake-up
        // already added the finalizer, or the tenant is being deleted): the
        // patch's test refused it, and the watch brings the newer tenant.
        Err(e) if finalizer_read_stale(&e) => {
            tracing::debug!(error = %e, "finalizer patch refused: the cached tenant was stale");
            Action::requeue(STALE_RETRY)
        }
        Err(FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e)) => return Err(e),
        Err(other) => return Err(Error::Finalizer(other.to_string())),
    };
    ctx.reset_backoff(&super::backoff_key("tenant", &*tenant_ref));
    Ok(action)
}

/// When to look again at a tenant whose finalizer patch met a newer tenant,
/// should its watch event not come first.
const STALE_RETRY: Duration = Duration::from_secs(2);

/// Whether the finalizer patch failed only because the tenant it was built
/// from is no longer the API server's: its JSON patch `test` failed (422,
/// also returned when no finalizer may be added to a tenant being deleted)
/// or the write conflicted (409). Neither needs a person, so neither warns.
fn finalizer_read_stale(error: &kube::runtime::finalizer::Error<Error>) -> bool {
    use kube::runtime::finalizer::Error as FinalizerError;
    matches!(
        error,
        FinalizerError::AddFinalizer(kube::Error::Api(e)) | FinalizerError::RemoveFinalizer(kube::Error::Api(e))
            if e.code == 422 || e.code == 409
    )
}

/// What a reconcile concluded, before it becomes a status.
struct Conclusion {
    conditions: Vec<Concluded>,
    database: Option<DatabaseStatus>,
    connectors: Option<ConnectorCounts>,
    active_agreements: Option<i32>,
}

/// The status of a tenant that may not take its namespace: nothing was
/// written, and the condition names the owner.
fn namespace_conflict(conflict: &claim::NamespaceConflict) -> Conclusion {
    let message = conflict.to_string();
    Conclusion {
        conditions: vec![
            C::NamespaceReady.because(ConditionStatus::False, R::NamespaceConflict, message.clone()),
            C::Ready.because(ConditionStatus::False, R::NamespaceConflict, message),
        ],
        database: None,
        connectors: None,
        active_agreements: None,
    }
}

fn invalid(reason: R, message: String) -> Conclusion {
    Conclusion {
        conditions: vec![C::Ready.because(ConditionStatus::False, reason, message)],
        database: None,
        connectors: None,
        active_agreements: None,
    }
}

async fn apply_tenant(tenant: Arc<CareRecordTenant>, ctx: &Context) -> Result<Action> {
    // Rules the API server should already have enforced, checked again in
    // case the CRD installed is older than this operator.
    if let Err(problem) = validate::tenant(&tenant) {
        finish(&tenant, ctx, invalid(R::InvalidSpec, problem.to_string())).await?;
        return Ok(Action::await_change());
    }
    let served = ctx.capabilities.get().await?;
    let name = tenant.name_any();
    let namespace = tenant.target_namespace();

    // Before anything is written: is the namespace this tenant's to take?
    let existing = namespace_as_it_is(ctx, &name, &namespace).await?;
    if let Err(conflict) = claim::namespace(&tenant, existing.as_ref(), &ctx.settings) {
        finish(&tenant, ctx, namespace_conflict(&conflict)).await?;
        // The other tenant may go, or a platform engineer relabel the
        // namespace; neither wakes this tenant, so look again later.
        return Ok(Action::requeue(RESYNC_WAITING));
    }

    let recorded = tenant.status.as_ref().and_then(|s| s.database.as_ref()).map(|d| d.mode);
    let retained = claim::recorded_database_mode(existing.as_ref());
    let mode = match resolve_database_mode(tenant.spec.database.mode, recorded, retained, served.cloud_native_pg) {
        Ok(mode) => mode,
        Err(problem) => {
            let reason = match problem {
                DatabaseModeError::CloudNativePgNotInstalled => R::CloudNativePGNotInstalled,
                DatabaseModeError::RetainedDataInOtherMode { .. } => R::RetainedDataConflict,
            };
            let mut c = invalid(reason, problem.to_string());
            c.conditions.push(C::DatabaseReady.because(ConditionStatus::False, reason, problem.to_string()));
            finish(&tenant, ctx, c).await?;
            // Discovery is refreshed every minute; check again then.
            return Ok(Action::requeue(RESYNC_WAITING));
        }
    };
    // Everything this reconcile reads, from the shared stores.
    let applier = Applier::new(&ctx.client, &ctx.children, &ctx.metrics, "tenant");
    let mut live = applier.observe(&served.child_kinds(), &namespace, Owner::Tenant(&name)).await?;
    // Every tenant: who holds which hostname, and the consumers' ODS codes.
    let all_tenants = ctx.caches.all_tenants();
    let (connectors, (organisations, inbound_connectors)) = count_connectors(ctx, &namespace);
    let (active_agreements, active_count) = active_agreements(ctx, &namespace, &all_tenants);
    let hostname_held_by = claim::hostname_holder(&tenant, all_tenants.iter().map(|t| &**t));
    let facts = Facts {
        database_mode: mode,
        gateway_api: served.gateway_api,
        active_agreements,
        hostname_held_by,
        organisations,
        inbound_connectors,
    };
    let connection = render_tenant::DatabaseConnection::for_tenant(&tenant, &ctx.settings, &facts);
    // An External database's Secret is the user's to create; until it
    // exists the record store is held back rather than left crash-looping.
    let secret_missing = mode == DatabaseMode::External && !secret_exists(ctx, &namespace, &connection).await?;
    // Everything the render reads (the platform settings are the
    // process's own): with the children as the last in-place reconcile
    // found them, rendering again would find them in place again.
    let uid = tenant.uid().unwrap_or_default();
    let inputs = tenant.metadata.generation.map(|g| steady::inputs((&uid, &name, g, served, &facts, secret_missing)));
    // A reconcile that wrote nothing left `live` as it found it.
    let seen = steady::seen(&live);
    let held = match inputs.and_then(|i| ctx.steady.holds(&uid, i, seen)) {
        Some(held) => held,
        None => {
            let (held, quiet) = render_and_apply(&tenant, ctx, &applier, &facts, secret_missing, &mut live).await?;
            match inputs {
                Some(inputs) if quiet => ctx.steady.record(&uid, inputs, seen, held.clone()),
                _ => ctx.steady.forget(&uid),
            }
            held
        }
    };

    let quota_age = nudge_uncounted_quota(ctx, &live).await?;
    let mut conclusion = conclude(Observation {
        tenant: &tenant,
        live: &live,
        facts: &facts,
        served,
        ingress_fallback: ctx.settings.ingress.enabled,
        held: &held,
        connection: &connection,
    });
    conclusion.connectors = Some(connectors);
    conclusion.active_agreements = Some(active_count);
    let ready = conclusion.conditions.iter().all(Concluded::is_true);
    let deferred = finish(&tenant, ctx, conclusion).await?;
    let mut after = if ready || tenant.spec.suspend { RESYNC_READY } else { RESYNC_WAITING };
    if quota_age.is_some() {
        // The quota controller does not say when it has counted: look again soon.
        after = QUOTA_RECHECK;
    }
    Ok(Action::requeue(deferred.map_or(after, |wait| wait.min(after))))
}

/// Renders the tenant's children and applies and prunes them. Returns what
/// is held back, and whether nothing was written or pruned.
async fn render_and_apply(
    tenant: &CareRecordTenant,
    ctx: &Context,
    applier: &Applier<'_>,
    facts: &Facts,
    secret_missing: bool,
    live: &mut Live,
) -> Result<(HeldBack, bool)> {
    let mut children = render_tenant::render(tenant, &ctx.settings, facts).into_children()?;
    let held = if secret_missing { HeldBack::ExternalSecretMissing } else { HeldBack::Nothing };
    // Generated secrets are created with their database. Once the database
    // exists, a missing one is never generated again: a new password would
    // not be the one Postgres knows, and the old one would be lost.
    let database_exists = live.value(ChildKind::StatefulSet, DATABASE_STATEFULSET).is_some();
    let missing: Vec<String> = children
        .iter()
        .filter(|c| c.write == WritePolicy::CreateOnce && c.retain() && live.get(&Key::of(c)).is_none())
        .map(|c| c.name().to_string())
        .collect();
    let held = if database_exists && !missing.is_empty() { HeldBack::CredentialsMissing(missing) } else { held };
    if let HeldBack::CredentialsMissing(lost) = &held {
        children.retain(|c| !lost.iter().any(|name| c.write == WritePolicy::CreateOnce && c.name() == name));
    }
    for child in children.iter_mut() {
        if child.write == WritePolicy::CreateOnce && live.get(&Key::of(child)).is_none() {
            generated::fill(child)?;
        }
    }
    let desired: BTreeSet<Key> = children.iter().map(Key::of).collect();
    let applied: Vec<&Child> = children.iter().filter(|c| !(held.holds_back() && needs_database(c))).collect();
    let writes = applier.apply_all(applied, live).await?;
    let policy = tenant.spec.database.deletion_policy;
    let disposals = applier.prune(live, &desired, &tenant.uid().unwrap_or_default(), policy).await?;
    for disposal in &disposals {
        report_disposal(tenant, ctx, disposal).await;
    }
    if writes > 0 {
        info!(writes, "applied children");
    }
    Ok((held, writes == 0 && disposals.is_empty()))
}

/// Agreements in the tenant namespace that are Active: those where this
/// tenant provides records (for the sharing policy) and the count of all.
fn active_agreements(ctx: &Context, namespace: &str, tenants: &[Arc<CareRecordTenant>]) -> (Vec<ActiveAgreement>, i32) {
    let list = ctx.caches.agreements_in(namespace);
    let active: Vec<&SharingAgreement> = list
        .iter()
        .map(|a| &**a)
        .filter(|a| a.status.as_ref().and_then(|s| s.phase) == Some(AgreementPhase::Active))
        .collect();
    let provided = active
        .iter()
        .filter(|a| a.spec.role == Role::Provider)
        .map(|a| {
            let status = a.status.clone().unwrap_or_default();
            // Both sides' exclusions (the provider's, at least, before the
            // status says).
            let excluded = status.excluded_categories.iter().chain(&a.spec.excluded_categories).copied();
            ActiveAgreement::new(
                a,
                status.shared_resources.clone(),
                excluded,
                status.effective_until.map(|t| t.0),
                tenants,
            )
        })
        .collect();
    (provided, active.len() as i32)
}

/// Connector counts, and the ODS codes of the providers they connect (who
/// act for the tenant on its own `/fhir`).
/// The tenant's connectors: how many are ready, the providers' ODS codes,
/// and the push connectors its record gateway forwards to.
fn count_connectors(
    ctx: &Context,
    namespace: &str,
) -> (ConnectorCounts, (Vec<String>, Vec<carerecord_config::InboundConnector>)) {
    let items = ctx.caches.connectors_in(namespace);
    let ready =
        items.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.conditions.is_true(C::Ready.as_str()))).count();
    let mut providers: Vec<String> = items.iter().map(|c| c.spec.provider.ods_code.clone()).collect();
    providers.sort();
    providers.dedup();
    let inbound = items
        .iter()
        .filter_map(|c| {
            let profile = ctx.catalogue.get(&c.spec.system)?;
            crate::render::connector::inbound(c, profile, namespace)
        })
        .collect();
    (ConnectorCounts { ready: ready as i32, total: items.len() as i32 }, (providers, inbound))
}

/// Why the workloads that need the database are held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeldBack {
    Nothing,
    /// An External database's Secret does not exist yet.
    ExternalSecretMissing,
    /// Generated Secrets of an existing database are gone.
    CredentialsMissing(Vec<String>),
}

impl HeldBack {
    fn holds_back(&self) -> bool {
        *self != Self::Nothing
    }
}

/// Children that cannot work without the database credentials.
fn needs_database(child: &Child) -> bool {
    matches!(child.kind, ChildKind::Deployment | ChildKind::HttpRoute | ChildKind::Ingress)
}

/// The tenant's namespace as it is, if it exists. A namespace labelled for
/// this tenant is read from the shared store; any other answer (absent,
/// unlabelled, held by another tenant) is confirmed with the API server
/// before it decides anything, as the store holds only labelled namespaces.
async fn namespace_as_it_is(
    ctx: &Context,
    tenant: &str,
    namespace: &str,
) -> Result<Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>> {
    let cached = ctx.caches.namespaces.store().get(&ObjectRef::new(namespace));
    if let Some(cached) = cached.filter(|n| n.labels().get(labels::TENANT).is_some_and(|t| t == tenant)) {
        return Ok(Some(cached.metadata.clone()));
    }
    ctx.metrics.child_read("tenant", "get");
    Ok(Api::<Namespace>::all(ctx.client.clone()).get_metadata_opt(namespace).await?.map(|n| n.metadata))
}

async fn secret_exists(ctx: &Context, namespace: &str, connection: &DatabaseConnection) -> Result<bool> {
    ctx.metrics.child_read("tenant", "get");
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_metadata_opt(&connection.secret_name).await?.is_some())
}

/// What a tenant reconcile found, for `conclude`.
#[derive(Clone, Copy)]
struct Observation<'a> {
    tenant: &'a CareRecordTenant,
    /// The children as they are after this reconcile's writes.
    live: &'a Live,
    facts: &'a Facts,
    served: Served,
    /// Whether the platform allows the Ingress fallback.
    ingress_fallback: bool,
    held: &'a HeldBack,
    connection: &'a DatabaseConnection,
}

/// The conditions of a tenant from what its reconcile observed. Pure.
fn conclude(observed: Observation<'_>) -> Conclusion {
    let Observation { tenant, live, facts, served, ingress_fallback, held, connection } = observed;
    let secret_missing = held.holds_back();
    let mode = facts.database_mode;
    let namespace = tenant.target_namespace();
    let ns_active = live
        .value(ChildKind::Namespace, &namespace)
        .is_some_and(|n| n.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Active"));
    let uncounted = readiness::uncounted_quota(live.value(ChildKind::ResourceQuota, QUOTA).as_ref());
    let ns = if !ns_active {
        C::NamespaceReady.because(ConditionStatus::False, R::Pending, format!("namespace {namespace}"))
    } else if !uncounted.is_empty() {
        C::NamespaceReady.because(
            ConditionStatus::False,
            R::QuotaNotCounted,
            format!(
                "namespace {namespace}: the quota controller has not yet counted {}; until it has, the API server refuses them",
                uncounted.join(", ")
            ),
        )
    } else {
        C::NamespaceReady.because(ConditionStatus::True, R::Active, format!("namespace {namespace}"))
    };
    let database = if let HeldBack::CredentialsMissing(lost) = held {
        C::DatabaseReady.because(
            ConditionStatus::False,
            R::CredentialsMissing,
            format!(
                "the database exists but Secret(s) {} in {namespace} are gone; the operator never generates them again (Postgres would not know a new password, and the old one would be lost). Restore them from backup, or delete the database to start afresh",
                lost.join(", ")
            ),
        )
    } else {
        match mode {
            DatabaseMode::StatefulSet => C::DatabaseReady
                .from_verdict(readiness::statefulset(live.value(ChildKind::StatefulSet, DATABASE_STATEFULSET).as_ref())),
            DatabaseMode::CloudNativePG => C::DatabaseReady
                .from_verdict(readiness::cnpg_cluster(live.value(ChildKind::PostgresCluster, CNPG_CLUSTER).as_ref())),
            DatabaseMode::External if secret_missing => C::DatabaseReady.because(
                ConditionStatus::False,
                R::ExternalSecretMissing,
                format!(
                    "Secret {}/{} named by database.external.secretName does not exist; create it with keys {}, {} and {}",
                    namespace,
                    connection.secret_name,
                    connection.jdbc_url_key,
                    connection.username_key,
                    connection.password_key
                ),
            ),
            DatabaseMode::External => C::DatabaseReady.because(
                ConditionStatus::True,
                R::ExternalSecretFound,
                format!("using the external database described by Secret {}", connection.secret_name),
            ),
        }
    };
    let suspended = |c: C| c.because(ConditionStatus::True, R::Suspended, "spec.suspend is true");
    let waiting_for_database =
        |c: C| c.because(ConditionStatus::False, R::WaitingForDatabase, "held back until the database Secret exists");
    let record_store = if tenant.spec.suspend {
        suspended(C::RecordStoreReady)
    } else if secret_missing {
        waiting_for_database(C::RecordStoreReady)
    } else {
        C::RecordStoreReady
            .from_verdict(readiness::deployment(live.value(ChildKind::Deployment, RECORD_STORE).as_ref()))
    };
    let gateway = if tenant.spec.suspend {
        suspended(C::GatewayReady)
    } else if let Some(holder) = &facts.hostname_held_by {
        C::GatewayReady.because(
            ConditionStatus::False,
            R::HostnameConflict,
            format!(
                "gateway.hostname {} is held by tenant {holder}, created first; no route was made. Choose another hostname",
                tenant.spec.gateway.hostname
            ),
        )
    } else if secret_missing {
        waiting_for_database(C::GatewayReady)
    } else if render_tenant::needs_tls(tenant, served.gateway_api, ingress_fallback) {
        C::GatewayReady.because(
            ConditionStatus::False,
            R::TLSRequired,
            "the Gateway API is not served and the Ingress fallback needs gateway.tlsSecretName: records are never served over plain HTTP",
        )
    } else if served.gateway_api {
        C::GatewayReady.from_verdict(readiness::http_route(live.value(ChildKind::HttpRoute, RECORD_STORE).as_ref()))
    } else if ingress_fallback {
        C::GatewayReady.from_verdict(readiness::ingress(live.value(ChildKind::Ingress, RECORD_STORE).as_ref()))
    } else {
        C::GatewayReady.because(
            ConditionStatus::False,
            R::NoRouteAvailable,
            "the Gateway API is not served and the Ingress fallback is disabled",
        )
    };
    // Ready means reachable: the route taken by the platform Gateway, and
    // the record gateway behind it serving.
    let gateway = if gateway.is_true() && !tenant.spec.suspend {
        let serving = readiness::deployment(live.value(ChildKind::Deployment, RECORD_GATEWAY).as_ref());
        if serving.ready {
            gateway
        } else {
            C::GatewayReady.because(
                ConditionStatus::False,
                R::RecordGatewayNotAvailable,
                format!("record gateway: {}", serving.message),
            )
        }
    } else {
        gateway
    };
    let mut conditions = vec![ns, database, record_store, gateway];
    let failing: Vec<String> = conditions
        .iter()
        .filter(|c| !c.is_true())
        .map(|c| format!("{}: {}", c.observed.type_, c.observed.message))
        .collect();
    conditions.push(if failing.is_empty() {
        C::Ready.because(
            ConditionStatus::True,
            if tenant.spec.suspend { R::Suspended } else { R::Ready },
            format!("serving {}", tenant.endpoint()),
        )
    } else {
        C::Ready.because(ConditionStatus::False, R::Onboarding, failing.join("; "))
    });
    Conclusion {
        conditions,
        database: Some(DatabaseStatus { mode, secret_name: connection.secret_name.clone() }),
        connectors: None,
        active_agreements: None,
    }
}

/// Turns a conclusion into a status, writes it if it changed and publishes
/// Events for transitions. A change that only reports connectors still
/// becoming ready waits for the pace (`pacing.rs`): then it returns how
/// long, for the reconcile to look again.
async fn finish(tenant: &CareRecordTenant, ctx: &Context, conclusion: Conclusion) -> Result<Option<Duration>> {
    let previous = tenant.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let ready = conclusion.conditions.iter().any(|c| c.observed.type_ == C::Ready.as_str() && c.is_true());
    let blocked = conclusion.conditions.iter().any(|c| c.blocks);
    let phase = if tenant.spec.suspend {
        TenantPhase::Suspended
    } else if ready {
        TenantPhase::Ready
    } else if previous.onboarded_at.is_some() && !blocked {
        TenantPhase::Degraded
    } else {
        TenantPhase::Onboarding
    };
    let observed: Vec<Observed> = conclusion.conditions.iter().map(|c| c.observed.clone()).collect();
    // The condition types whose reason now calls for a person.
    let warnings: Vec<&'static str> =
        conclusion.conditions.iter().filter(|c| c.warns).map(|c| c.observed.type_).collect();
    let conditions = condition::merge(&previous.conditions, &observed, tenant.metadata.generation, &now);
    let status = CareRecordTenantStatus {
        observed_generation: tenant.metadata.generation,
        phase: Some(phase),
        conditions,
        namespace: Some(tenant.target_namespace()),
        endpoint: Some(tenant.endpoint()),
        database: conclusion.database.or(previous.database.clone()),
        connectors: conclusion.connectors.or(previous.connectors),
        active_agreements: conclusion.active_agreements.or(previous.active_agreements),
        onboarded_at: previous.onboarded_at.clone().or_else(|| (phase == TenantPhase::Ready).then(|| now.clone())),
    };
    let uid = tenant.uid().unwrap_or_default();
    let at = std::time::Instant::now();
    if let Some(current) = tenant.status.as_ref()
        && progress_only(current, &status)
        && let Some(wait) = ctx.progress.wait(&uid, at)
    {
        return Ok(Some(wait));
    }
    let api = Api::<CareRecordTenant>::all(ctx.client.clone());
    let written = status::write_if_changed(&api, tenant, tenant.status.as_ref(), &status, same_status).await?;
    if written {
        ctx.progress.wrote(&uid, at);
        publish_transitions(tenant, ctx, &previous, &status, &warnings).await;
    }
    Ok(None)
}

/// Whether `new` differs from `current` only in counts of connectors that
/// have not all become ready: progress, which may wait for the pace. Counts
/// that have settled (every connector ready) are news and never wait.
fn progress_only(current: &CareRecordTenantStatus, new: &CareRecordTenantStatus) -> bool {
    let settled = new.connectors.is_none_or(|c| c.ready == c.total);
    !settled
        && current.connectors != new.connectors
        && same_status(current, &CareRecordTenantStatus { connectors: current.connectors, ..new.clone() })
}

fn same_status(a: &CareRecordTenantStatus, b: &CareRecordTenantStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.phase == b.phase
        && condition::same(&a.conditions, &b.conditions)
        && a.namespace == b.namespace
        && a.endpoint == b.endpoint
        && a.database == b.database
        && a.connectors == b.connectors
        && a.active_agreements == b.active_agreements
        && a.onboarded_at == b.onboarded_at
}

async fn publish_transitions(
    tenant: &CareRecordTenant,
    ctx: &Context,
    before: &CareRecordTenantStatus,
    after: &CareRecordTenantStatus,
    warnings: &[&'static str],
) {
    let reference = tenant.object_ref(&());
    if before.phase != after.phase
        && let Some(phase) = after.phase
    {
        let note = match phase {
            TenantPhase::Ready => format!("tenant is Ready and serving {}", tenant.endpoint()),
            TenantPhase::Onboarding => format!("onboarding into namespace {}", tenant.target_namespace()),
            TenantPhase::Degraded => {
                after.conditions.condition(C::Ready.as_str()).map(|c| c.message.clone()).unwrap_or_default()
            }
            TenantPhase::Suspended => "record store scaled to zero and route removed; data kept".into(),
            TenantPhase::Terminating => "tenant is being deleted".into(),
        };
        ctx.events.publish(&reference, phase == TenantPhase::Degraded, phase.as_str(), "Reconcile", note).await;
    }
    for c in &after.conditions {
        let was = before.conditions.iter().find(|p| p.type_ == c.type_);
        let changed = was.is_none_or(|p| p.status != c.status || p.reason != c.reason);
        if changed && c.status == ConditionStatus::False.as_str() && warnings.contains(&c.type_.as_str()) {
            ctx.events.publish(&reference, true, &c.reason, "Validate", c.message.clone()).await;
        }
    }
}

async fn report_disposal(tenant: &CareRecordTenant, ctx: &Context, disposal: &Disposal) {
    let reference = tenant.object_ref(&());
    match disposal {
        Disposal::Deleted(key) => {
            info!(child = %key, "pruned child");
            ctx.events.publish(&reference, false, "Pruned", "Prune", format!("deleted {key}, no longer desired")).await;
        }
        Disposal::Orphaned(key) => {
            info!(child = %key, "kept data-bearing child");
            ctx.events
                .publish(
                    &reference,
                    false,
                    "Retained",
                    "Prune",
                    format!("kept {key}: it holds patient data; it is no longer managed"),
                )
                .await;
        }
    }
}

async fn cleanup(tenant: Arc<CareRecordTenant>, ctx: &Context) -> Result<Action> {
    ctx.steady.forget(&tenant.uid().unwrap_or_default());
    let name = tenant.name_any();
    let namespace = tenant.target_namespace();
    let served = ctx.capabilities.get().await?;
    // Listed, not read from the store: nothing may be left behind because
    // its watch event had not arrived yet.
    let applier = Applier::new(&ctx.client, &ctx.children, &ctx.metrics, "tenant");
    let live = applier.list(&served.child_kinds(), &namespace, Owner::Tenant(&name)).await?;
    let policy = tenant.spec.database.deletion_policy;
    let disposals = applier.release(&live, &tenant.uid().unwrap_or_default(), policy).await?;
    let kept: Vec<String> = disposals
        .iter()
        .filter_map(|d| match d {
            Disposal::Orphaned(k) => Some(k.to_string()),
            Disposal::Deleted(_) => None,
        })
        .collect();
    let reference = tenant.object_ref(&());
    let note = match policy {
        DeletionPolicy::Retain => format!(
            "deletionPolicy Retain: data flow stopped; kept namespace {namespace} with its database, volumes and secrets ({} objects), labelled {}=true. Delete the namespace to erase the data.",
            kept.len(),
            labels::RETAINED
        ),
        DeletionPolicy::Delete => format!("deletionPolicy Delete: deleted namespace {namespace} and all tenant data"),
    };
    info!(tenant = %name, ?policy, kept = kept.len(), "released tenant");
    ctx.events
        .publish(
            &reference,
            false,
            if policy == DeletionPolicy::Retain { "DataRetained" } else { "DataDeleted" },
            "Delete",
            note,
        )
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;
    use serde_json::{Value, json};

    use super::*;
    use crate::render::tenant::fixtures::{CHESHIRE, tenant};
    use crate::settings::PlatformSettings;

    const NS: &str = "scr-cheshire-merseyside";

    fn child(kind: ChildKind, name: &str, body: Value) -> (Key, DynamicObject) {
        let mut object: DynamicObject = serde_json::from_value(body).expect("a fixture object");
        object.metadata.name = Some(name.into());
        let namespace = kind.namespaced().then(|| NS.to_string());
        object.metadata.namespace = namespace.clone();
        (Key { kind, namespace, name: name.into() }, object)
    }

    fn available(generation: i64) -> Value {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": 2},
               "status": {"observedGeneration": generation, "availableReplicas": 2, "updatedReplicas": 2}})
    }

    /// Every child of a served tenant, as the cluster reports them once ready.
    fn ready_world() -> Live {
        let mut live = Live::default();
        for (key, object) in [
            child(ChildKind::Namespace, NS, json!({"status": {"phase": "Active"}})),
            child(
                ChildKind::ResourceQuota,
                QUOTA,
                json!({"spec": {"hard": {"pods": "50"}}, "status": {"hard": {"pods": "50"}, "used": {"pods": "4"}}}),
            ),
            child(
                ChildKind::StatefulSet,
                DATABASE_STATEFULSET,
                json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
                       "status": {"observedGeneration": 1, "readyReplicas": 1}}),
            ),
            child(ChildKind::Deployment, RECORD_STORE, available(1)),
            child(ChildKind::Deployment, RECORD_GATEWAY, available(1)),
            child(
                ChildKind::HttpRoute,
                RECORD_STORE,
                json!({"status": {"parents": [{"conditions": [
                    {"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "True"}
                ]}]}}),
            ),
        ] {
            live.insert(key, object);
        }
        live
    }

    fn facts() -> Facts {
        crate::render::tenant::fixtures::facts(DatabaseMode::StatefulSet)
    }

    const SERVED: Served = Served { gateway_api: true, cloud_native_pg: false };

    /// `conclude` over a world, for the Cheshire fixture tenant.
    fn concluded(t: &CareRecordTenant, live: &Live, facts: &Facts) -> Vec<Concluded> {
        let connection = DatabaseConnection::for_tenant(t, &PlatformSettings::default(), facts);
        conclude(Observation {
            tenant: t,
            live,
            facts,
            served: SERVED,
            ingress_fallback: false,
            held: &HeldBack::Nothing,
            connection: &connection,
        })
        .conditions
    }

    fn find(conditions: &[Concluded], c: C) -> &Concluded {
        conditions.iter().find(|o| o.observed.type_ == c.as_str()).expect("the condition is concluded")
    }

    #[test]
    fn a_tenant_whose_children_are_all_ready_is_ready() {
        let conditions = concluded(&tenant(CHESHIRE), &ready_world(), &facts());
        assert!(conditions.iter().all(Concluded::is_true), "{conditions:#?}");
        assert_eq!(find(&conditions, C::Ready).observed.reason, R::Ready.as_str());
    }

    #[test]
    fn what_the_child_store_keeps_of_a_ready_world_is_still_ready() {
        let conditions = concluded(&tenant(CHESHIRE), &ready_world().as_kept(), &facts());
        assert!(conditions.iter().all(Concluded::is_true), "{conditions:#?}");
    }

    #[test]
    fn a_route_the_platform_gateway_refused_warns_and_keeps_the_tenant_from_ready() {
        let mut live = ready_world();
        let (key, route) = child(
            ChildKind::HttpRoute,
            RECORD_STORE,
            json!({"status": {"parents": [{"conditions": [
                {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "hostname"}
            ]}]}}),
        );
        live.insert(key, route);
        let conditions = concluded(&tenant(CHESHIRE), &live, &facts());
        let gateway = find(&conditions, C::GatewayReady);
        assert!(!gateway.is_true() && gateway.warns && !gateway.blocks);
        assert!(!find(&conditions, C::Ready).is_true());
    }

    #[test]
    fn a_hostname_held_by_another_tenant_warns_on_the_gateway_condition() {
        let facts = Facts { hostname_held_by: Some("older-ics".into()), ..facts() };
        let conditions = concluded(&tenant(CHESHIRE), &ready_world(), &facts);
        let gateway = find(&conditions, C::GatewayReady);
        assert_eq!(gateway.observed.reason, R::HostnameConflict.as_str());
        assert!(gateway.warns && gateway.observed.message.contains("older-ics"));
    }

    #[test]
    fn a_quota_not_yet_counted_keeps_the_namespace_not_ready_without_a_warning() {
        let mut live = ready_world();
        let (key, quota) = child(ChildKind::ResourceQuota, QUOTA, json!({"spec": {"hard": {"pods": "50"}}}));
        live.insert(key, quota);
        let conditions = concluded(&tenant(CHESHIRE), &live, &facts());
        let namespace = find(&conditions, C::NamespaceReady);
        assert_eq!(namespace.observed.reason, R::QuotaNotCounted.as_str());
        assert!(!namespace.warns);
    }

    #[test]
    fn a_record_gateway_not_serving_keeps_an_accepted_route_from_gateway_ready() {
        let mut live = ready_world();
        let (key, deployment) = child(ChildKind::Deployment, RECORD_GATEWAY, json!({"spec": {"replicas": 2}}));
        live.insert(key, deployment);
        let conditions = concluded(&tenant(CHESHIRE), &live, &facts());
        assert_eq!(find(&conditions, C::GatewayReady).observed.reason, R::RecordGatewayNotAvailable.as_str());
    }

    #[test]
    fn the_ready_message_names_every_condition_that_is_not_true() {
        let mut live = ready_world();
        let (key, namespace) = child(ChildKind::Namespace, NS, json!({"status": {"phase": "Terminating"}}));
        live.insert(key, namespace);
        let (key, deployment) = child(ChildKind::Deployment, RECORD_STORE, json!({"spec": {"replicas": 1}}));
        live.insert(key, deployment);
        let conditions = concluded(&tenant(CHESHIRE), &live, &facts());
        let ready = find(&conditions, C::Ready);
        assert_eq!(ready.observed.reason, R::Onboarding.as_str());
        assert!(
            ready.observed.message.contains("NamespaceReady") && ready.observed.message.contains("RecordStoreReady")
        );
        assert!(!ready.observed.message.contains("DatabaseReady"));
    }

    #[test]
    fn a_suspended_tenant_is_ready_as_suspended() {
        let mut t = tenant(CHESHIRE);
        t.spec.suspend = true;
        let conditions = concluded(&t, &ready_world(), &facts());
        let ready = find(&conditions, C::Ready);
        assert!(ready.is_true());
        assert_eq!(ready.observed.reason, R::Suspended.as_str());
    }

    fn onboarding_with(ready: i32, total: i32) -> CareRecordTenantStatus {
        CareRecordTenantStatus {
            observed_generation: Some(1),
            phase: Some(TenantPhase::Onboarding),
            connectors: Some(ConnectorCounts { ready, total }),
            ..Default::default()
        }
    }

    #[test]
    fn a_count_of_connectors_still_becoming_ready_is_progress() {
        assert!(progress_only(&onboarding_with(1, 20), &onboarding_with(2, 20)));
    }

    #[test]
    fn counts_that_have_settled_are_not_progress() {
        assert!(!progress_only(&onboarding_with(19, 20), &onboarding_with(20, 20)));
    }

    #[test]
    fn a_change_beyond_the_counts_is_not_progress() {
        let mut ready = onboarding_with(2, 20);
        ready.phase = Some(TenantPhase::Ready);
        assert!(!progress_only(&onboarding_with(1, 20), &ready));
    }

    #[test]
    fn an_unchanged_status_is_not_progress() {
        assert!(!progress_only(&onboarding_with(1, 20), &onboarding_with(1, 20)));
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("refused", "Invalid").with_code(code)))
    }

    #[test]
    fn a_finalizer_patch_whose_test_failed_is_a_stale_read_not_a_failure() {
        use kube::runtime::finalizer::Error as FinalizerError;
        assert!(finalizer_read_stale(&FinalizerError::AddFinalizer(api_error(422))));
        assert!(finalizer_read_stale(&FinalizerError::RemoveFinalizer(api_error(422))));
        assert!(finalizer_read_stale(&FinalizerError::AddFinalizer(api_error(409))));
    }

    #[test]
    fn a_finalizer_patch_the_operator_may_not_make_is_a_failure() {
        use kube::runtime::finalizer::Error as FinalizerError;
        assert!(!finalizer_read_stale(&FinalizerError::AddFinalizer(api_error(403))));
        assert!(!finalizer_read_stale(&FinalizerError::<Error>::UnnamedObject));
    }
}
