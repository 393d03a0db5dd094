//! The SharingAgreement controller: finds the other side, asks the pure
//! decision whether records may flow, and on the provider side applies or
//! removes what exposes them. It requeues at the exact instant the decision
//! can next change by time alone (an agreement starting or expiring).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::apply::{Applier, Key};
use super::children::Owner;
use super::status;
use super::triggers::Triggers;
use super::{Context, Result, tenant_ready};
use crate::api::agreement::{AgreementPhase, Role, SharingAgreement, SharingAgreementStatus};
use crate::api::condition::{self, ConditionStatus, Observed};
use crate::api::tenant::DeletionPolicy;
use crate::render::agreement::{Counterpart, Decision, Inputs, Side, children, decide};
use crate::render::child::ChildKind;

/// Safety-net requeue when nothing is scheduled by time.
const RESYNC: Duration = Duration::from_secs(10 * 60);
/// Requeue of an Active agreement (see the end of `reconcile`).
const ACTIVE_RESYNC: Duration = Duration::from_secs(60);

/// What wakes the agreement controller.
pub fn triggers(ctx: &Arc<Context>) -> Triggers<SharingAgreement> {
    let triggers = Triggers::new("agreement", &ctx.caches.agreements, &ctx.metrics).owned(&ctx.children);
    let sides = triggers.store();
    let by_tenant = triggers.store();
    let by_namespace = ctx.caches.clone();
    triggers
        // Either side changing wakes the other: same agreement id, other namespace.
        .related_cached(&ctx.caches.agreements, move |changed| {
            sides
                .state()
                .iter()
                .filter(|a| a.spec.agreement_id == changed.spec.agreement_id && a.namespace() != changed.namespace())
                .map(|a| ObjectRef::from_obj(&**a))
                .collect::<Vec<_>>()
        })
        // A tenant's readiness gates both the agreements in its namespace
        // and those naming it as counterpart; its counts do not.
        .related_cached_when(&ctx.caches.tenants, super::tenant_standing, move |tenant| {
            let ns = tenant.target_namespace();
            let name = tenant.name_any();
            by_tenant
                .state()
                .iter()
                .filter(|a| a.namespace().as_deref() == Some(ns.as_str()) || a.spec.counterpart_tenant == name)
                .map(|a| ObjectRef::from_obj(&**a))
                .collect::<Vec<_>>()
        })
        // Which tenant a namespace belongs to decides this side's tenant.
        .related_cached(&ctx.caches.namespaces, move |namespace| {
            by_namespace
                .agreements_in(&namespace.name_any())
                .iter()
                .map(|a| ObjectRef::from_obj(&**a))
                .collect::<Vec<_>>()
        })
}

