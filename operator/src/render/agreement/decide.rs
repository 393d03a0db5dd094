//! The decision: both sides, both tenants and the clock in; phase out.
//!
//! An agreement is Active only while both sides exist, match (same id, each
//! names the other's tenant, opposite roles, same purpose and legal basis,
//! the consumer asks for no more than the provider offers), now is within
//! both sides' dates, and both tenants are Ready. Everything else says which
//! rule failed.

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::api::agreement::{AgreementPhase, Role, SensitiveCategory, SharingAgreementSpec};

/// Which rule decided an agreement's phase: the reason of its conditions
/// and Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgreementReason {
    /// This side breaks the CRD's rules.
    InvalidSpec,
    /// This side's namespace is not a tenant's.
    NotInTenantNamespace,
    /// This side names its own tenant as counterpart.
    SelfSharing,
    /// This side's, or the agreement's, expiry has passed.
    Expired,
    /// The counterpart tenant does not exist.
    CounterpartTenantMissing,
    /// The other side or its tenant went while records flowed.
    Revoked,
    /// The counterpart tenant has no side with this agreement id yet.
    CounterpartMissing,
    /// The counterpart tenant has several sides with this id.
    AmbiguousCounterpart,
    /// Both sides declare the same role.
    RoleMismatch,
    /// The other side names another tenant.
    CounterpartMismatch,
    /// The sides declare different purposes.
    PurposeMismatch,
    /// The sides declare different legal bases.
    LegalBasisMismatch,
    /// The sides declare different access.
    AccessMismatch,
    /// The consumer asks for types the provider does not offer.
    ResourcesNotOffered,
    /// The agreement's start is still to come.
    NotYetValid,
    /// A tenant is not Ready.
    TenantNotReady,
    /// Records flow.
    Active,
}

impl AgreementReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::NotInTenantNamespace => "NotInTenantNamespace",
            Self::SelfSharing => "SelfSharing",
            Self::Expired => "Expired",
            Self::CounterpartTenantMissing => "CounterpartTenantMissing",
            Self::Revoked => "Revoked",
            Self::CounterpartMissing => "CounterpartMissing",
            Self::AmbiguousCounterpart => "AmbiguousCounterpart",
            Self::RoleMismatch => "RoleMismatch",
            Self::CounterpartMismatch => "CounterpartMismatch",
            Self::PurposeMismatch => "PurposeMismatch",
            Self::LegalBasisMismatch => "LegalBasisMismatch",
            Self::AccessMismatch => "AccessMismatch",
            Self::ResourcesNotOffered => "ResourcesNotOffered",
            Self::NotYetValid => "NotYetValid",
            Self::TenantNotReady => "TenantNotReady",
            Self::Active => "Active",
        }
    }

    /// Whether reaching it deserves a Warning Event: a person must act (the
    /// two sides disagree, a side is misplaced) or sharing was revoked.
    /// Waiting (a missing side, a tenant not Ready, a start to come) and
    /// expiry at the agreed date are Normal.
    pub fn warns(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec
                | Self::NotInTenantNamespace
                | Self::SelfSharing
                | Self::Revoked
                | Self::AmbiguousCounterpart
                | Self::RoleMismatch
                | Self::CounterpartMismatch
                | Self::PurposeMismatch
                | Self::LegalBasisMismatch
                | Self::AccessMismatch
                | Self::ResourcesNotOffered
        )
    }
}

impl std::fmt::Display for AgreementReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One side of an agreement and the tenant whose namespace holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// The tenant owning the side's namespace; None when the namespace is
    /// not a tenant's.
    pub tenant: Option<String>,
    pub spec: SharingAgreementSpec,
}

/// What was found on the other side.
#[derive(Clone, Copy, Debug)]
pub enum Counterpart<'a> {
    /// The counterpart tenant does not exist.
    NoTenant,
    /// The counterpart tenant has no side with this agreement id.
    Missing,
    /// Exactly one side with this agreement id.
    Found(&'a Side),
    /// Several sides with this agreement id: ambiguous, never shared.
    Ambiguous(usize),
}

pub struct Inputs<'a> {
    pub me: &'a Side,
    pub counterpart: Counterpart<'a>,
    pub my_tenant_ready: bool,
    pub their_tenant_ready: bool,
    /// This side's phase before this decision (Revoked needs history).
    pub previous: Option<AgreementPhase>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: AgreementPhase,
    /// Condition reason: which rule decided.
    pub reason: AgreementReason,
    pub message: String,
    /// Both sides exist and agree (the Matched condition).
    pub matched: bool,
    /// Resource types flowing; empty unless Active.
    pub shared_resources: Vec<String>,
    /// Categories excluded by either side.
    pub excluded: Vec<SensitiveCategory>,
    /// The next instant at which time alone could change the decision.
    pub recheck_at: Option<Timestamp>,
    /// The earlier of the two expiries, once both sides are known.
    pub effective_until: Option<Timestamp>,
}

impl Decision {
    /// A side whose own spec breaks the CRD's rules.
    pub fn invalid_spec(message: String) -> Self {
        Self::new(AgreementPhase::Invalid, AgreementReason::InvalidSpec, message)
    }

    fn new(phase: AgreementPhase, reason: AgreementReason, message: String) -> Self {
        Self {
            phase,
            reason,
            message,
            matched: false,
            shared_resources: Vec::new(),
            excluded: Vec::new(),
            recheck_at: None,
            effective_until: None,
        }
    }
}

fn role_of_other(role: Role) -> &'static str {
    match role {
        Role::Provider => "consumer",
        Role::Consumer => "provider",
    }
}

