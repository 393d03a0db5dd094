//! The ProviderConnector controller.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::apply::{Applier, Key};
use super::children::Owner;
use super::metrics::ProbeLabel;
use super::readiness;
use super::status;
use super::triggers::Triggers;
use super::{Context, Result};
use crate::api::condition::{self, ConditionStatus, Observed};
use crate::api::connector::{ConnectorState, EndpointStatus, ProviderConnector, ProviderConnectorStatus};
use crate::probe::Credentials;
use crate::render::child::ChildKind;
use crate::render::connector as render_connector;

/// A probe that finds the same answer refreshes `lastChecked` at most this
/// often, so a healthy, steady connector causes no status writes.
const STATUS_REFRESH: Duration = Duration::from_secs(3600);

/// What wakes the connector controller.
pub fn triggers(ctx: &Arc<Context>) -> Triggers<ProviderConnector> {
    let triggers = Triggers::new("connector", &ctx.caches.connectors, &ctx.metrics).owned(&ctx.children);
    let (by_tenant, by_namespace) = (ctx.caches.clone(), ctx.caches.clone());
    // A tenant appearing, changing host or quota, taking its namespace or
    // going away changes its connectors; its connector counts do not. A
    // namespace labelled for a tenant (or no longer) decides whether its
    // connectors belong to one.
    triggers
        .related_cached_when(&ctx.caches.tenants, super::tenant_standing, move |tenant| {
            refs(by_tenant.connectors_in(&tenant.target_namespace()))
        })
        .related_cached(&ctx.caches.namespaces, move |namespace| {
            refs(by_namespace.connectors_in(&namespace.name_any()))
        })
}

fn refs(connectors: Vec<Arc<ProviderConnector>>) -> Vec<ObjectRef<ProviderConnector>> {
    connectors.iter().map(|c| ObjectRef::from_obj(&**c)).collect()
}

/// The conditions a connector's status carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectorCondition {
    Configured,
    Deployed,
    EndpointReachable,
    Synced,
    Ready,
}

impl ConnectorCondition {
    pub const ALL: [Self; 5] = [Self::Configured, Self::Deployed, Self::EndpointReachable, Self::Synced, Self::Ready];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "Configured",
            Self::Deployed => "Deployed",
            Self::EndpointReachable => "EndpointReachable",
            Self::Synced => super::sync::SYNCED,
            Self::Ready => "Ready",
        }
    }

    /// Whether turning False deserves a Warning Event: what a person must
    /// fix (the spec, the provider's endpoint, the feed). Ready and
    /// Deployed follow from those, or from the cluster catching up.
    fn warns(self) -> bool {
        matches!(self, Self::Configured | Self::EndpointReachable | Self::Synced)
    }
}

/// Why a connector gets no children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotConfiguredReason {
    InvalidSpec,
    NotInTenantNamespace,
    UnknownSystem,
    ImageNotAllowed,
    InvalidConfiguration,
    QuotaExceeded,
}

impl NotConfiguredReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::NotInTenantNamespace => "NotInTenantNamespace",
            Self::UnknownSystem => "UnknownSystem",
            Self::ImageNotAllowed => "ImageNotAllowed",
            Self::InvalidConfiguration => "InvalidConfiguration",
            Self::QuotaExceeded => "QuotaExceeded",
        }
    }
}

/// Why a connector gets no children, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NotConfigured {
    reason: NotConfiguredReason,
    message: String,
}

/// Connectors beyond the tenant's quota, oldest first keep their place.
fn over_quota(connector: &ProviderConnector, all: &[Arc<ProviderConnector>], max: i32) -> bool {
    let mut order: Vec<_> = all.iter().map(|c| (c.creation_timestamp().map(|t| t.0), c.name_any())).collect();
    order.sort();
    let me = (connector.creation_timestamp().map(|t| t.0), connector.name_any());
    order.iter().position(|o| *o == me).is_some_and(|i| i as i32 >= max)
}