#[instrument(skip(agreement, ctx), fields(agreement = %agreement.name_any(), namespace = agreement.namespace().unwrap_or_default()))]
pub async fn reconcile(agreement: Arc<SharingAgreement>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("agreement");
    let namespace = agreement.namespace().unwrap_or_default();
    let name = agreement.name_any();
    let key = format!("agreement/{namespace}/{name}");
    let served = ctx.capabilities.get().await?;

    let my_tenant = ctx.caches.tenant_of(&namespace);
    let me = Side { tenant: my_tenant.as_ref().map(|t| t.name_any()), spec: agreement.spec.clone() };
    let their_tenant = ctx.caches.tenant(&agreement.spec.counterpart_tenant);
    let others: Vec<Side> = match &their_tenant {
        Some(t) => ctx
            .caches
            .agreements_in(&t.target_namespace())
            .iter()
            .filter(|a| a.spec.agreement_id == agreement.spec.agreement_id && a.metadata.deletion_timestamp.is_none())
            .map(|a| Side { tenant: Some(t.name_any()), spec: a.spec.clone() })
            .collect(),
        None => Vec::new(),
    };
    let counterpart = match (&their_tenant, others.as_slice()) {
        (None, _) => Counterpart::NoTenant,
        (Some(_), []) => Counterpart::Missing,
        (Some(_), [one]) => Counterpart::Found(one),
        (Some(_), many) => Counterpart::Ambiguous(many.len()),
    };
    let invalid = crate::render::validate::agreement(&agreement).err();
    let now = jiff::Timestamp::now();
    let decision = match invalid {
        Some(problem) => Decision::invalid_spec(problem.to_string()),
        None => decide(&Inputs {
            me: &me,
            counterpart,
            my_tenant_ready: my_tenant.as_deref().is_some_and(tenant_ready),
            their_tenant_ready: their_tenant.as_deref().is_some_and(tenant_ready),
            previous: agreement.status.as_ref().and_then(|s| s.phase),
            now,
        }),
    };

    // Apply or remove the provider side's exposure.
    let mut kinds = vec![ChildKind::NetworkPolicy];
    if served.gateway_api {
        kinds.push(ChildKind::HttpRoute);
    }
    let applier = Applier::new(&ctx.client, &ctx.children, &ctx.metrics, "agreement");
    let mut live = applier.observe(&kinds, &namespace, Owner::Agreement(&name)).await?;
    let desired_children = match (&my_tenant, &their_tenant) {
        (Some(provider), Some(consumer)) if served.gateway_api => {
            children(&agreement, &decision, provider, &ctx.settings).into_children()?
        }
        _ => Vec::new(),
    };
    let desired: BTreeSet<Key> = desired_children.iter().map(Key::of).collect();
    applier.apply_all(&desired_children, &mut live).await?;
    let removed = applier.prune(&live, &desired, &agreement.uid().unwrap_or_default(), DeletionPolicy::Delete).await?;
    if !removed.is_empty() {
        info!(removed = removed.len(), phase = decision.phase.as_str(), "removed federation exposure");
    }

    // Status and Events.
    let previous = agreement.status.clone().unwrap_or_default();
    let active = decision.phase == AgreementPhase::Active;
    let observed = vec![
        Observed::new(
            "Matched",
            ConditionStatus::from_bool(decision.matched),
            if decision.matched { "Matched" } else { decision.reason.as_str() },
            if decision.matched { "both sides agree".to_string() } else { decision.message.clone() },
        ),
        Observed::new("Active", ConditionStatus::from_bool(active), decision.reason.as_str(), decision.message.clone()),
    ];
    let time = Time(now);
    let provider_tenant =
        if agreement.spec.role == Role::Provider { my_tenant.as_ref() } else { their_tenant.as_ref() };
    let consumer_name = if agreement.spec.role == Role::Provider {
        agreement.spec.counterpart_tenant.clone()
    } else {
        me.tenant.clone().unwrap_or_default()
    };
    let new = SharingAgreementStatus {
        observed_generation: agreement.metadata.generation,
        phase: Some(decision.phase),
        conditions: condition::merge(&previous.conditions, &observed, agreement.metadata.generation, &time),
        shared_resources: decision.shared_resources.clone(),
        excluded_categories: decision.excluded.clone(),
        federation_endpoint: active
            .then(|| {
                provider_tenant.map(|p| format!("https://{}/federation/{consumer_name}/fhir", p.spec.gateway.hostname))
            })
            .flatten(),
        effective_until: decision.effective_until.map(Time),
    };
    let api = Api::<SharingAgreement>::namespaced(ctx.client.clone(), &namespace);
    let written = status::write_if_changed(&api, &*agreement, agreement.status.as_ref(), &new, same_status).await?;
    if written && previous.phase != new.phase {
        let warning = decision.reason.warns();
        ctx.events
            .publish(
                &agreement.object_ref(&()),
                warning,
                decision.phase.as_str(),
                "Decide",
                format!("{}: {}", decision.reason, decision.message),
            )
            .await;
        info!(phase = decision.phase.as_str(), reason = decision.reason.as_str(), "agreement phase changed");
    }
    ctx.reset_backoff(&key);
    // While records flow, look again at least every minute: a side deleted
    // during a watch gap produces no event after the re-list (kube-runtime
    // emits none for objects that vanished), and sharing must not outlive
    // the agreement by the 10-minute resync. A no-op reconcile writes nothing.
    let resync = if decision.phase == AgreementPhase::Active { ACTIVE_RESYNC } else { RESYNC };
    Ok(match decision.recheck_at {
        Some(at) => {
            let wait = at.duration_since(jiff::Timestamp::now());
            let millis = wait.as_millis().max(0) as u64;
            // Wake just after the instant, so the comparison sees it passed.
            Action::requeue(Duration::from_millis(millis + 5).min(resync))
        }
        None => Action::requeue(resync),
    })
}

fn same_status(a: &SharingAgreementStatus, b: &SharingAgreementStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.phase == b.phase
        && condition::same(&a.conditions, &b.conditions)
        && a.shared_resources == b.shared_resources
        && a.excluded_categories == b.excluded_categories
        && a.federation_endpoint == b.federation_endpoint
        && a.effective_until == b.effective_until
}
