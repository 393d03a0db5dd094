//! Agreements judged from files alone, for `ics-operator render`: when both
//! sides and both tenants are in the input, the same `decide` the controller
//! runs says whether the agreement is Active now (tenants taken as Ready, as
//! they will be once onboarded), so a preview shows the provider's routes
//! and sharing policy exactly as the operator will apply them.

use jiff::Timestamp;
use kube::ResourceExt;

use super::{Counterpart, Decision, Inputs, Side, decide};
use crate::api::agreement::{AgreementPhase, Role, SharingAgreement};
use crate::api::tenant::CareRecordTenant;
use crate::render::tenant::ActiveAgreement;

/// The tenant whose namespace holds `agreement`, among `tenants`.
fn tenant_of<'a>(agreement: &SharingAgreement, tenants: &'a [CareRecordTenant]) -> Option<&'a CareRecordTenant> {
    let namespace = agreement.namespace()?;
    tenants.iter().find(|t| t.target_namespace() == namespace)
}

/// Every provider side in the input with its decision at `now`.
pub fn decisions(
    agreements: &[SharingAgreement],
    tenants: &[CareRecordTenant],
    now: Timestamp,
) -> Vec<(SharingAgreement, Decision)> {
    agreements
        .iter()
        .filter(|a| a.spec.role == Role::Provider)
        .map(|a| {
            let me = Side { tenant: tenant_of(a, tenants).map(|t| t.name_any()), spec: a.spec.clone() };
            let theirs: Vec<Side> = agreements
                .iter()
                .filter(|o| {
                    o.spec.agreement_id == a.spec.agreement_id
                        && tenant_of(o, tenants).is_some_and(|t| t.name_any() == a.spec.counterpart_tenant)
                })
                .map(|o| Side { tenant: Some(a.spec.counterpart_tenant.clone()), spec: o.spec.clone() })
                .collect();
            let known = tenants.iter().any(|t| t.name_any() == a.spec.counterpart_tenant);
            let counterpart = match (known, theirs.as_slice()) {
                (false, _) => Counterpart::NoTenant,
                (true, []) => Counterpart::Missing,
                (true, [one]) => Counterpart::Found(one),
                (true, many) => Counterpart::Ambiguous(many.len()),
            };
            let decision = decide(&Inputs {
                me: &me,
                counterpart,
                my_tenant_ready: true,
                their_tenant_ready: true,
                previous: None,
                now,
            });
            (a.clone(), decision)
        })
        .collect()
}

/// The Active agreements under which `provider` shares, as its record
/// gateway's sharing policy lists them.
pub fn active_for_provider(
    provider: &CareRecordTenant,
    decided: &[(SharingAgreement, Decision)],
    tenants: &[CareRecordTenant],
) -> Vec<ActiveAgreement> {
    decided
        .iter()
        .filter(|(a, d)| {
            d.phase == AgreementPhase::Active && a.namespace().as_deref() == Some(provider.target_namespace().as_str())
        })
        .map(|(a, d)| {
            ActiveAgreement::new(a, d.shared_resources.clone(), d.excluded.iter().copied(), d.effective_until, tenants)
        })
        .collect()
}