#[instrument(skip(connector, ctx), fields(connector = %connector.name_any(), namespace = connector.namespace().unwrap_or_default()))]
pub async fn reconcile(connector: Arc<ProviderConnector>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("connector");
    let namespace = connector.namespace().unwrap_or_default();
    let name = connector.name_any();
    let key = format!("connector/{namespace}/{name}");
    let served = ctx.capabilities.get().await?;
    let tenant = ctx.caches.tenant_of(&namespace);
    let profile = ctx.catalogue.get(&connector.spec.system).cloned();
    // The contract the connector would read, checked once.
    let invalid_contract = match (&tenant, &profile) {
        (Some(tenant), Some(profile)) => {
            crate::render::connector::connector_config(&connector, profile, tenant).validate().err()
        }
        _ => None,
    };
    let problem = match (crate::render::validate::connector(&connector), &tenant, &profile) {
        (Err(invalid), _, _) => {
            Some(NotConfigured { reason: NotConfiguredReason::InvalidSpec, message: invalid.to_string() })
        }
        (Ok(()), None, _) => Some(NotConfigured {
            reason: NotConfiguredReason::NotInTenantNamespace,
            message: format!(
                "namespace {namespace} does not belong to a CareRecordTenant; create connectors in a tenant's namespace"
            ),
        }),
        (Ok(()), Some(_), None) => Some(NotConfigured {
            reason: NotConfiguredReason::UnknownSystem,
            message: format!(
                "system {} is not in the connector catalogue (known: {}){}",
                connector.spec.system,
                ctx.catalogue.names().join(", "),
                ctx.catalogue_error
                    .as_deref()
                    .map(|e| format!("; the extra catalogue failed to load: {e}"))
                    .unwrap_or_default()
            ),
        }),
        (Ok(()), Some(_), Some(_))
            if connector.spec.image.as_deref().is_some_and(|i| !ctx.settings.connector_images.allows(i)) =>
        {
            Some(NotConfigured {
                reason: NotConfiguredReason::ImageNotAllowed,
                message: format!(
                    "image {} is not from a registry the platform allows for connectors ({}); remove spec.image to run the profile's image",
                    connector.spec.image.as_deref().unwrap_or_default(),
                    ctx.settings.connector_images.allowed_registries.join(", ")
                ),
            })
        }
        (Ok(()), Some(_), Some(_)) if invalid_contract.is_some() => Some(NotConfigured {
            reason: NotConfiguredReason::InvalidConfiguration,
            message: format!(
                "the connector's configuration would be invalid ({}); check spec.endpoint",
                invalid_contract.as_ref().map(ToString::to_string).unwrap_or_default()
            ),
        }),
        (Ok(()), Some(tenant), Some(_)) => {
            let max = tenant.spec.quota.as_ref().and_then(|q| q.max_connectors).unwrap_or(50);
            let all = ctx.caches.connectors_in(&namespace);
            over_quota(&connector, &all, max).then(|| NotConfigured {
                reason: NotConfiguredReason::QuotaExceeded,
                message: format!(
                    "tenant {} allows {max} connectors (quota.maxConnectors) and this one is beyond it",
                    tenant.name_any()
                ),
            })
        }
    };

    let mut kinds = vec![
        ChildKind::ConfigMap,
        ChildKind::NetworkPolicy,
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::PodDisruptionBudget,
    ];
    if served.gateway_api {
        kinds.push(ChildKind::HttpRoute);
    }
    let applier = Applier::new(&ctx.client, &ctx.children, &ctx.metrics, "connector");
    let mut live = applier.observe(&kinds, &namespace, Owner::Connector(&name)).await?;
    let children = match (&problem, &tenant, &profile) {
        (None, Some(tenant), Some(profile)) => {
            render_connector::render(&connector, profile, tenant, &ctx.settings, served.gateway_api).into_children()?
        }
        _ => Vec::new(),
    };
    let desired: BTreeSet<Key> = children.iter().map(Key::of).collect();
    applier.apply_all(&children, &mut live).await?;
    let uid = connector.uid().unwrap_or_default();
    applier.prune(&live, &desired, &uid, crate::api::tenant::DeletionPolicy::Delete).await?;

    let previous = connector.status.clone().unwrap_or_default();
    let state = connector.spec.state;
    let mut endpoint = previous.endpoint.clone();
    let mut sync = previous.sync.clone();
    let mut requeue = None;
    let observed = match (&problem, &profile) {
        (None, Some(profile)) => {
            let deployed = readiness::deployment(live.value(ChildKind::Deployment, &name).as_ref());
            // Observe: the endpoint (probed when due) and the feed.
            let probe = if state == ConnectorState::Stopped {
                ctx.prober.forget(&key);
                None
            } else {
                let remembered = probe_when_due(&ctx, &key, &connector, profile).await?;
                requeue =
                    Some(ctx.prober.interval().saturating_sub(remembered.at.elapsed()).max(Duration::from_secs(1)));
                endpoint = Some(endpoint_status(previous.endpoint.as_ref(), &remembered.result));
                let result = remembered.result.failure.map(|f| f.as_str()).unwrap_or("Reachable");
                ctx.metrics.probes.get_or_create(&ProbeLabel { result }).inc();
                Some(remembered.result)
            };
            let report = read_sync(&ctx, &namespace, &name, state, deployed.ready).await;
            let (concluded, synced) = super::sync::conclude(previous.sync.as_ref(), report.as_ref(), state);
            sync = concluded;
            Observation::Configured { profile: &profile.name, state, deployed, probe, synced }
        }
        (Some(problem), _) => {
            ctx.prober.forget(&key);
            Observation::NotConfigured(problem.clone())
        }
        // `problem` names an unknown system whenever the profile is missing.
        (None, None) => Observation::NotConfigured(NotConfigured {
            reason: NotConfiguredReason::UnknownSystem,
            message: String::new(),
        }),
    };
    let conditions = conclude(observed);
    let now = Time(jiff::Timestamp::now());
    let new = ProviderConnectorStatus {
        observed_generation: connector.metadata.generation,
        conditions: condition::merge(&previous.conditions, &conditions, connector.metadata.generation, &now),
        tenant: tenant.as_ref().map(|t| t.name_any()),
        endpoint,
        sync,
    };
    let api = Api::<ProviderConnector>::namespaced(ctx.client.clone(), &namespace);
    let written = status::write_if_changed(&api, &*connector, connector.status.as_ref(), &new, same_status).await?;
    if written {
        publish_transitions(&connector, &ctx, &previous, &new).await;
    }
    ctx.reset_backoff(&key);
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The remembered probe of the connector's endpoint, probing it now when
/// none is fresh (bounded in rate and concurrency across all connectors).
async fn probe_when_due(
    ctx: &Context,
    key: &str,
    connector: &ProviderConnector,
    profile: &crate::catalogue::Profile,
) -> Result<super::prober::Remembered> {
    let target = format!("{}|{}", connector.spec.endpoint.url, profile.name);
    if let Some(fresh) = ctx.prober.fresh(key, &target) {
        return Ok(fresh);
    }
    let namespace = connector.namespace().unwrap_or_default();
    let credentials = credentials(ctx, &namespace, connector).await?;
    let url = &connector.spec.endpoint.url;
    let path = profile.probe_path.as_deref();
    Ok(ctx.prober.probe(key, &target, url, profile.protocol, path, credentials.as_ref()).await)
}

/// What a connector reconcile found, for `conclude`.
enum Observation<'a> {
    /// The connector cannot be deployed, and why.
    NotConfigured(NotConfigured),
    /// Deployed from `profile`: how far, what the endpoint answered (None
    /// while Stopped: not probed) and what the connector said of its feed.
    Configured {
        profile: &'a str,
        state: ConnectorState,
        deployed: readiness::Verdict,
        probe: Option<crate::probe::ProbeResult>,
        synced: Observed,
    },
}

