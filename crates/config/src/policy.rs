//! The sharing policy: the Active agreements under which this tenant's
//! records are shared with other tenants.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::version::PolicyApiVersion;

/// Agreements under which a provider tenant shares records, rendered by the
/// operator into the provider tenant's policy ConfigMap.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharingPolicy {
    /// Version of this document: `carerecord.dev/sharing-policy/v1`.
    pub api_version: PolicyApiVersion,
    /// Active agreements (both sides present and matching). Dates are still checked
    /// by the reader on every request.
    #[serde(default)]
    pub agreements: Vec<Agreement>,
}

/// One agreement, as the provider enforces it: both sides' terms combined.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agreement {
    /// Identifier both sides use for the agreement (e.g. `DSA-2026-CM-GM-001`);
    /// recorded in every audit event of a request made under it.
    pub agreement_id: String,
    /// Name of the consumer CareRecordTenant; it reads at `/federation/<consumerTenant>/fhir`.
    pub consumer_tenant: String,
    /// ODS codes acting for the consumer tenant; the caller's organisation claim
    /// must be one of them.
    pub consumer_organisations: Vec<String>,
    /// FHIR R4 resource types shared (what both sides agreed).
    pub resources: Vec<String>,
    /// Sensitive categories never shared, whatever the type: the union of both
    /// sides' lists, as the SharingAgreement CRD names them.
    #[serde(default)]
    pub excluded_categories: Vec<SensitiveCategory>,
    /// Start of the agreement, RFC 3339 (e.g. `2026-12-01T00:00:00Z`).
    #[schemars(extend("format" = "date-time"))]
    pub valid_from: String,
    /// End of the agreement, RFC 3339; the earlier of both sides' expiry. Nothing is
    /// shared from this instant on.
    #[schemars(extend("format" = "date-time"))]
    pub expires: String,
    /// Why records are shared. Only direct care.
    pub purpose: Purpose,
}

/// Why records are shared.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Direct care of the patient (the only purpose supported).
    DirectCare,
}

/// Categories of record that need extra protection; the same names as the
/// SharingAgreement CRD's `excludedCategories`. The reader maps each to the
/// `meta.security` labels (v3 ActCode) that mark such records.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SensitiveCategory {
    /// Sexual health, including sexually transmitted infections.
    SexualHealth,
    /// Reproductive health, including termination of pregnancy and fertility.
    ReproductiveHealth,
    /// Gender identity and gender reassignment.
    GenderIdentity,
    /// HIV/AIDS.
    #[allow(clippy::upper_case_acronyms)]
    HIV,
    /// Substance misuse (alcohol and drugs).
    SubstanceMisuse,
    /// Detention under mental health legislation, and psychiatry records.
    MentalHealthDetention,
    /// Safeguarding, including domestic and sexual violence.
    Safeguarding,
    /// Adoption records.
    Adoption,
    /// Criminal justice and prison health records.
    CriminalJustice,
}

impl SensitiveCategory {
    /// Every category, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::SexualHealth,
        Self::ReproductiveHealth,
        Self::GenderIdentity,
        Self::HIV,
        Self::SubstanceMisuse,
        Self::MentalHealthDetention,
        Self::Safeguarding,
        Self::Adoption,
        Self::CriminalJustice,
    ];
}
