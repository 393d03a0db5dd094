//! `SharingAgreement`: one side of a data-sharing agreement between tenants.
// clippy reads the repeated `printcolumn(type_ = "string")` arguments of the
// CustomResource derive as duplicated attributes; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::conditions_schema;

/// One side of a data-sharing agreement. The provider side lives in the
/// namespace of the tenant whose records are shared; the consumer side in the
/// consumer tenant's. Records flow only while both sides exist and match, for
/// direct care, within both sides' dates, and while both tenants are Ready.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "carerecord.dev",
    version = "v1alpha1",
    kind = "SharingAgreement",
    plural = "sharingagreements",
    namespaced,
    shortname = "dsa",
    category = "carerecord",
    status = "SharingAgreementStatus",
    doc = "One side of a data-sharing agreement between two ICS tenants, declared in that side's own namespace.",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Counterpart", type_ = "string", json_path = ".spec.counterpartTenant"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expires"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    cel
)]
#[x_kube(
    validation = Rule::new("self.validFrom < self.expires").message("validFrom must be before expires"),
    validation = Rule::new("self.agreementId == oldSelf.agreementId").message("agreementId cannot be changed; create a new agreement instead"),
    validation = Rule::new("self.role == oldSelf.role").message("role cannot be changed; create a new agreement instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct SharingAgreementSpec {
    /// Provider (this tenant's records are shared) or Consumer (this tenant
    /// reads the counterpart's records).
    pub role: Role,

    /// Identifier both sides use for the agreement, e.g. the reference of the
    /// signed data-sharing agreement ("DSA-2026-CM-GM-001").
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}[A-Za-z0-9]$')").message("agreementId must be 2 to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub agreement_id: String,

    /// Name of the CareRecordTenant on the other side.
    #[schemars(length(max = 59))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("counterpartTenant must be the name of a CareRecordTenant"))]
    pub counterpart_tenant: String,

    /// Why records are shared. Only DirectCare is supported.
    pub purpose: Purpose,

    /// The UK GDPR lawful bases the sharing relies on.
    pub legal_basis: LegalBasis,

    /// FHIR R4 resource types shared. On the consumer side, what it asks for:
    /// it must be a subset of what the provider offers.
    #[schemars(length(min = 1, max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new(super::fhir::resource_types_rule()).message("resources must be FHIR R4 resource types, e.g. MedicationStatement, AllergyIntolerance, CarePlan"))]
    pub resources: Vec<String>,

    /// Sensitive categories never shared under this agreement, whatever the
    /// resource type. The two sides' lists are combined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub excluded_categories: Vec<SensitiveCategory>,

    /// Start of the agreement (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    pub valid_from: Time,

    /// End of the agreement (RFC 3339). Sharing stops at this instant.
    pub expires: Time,

    /// Access granted. Only ReadOnly is supported.
    #[serde(default)]
    pub access: Access,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Provider,
    Consumer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "Provider",
            Self::Consumer => "Consumer",
        }
    }
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    DirectCare,
}

/// UK GDPR article 6 and article 9 bases.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct LegalBasis {
    /// Article 6 lawful basis: PublicTask (6(1)(e), usual for NHS bodies),
    /// LegalObligation (6(1)(c)), VitalInterests (6(1)(d)) or Consent (6(1)(a)).
    pub article6: Article6,
    /// Article 9 condition for health data: HealthOrSocialCare (9(2)(h), usual
    /// for direct care), VitalInterests (9(2)(c)), PublicHealth (9(2)(i)) or
    /// ExplicitConsent (9(2)(a)).
    pub article9: Article9,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Article6 {
    PublicTask,
    LegalObligation,
    VitalInterests,
    Consent,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Article9 {
    HealthOrSocialCare,
    VitalInterests,
    PublicHealth,
    ExplicitConsent,
}

/// Categories of record that need extra protection: the data-plane
/// contract's own type, so the CRD, the rendered sharing policy and the
/// record gateway name the same categories.
pub use carerecord_config::SensitiveCategory;

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Access {
    #[default]
    ReadOnly,
}

/// Observed state of this side. Written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SharingAgreementStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Active, Expired, Revoked or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AgreementPhase>,
    /// Conditions: Matched (both sides agree) and Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Resource types flowing while Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_resources: Vec<String>,
    /// Sensitive categories withheld while Active: those either side excludes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_categories: Vec<SensitiveCategory>,
    /// Public base under which the provider's records are exposed to the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_endpoint: Option<String>,
    /// When sharing stops: the earlier of the two sides' expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<Time>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgreementPhase {
    Pending,
    Active,
    Expired,
    Revoked,
    Invalid,
}

impl AgreementPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Active => "Active",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
            Self::Invalid => "Invalid",
        }
    }
}
