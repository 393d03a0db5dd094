//! The conditions a CareRecordTenant reports, and why: typed, so that each
//! reason is spelled once and says itself whether it warns (a Warning Event
//! when a condition turns to it) and whether it blocks (the tenant cannot be
//! served as written, so it stays Onboarding rather than Degraded).

use super::readiness::Verdict;
use crate::api::condition::{ConditionStatus, Observed};

/// The conditions on a tenant's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantCondition {
    NamespaceReady,
    DatabaseReady,
    RecordStoreReady,
    GatewayReady,
    /// All of the above: the tenant serves its records.
    Ready,
}

impl TenantCondition {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NamespaceReady => "NamespaceReady",
            Self::DatabaseReady => "DatabaseReady",
            Self::RecordStoreReady => "RecordStoreReady",
            Self::GatewayReady => "GatewayReady",
            Self::Ready => "Ready",
        }
    }

    /// This condition, for one of the tenant's own reasons.
    pub fn because(self, status: ConditionStatus, reason: TenantReason, message: impl Into<String>) -> Concluded {
        Concluded {
            observed: Observed::new(self.as_str(), status, reason.as_str(), message),
            warns: reason.warns(),
            blocks: reason.blocks(),
        }
    }

    /// This condition as a child's readiness says (the reason is the child's).
    pub fn from_verdict(self, verdict: Verdict) -> Concluded {
        let warns = verdict.warns();
        Concluded {
            observed: Observed::new(
                self.as_str(),
                ConditionStatus::from_bool(verdict.ready),
                verdict.reason,
                verdict.message,
            ),
            warns,
            blocks: false,
        }
    }
}

/// Why a tenant condition is what it is, where the tenant (not a child's
/// readiness) decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantReason {
    /// Ready: every condition is True.
    Ready,
    /// Ready: not yet; the message lists what is not.
    Onboarding,
    /// `spec.suspend` is true.
    Suspended,
    /// The spec breaks a rule the CRD's validation should have caught.
    InvalidSpec,
    /// The namespace is not Active yet.
    Pending,
    /// The namespace is Active.
    Active,
    /// The quota controller has not counted a resource the quota caps.
    QuotaNotCounted,
    /// The namespace belongs to another tenant, or to no tenant.
    NamespaceConflict,
    /// `database.mode: CloudNativePG` without CloudNativePG installed.
    CloudNativePGNotInstalled,
    /// Data retained from an earlier tenant of this name is in another mode.
    RetainedDataConflict,
    /// Generated database Secrets are gone while the database exists.
    CredentialsMissing,
    /// The Secret an External database names does not exist.
    ExternalSecretMissing,
    /// The Secret an External database names exists.
    ExternalSecretFound,
    /// Held back until the database Secret exists.
    WaitingForDatabase,
    /// Another tenant, created first, holds the hostname.
    HostnameConflict,
    /// The Ingress fallback needs a TLS Secret: records never go over plain HTTP.
    TLSRequired,
    /// Neither the Gateway API nor the Ingress fallback is available.
    NoRouteAvailable,
    /// The route is accepted but the record gateway behind it is not serving.
    RecordGatewayNotAvailable,
}

impl TenantReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Onboarding => "Onboarding",
            Self::Suspended => "Suspended",
            Self::InvalidSpec => "InvalidSpec",
            Self::Pending => "Pending",
            Self::Active => "Active",
            Self::QuotaNotCounted => "QuotaNotCounted",
            Self::NamespaceConflict => "NamespaceConflict",
            Self::CloudNativePGNotInstalled => "CloudNativePGNotInstalled",
            Self::RetainedDataConflict => "RetainedDataConflict",
            Self::CredentialsMissing => "CredentialsMissing",
            Self::ExternalSecretMissing => "ExternalSecretMissing",
            Self::ExternalSecretFound => "ExternalSecretFound",
            Self::WaitingForDatabase => "WaitingForDatabase",
            Self::HostnameConflict => "HostnameConflict",
            Self::TLSRequired => "TLSRequired",
            Self::NoRouteAvailable => "NoRouteAvailable",
            Self::RecordGatewayNotAvailable => "RecordGatewayNotAvailable",
        }
    }

    /// Whether turning to it deserves a Warning Event: something a person
    /// must fix. The rest follow from the cluster catching up.
    pub const fn warns(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec
                | Self::NamespaceConflict
                | Self::CloudNativePGNotInstalled
                | Self::RetainedDataConflict
                | Self::CredentialsMissing
                | Self::ExternalSecretMissing
                | Self::HostnameConflict
                | Self::TLSRequired
                | Self::NoRouteAvailable
        )
    }

    /// Whether the tenant cannot be served as written: nothing was applied,
    /// so it stays Onboarding, never Degraded, until the spec or the
    /// platform changes.
    pub const fn blocks(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec | Self::NamespaceConflict | Self::CloudNativePGNotInstalled | Self::RetainedDataConflict
        )
    }
}

/// A condition as a reconcile concluded it, with what its reason implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concluded {
    pub observed: Observed,
    /// Turning False for this reason publishes a Warning Event.
    pub warns: bool,
    /// The tenant cannot be served as written (see `TenantReason::blocks`).
    pub blocks: bool,
}

impl Concluded {
    pub fn is_true(&self) -> bool {
        self.observed.is_true()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_that_blocks_a_tenant_also_warns() {
        let reasons = [
            TenantReason::Ready,
            TenantReason::Onboarding,
            TenantReason::Suspended,
            TenantReason::InvalidSpec,
            TenantReason::Pending,
            TenantReason::Active,
            TenantReason::QuotaNotCounted,
            TenantReason::NamespaceConflict,
            TenantReason::CloudNativePGNotInstalled,
            TenantReason::RetainedDataConflict,
            TenantReason::CredentialsMissing,
            TenantReason::ExternalSecretMissing,
            TenantReason::ExternalSecretFound,
            TenantReason::WaitingForDatabase,
            TenantReason::HostnameConflict,
            TenantReason::TLSRequired,
            TenantReason::NoRouteAvailable,
            TenantReason::RecordGatewayNotAvailable,
        ];
        for reason in reasons {
            assert!(!reason.blocks() || reason.warns(), "{reason:?}");
        }
    }

    #[test]
    fn a_condition_carries_its_type_and_reason_as_the_api_spells_them() {
        let c = TenantCondition::GatewayReady.because(ConditionStatus::False, TenantReason::TLSRequired, "m");
        assert_eq!((c.observed.type_, c.observed.reason.as_str()), ("GatewayReady", "TLSRequired"));
        assert!(c.warns && !c.blocks);
    }
}