/// The conditions of a connector from what its reconcile observed. Pure.
fn conclude(observed: Observation) -> Vec<Observed> {
    use ConnectorCondition::*;
    let condition = |c: ConnectorCondition, status, reason: &str, message: String| {
        Observed::new(c.as_str(), status, reason, message)
    };
    let (profile, state, deployed, probe, synced) = match observed {
        Observation::NotConfigured(NotConfigured { reason, message }) => {
            return vec![
                condition(Configured, ConditionStatus::False, reason.as_str(), message.clone()),
                condition(Ready, ConditionStatus::False, reason.as_str(), message),
            ];
        }
        Observation::Configured { profile, state, deployed, probe, synced } => {
            (profile, state, deployed, probe, synced)
        }
    };
    let reachable = match &probe {
        None => condition(EndpointReachable, ConditionStatus::Unknown, "Stopped", "not probed while Stopped".into()),
        Some(r) => condition(
            EndpointReachable,
            ConditionStatus::from_bool(r.reachable),
            r.failure.map(|f| f.as_str()).unwrap_or("Reachable"),
            r.message.clone(),
        ),
    };
    let ready = match state {
        ConnectorState::Running if deployed.ready && reachable.is_true() => {
            condition(Ready, ConditionStatus::True, "Ready", "connector is running and its endpoint answers".into())
        }
        ConnectorState::Running if deployed.ready => {
            condition(Ready, ConditionStatus::False, "EndpointUnreachable", reachable.message.clone())
        }
        ConnectorState::Running => condition(Ready, ConditionStatus::False, "Deploying", deployed.message.clone()),
        other => condition(Ready, ConditionStatus::False, other.as_str(), format!("spec.state is {}", other.as_str())),
    };
    vec![
        condition(Configured, ConditionStatus::True, "Configured", format!("profile {profile}")),
        condition(Deployed, ConditionStatus::from_bool(deployed.ready), deployed.reason, deployed.message),
        reachable,
        synced,
        ready,
    ]
}