pub fn decide(i: &Inputs) -> Decision {
    use AgreementPhase::*;
    let me = &i.me.spec;
    let Some(my_tenant) = i.me.tenant.as_deref() else {
        return Decision::new(
            Invalid,
            AgreementReason::NotInTenantNamespace,
            "this namespace does not belong to a CareRecordTenant; declare each side in its own tenant's namespace"
                .into(),
        );
    };
    if me.counterpart_tenant == my_tenant {
        return Decision::new(
            Invalid,
            AgreementReason::SelfSharing,
            format!("tenant {my_tenant} cannot share with itself"),
        );
    }
    let own_expiry = me.expires.0;
    if i.now >= own_expiry {
        return Decision::new(Expired, AgreementReason::Expired, format!("this side expired at {own_expiry}"));
    }
    let other = match i.counterpart {
        Counterpart::NoTenant => {
            let mut d = Decision::new(
                Pending,
                AgreementReason::CounterpartTenantMissing,
                format!("tenant {} does not exist", me.counterpart_tenant),
            );
            if matches!(i.previous, Some(Active | Revoked)) {
                d.phase = Revoked;
                d.reason = AgreementReason::Revoked;
                d.message = format!("tenant {} no longer exists; sharing revoked", me.counterpart_tenant);
            }
            d.recheck_at = Some(own_expiry);
            return d;
        }
        Counterpart::Missing => {
            let mut d = Decision::new(
                Pending,
                AgreementReason::CounterpartMissing,
                format!(
                    "waiting for the {} side of agreement {} in tenant {}",
                    role_of_other(me.role),
                    me.agreement_id,
                    me.counterpart_tenant
                ),
            );
            if matches!(i.previous, Some(Active | Revoked)) {
                d.phase = Revoked;
                d.reason = AgreementReason::Revoked;
                d.message = format!(
                    "the {} side of agreement {} in tenant {} was withdrawn; sharing revoked",
                    role_of_other(me.role),
                    me.agreement_id,
                    me.counterpart_tenant
                );
            }
            d.recheck_at = Some(own_expiry);
            return d;
        }
        Counterpart::Ambiguous(n) => {
            return Decision::new(
                Invalid,
                AgreementReason::AmbiguousCounterpart,
                format!(
                    "tenant {} has {n} agreements with id {}; exactly one is required",
                    me.counterpart_tenant, me.agreement_id
                ),
            );
        }
        Counterpart::Found(other) => other,
    };
    let them = &other.spec;
    let mismatch = |reason, message: String| Decision::new(Invalid, reason, message);
    if them.role == me.role {
        return mismatch(
            AgreementReason::RoleMismatch,
            format!("both sides declare role {}; one must be Provider and one Consumer", me.role.as_str()),
        );
    }
    if them.counterpart_tenant != my_tenant {
        return mismatch(
            AgreementReason::CounterpartMismatch,
            format!("the other side names tenant {} as its counterpart, not {my_tenant}", them.counterpart_tenant),
        );
    }
    if them.purpose != me.purpose {
        return mismatch(AgreementReason::PurposeMismatch, "the two sides declare different purposes".into());
    }
    if them.legal_basis != me.legal_basis {
        return mismatch(AgreementReason::LegalBasisMismatch, "the two sides declare different legal bases".into());
    }
    if them.access != me.access {
        return mismatch(AgreementReason::AccessMismatch, "the two sides declare different access".into());
    }
    let (provider, consumer) = if me.role == Role::Provider { (me, them) } else { (them, me) };
    let offered: BTreeSet<&String> = provider.resources.iter().collect();
    let widened: Vec<&str> = consumer.resources.iter().filter(|r| !offered.contains(r)).map(String::as_str).collect();
    if !widened.is_empty() {
        return mismatch(
            AgreementReason::ResourcesNotOffered,
            format!("the consumer asks for {}, which the provider does not offer", widened.join(", ")),
        );
    }
    let start = me.valid_from.0.max(them.valid_from.0);
    let end = own_expiry.min(them.expires.0);
    let excluded: BTreeSet<SensitiveCategory> =
        me.excluded_categories.iter().chain(&them.excluded_categories).copied().collect();
    // Every path below sets the reason it decides by.
    let mut d = Decision::new(Pending, AgreementReason::NotYetValid, String::new());
    d.matched = true;
    d.excluded = excluded.into_iter().collect();
    d.effective_until = Some(end);
    if i.now >= end {
        d.phase = Expired;
        d.reason = AgreementReason::Expired;
        d.message = format!("the agreement expired at {end}");
        return d;
    }
    if i.now < start {
        d.reason = AgreementReason::NotYetValid;
        d.message = format!("the agreement starts at {start}");
        d.recheck_at = Some(start);
        return d;
    }
    d.recheck_at = Some(end);
    if !i.my_tenant_ready || !i.their_tenant_ready {
        let not_ready: Vec<&str> =
            [(i.my_tenant_ready, my_tenant), (i.their_tenant_ready, me.counterpart_tenant.as_str())]
                .into_iter()
                .filter(|(ready, _)| !ready)
                .map(|(_, t)| t)
                .collect();
        d.reason = AgreementReason::TenantNotReady;
        d.message = format!("tenant {} is not Ready", not_ready.join(" and "));
        return d;
    }
    let mut shared: Vec<String> = consumer.resources.clone();
    shared.sort();
    shared.dedup();
    d.phase = Active;
    d.reason = AgreementReason::Active;
    d.message = format!("sharing {} until {end}", shared.join(", "));
    d.shared_resources = shared;
    d
}