/// The endpoint status to record: a changed answer is recorded at once;
/// the same answer only refreshes `lastChecked` hourly.
fn endpoint_status(previous: Option<&EndpointStatus>, r: &crate::probe::ProbeResult) -> EndpointStatus {
    let fresh = EndpointStatus {
        reachable: r.reachable,
        fhir_version: r.fhir_version.clone(),
        software: r.software.clone(),
        latency_ms: Some(r.latency_ms),
        last_checked: Some(Time(jiff::Timestamp::now())),
    };
    match previous {
        Some(p)
            if p.reachable == fresh.reachable
                && p.fhir_version == fresh.fhir_version
                && p.software == fresh.software
                && p.last_checked.as_ref().is_some_and(|t| {
                    jiff::Timestamp::now().duration_since(t.0).as_secs() < STATUS_REFRESH.as_secs() as i64
                }) =>
        {
            p.clone()
        }
        _ => fresh,
    }
}

fn same_status(a: &ProviderConnectorStatus, b: &ProviderConnectorStatus) -> bool {
    a.observed_generation == b.observed_generation
        && condition::same(&a.conditions, &b.conditions)
        && a.tenant == b.tenant
        && a.endpoint == b.endpoint
        && a.sync == b.sync
}

/// What the connector last reported, reading it now if it is running and
/// has never been read (later reads come from `SyncReader::refresh`).
async fn read_sync(
    ctx: &Context,
    namespace: &str,
    name: &str,
    state: ConnectorState,
    deployed: bool,
) -> Option<super::sync::Report> {
    if state != ConnectorState::Running || !deployed {
        return None;
    }
    let key = (namespace.to_string(), name.to_string());
    match ctx.sync.report(&key) {
        Some(report) => Some(report),
        None => Some(ctx.sync.read_now(&key, ctx.sync.ready_pod(&key)?).await),
    }
}

/// Forgets the probe results and status reports of deleted connectors,
/// every minute, so neither map grows with every connector ever created.
pub async fn forget_deleted(store: kube::runtime::reflector::Store<ProviderConnector>, ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let live: std::collections::HashSet<(String, String)> =
            store.state().iter().map(|c| (c.namespace().unwrap_or_default(), c.name_any())).collect();
        ctx.sync.retain(|key| live.contains(key));
        ctx.prober.retain(|key| {
            key.strip_prefix("connector/")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(ns, name)| live.contains(&(ns.to_string(), name.to_string())))
        });
    }
}

/// Credentials for the probe from the connector's Secret; never logged.
async fn credentials(ctx: &Context, namespace: &str, connector: &ProviderConnector) -> Result<Option<Credentials>> {
    let Some(secret_ref) = &connector.spec.endpoint.credentials_secret_ref else { return Ok(None) };
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), namespace).get_opt(&secret_ref.name).await? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
    Ok(match (text("token"), text("username"), text("password")) {
        (Some(token), _, _) => Some(Credentials::Bearer(token)),
        (None, Some(username), Some(password)) => Some(Credentials::Basic { username, password }),
        _ => None,
    })
}

async fn publish_transitions(
    connector: &ProviderConnector,
    ctx: &Context,
    before: &ProviderConnectorStatus,
    after: &ProviderConnectorStatus,
) {
    let reference = connector.object_ref(&());
    for c in &after.conditions {
        let was = before.conditions.iter().find(|p| p.type_ == c.type_);
        if was.is_some_and(|p| p.status == c.status && p.reason == c.reason) {
            continue;
        }
        let type_ = ConnectorCondition::ALL.into_iter().find(|t| t.as_str() == c.type_);
        if c.status == "False" && type_.is_some_and(ConnectorCondition::warns) {
            let action = if type_ == Some(ConnectorCondition::Synced) { "Sync" } else { "Validate" };
            ctx.events.publish(&reference, true, &c.reason, action, c.message.clone()).await;
        } else if c.type_ == "Ready" && c.status == "True" {
            ctx.events.publish(&reference, false, "Ready", "Reconcile", c.message.clone()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str, created: i64) -> ProviderConnector {
        let mut c: ProviderConnector = serde_yaml::from_str(&format!(
            "apiVersion: carerecord.dev/v1alpha1\nkind: ProviderConnector\nmetadata: {{name: {name}, namespace: scr-a}}\nspec:\n  provider: {{odsCode: A1, name: A, kind: GPPractice}}\n  system: emis-web\n  endpoint: {{url: 'https://a.example'}}\n"
        ))
        .unwrap();
        c.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        c
    }

    fn deployed(ready: bool) -> readiness::Verdict {
        readiness::Verdict {
            ready,
            reason: if ready { "Available" } else { "Progressing" },
            message: if ready { "1/1 available".into() } else { "0/1 available".into() },
        }
    }

    fn answered(reachable: bool) -> crate::probe::ProbeResult {
        crate::probe::ProbeResult {
            reachable,
            failure: (!reachable).then_some(crate::probe::Failure::Timeout),
            message: if reachable { "FHIR 4.0.1".into() } else { "no answer within 5s".into() },
            fhir_version: None,
            software: None,
            latency_ms: 3,
        }
    }

    fn synced() -> Observed {
        Observed::new("Synced", ConditionStatus::True, "Synced", "the last sync committed to the record store")
    }

    fn configured(state: ConnectorState, ready: bool, probe: Option<crate::probe::ProbeResult>) -> Vec<Observed> {
        conclude(Observation::Configured {
            profile: "emis-web",
            state,
            deployed: deployed(ready),
            probe,
            synced: synced(),
        })
    }

    fn find(conditions: &[Observed], c: ConnectorCondition) -> &Observed {
        conditions.iter().find(|o| o.type_ == c.as_str()).expect("condition present")
    }

    #[test]
    fn a_connector_that_cannot_be_configured_is_neither_configured_nor_ready_for_the_same_reason() {
        let conditions = conclude(Observation::NotConfigured(NotConfigured {
            reason: NotConfiguredReason::QuotaExceeded,
            message: "beyond quota".into(),
        }));
        assert_eq!(conditions.len(), 2);
        for c in [ConnectorCondition::Configured, ConnectorCondition::Ready] {
            let o = find(&conditions, c);
            assert_eq!(
                (o.status, o.reason.as_str(), o.message.as_str()),
                (ConditionStatus::False, "QuotaExceeded", "beyond quota")
            );
        }
    }

    #[test]
    fn a_running_deployed_connector_whose_endpoint_answers_is_ready() {
        let conditions = configured(ConnectorState::Running, true, Some(answered(true)));
        assert!(ConnectorCondition::ALL.iter().all(|c| find(&conditions, *c).is_true()), "{conditions:?}");
    }

    #[test]
    fn a_deployed_connector_whose_endpoint_is_silent_is_not_ready_and_says_why() {
        let conditions = configured(ConnectorState::Running, true, Some(answered(false)));
        let ready = find(&conditions, ConnectorCondition::Ready);
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, "EndpointUnreachable"));
        assert_eq!(ready.message, "no answer within 5s");
        assert_eq!(find(&conditions, ConnectorCondition::EndpointReachable).reason, "Timeout");
    }

    #[test]
    fn a_connector_still_rolling_out_is_deploying() {
        let conditions = configured(ConnectorState::Running, false, Some(answered(true)));
        let ready = find(&conditions, ConnectorCondition::Ready);
        assert_eq!((ready.reason.as_str(), ready.message.as_str()), ("Deploying", "0/1 available"));
    }

    #[test]
    fn a_stopped_connector_is_not_probed_and_not_ready() {
        let conditions = configured(ConnectorState::Stopped, true, None);
        let reachable = find(&conditions, ConnectorCondition::EndpointReachable);
        assert_eq!((reachable.status, reachable.reason.as_str()), (ConditionStatus::Unknown, "Stopped"));
        let ready = find(&conditions, ConnectorCondition::Ready);
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, "Stopped"));
    }

    #[test]
    fn a_paused_connector_is_not_ready_though_its_endpoint_answers() {
        let conditions = configured(ConnectorState::Paused, false, Some(answered(true)));
        assert_eq!(find(&conditions, ConnectorCondition::Ready).reason, "Paused");
    }

    #[test]
    fn only_what_a_person_must_fix_warns() {
        let warning: Vec<_> = ConnectorCondition::ALL.into_iter().filter(|c| c.warns()).map(|c| c.as_str()).collect();
        assert_eq!(warning, ["Configured", "EndpointReachable", "Synced"]);
    }

    #[test]
    fn the_newest_connectors_are_the_ones_over_quota() {
        let all = vec![Arc::new(connector("b", 1)), Arc::new(connector("a", 2)), Arc::new(connector("c", 3))];
        assert!(!over_quota(&all[0], &all, 2));
        assert!(!over_quota(&all[1], &all, 2));
        assert!(over_quota(&all[2], &all, 2));
    }

    #[test]
    fn same_probe_answer_does_not_change_the_endpoint_status() {
        let r = crate::probe::ProbeResult {
            reachable: true,
            failure: None,
            message: String::new(),
            fhir_version: Some("4.0.1".into()),
            software: Some("HAPI FHIR".into()),
            latency_ms: 12,
        };
        let first = endpoint_status(None, &r);
        let second = endpoint_status(Some(&first), &crate::probe::ProbeResult { latency_ms: 40, ..r });
        assert_eq!(first, second);
    }

    #[test]
    fn a_changed_probe_answer_is_recorded() {
        let r = crate::probe::ProbeResult {
            reachable: true,
            failure: None,
            message: String::new(),
            fhir_version: Some("4.0.1".into()),
            software: None,
            latency_ms: 12,
        };
        let first = endpoint_status(None, &r);
        let second = endpoint_status(Some(&first), &crate::probe::ProbeResult { reachable: false, ..r });
        assert!(!second.reachable);
    }
}
