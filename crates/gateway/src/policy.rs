//! The sharing policy compiled for enforcement: dates parsed to instants,
//! categories mapped to FHIR facts, resource types checked. A policy that
//! does not compile is rejected whole, so the gateway never enforces half of
//! a file.

use std::collections::BTreeSet;

use carerecord_config as config;
use carerecord_fhir::{R4_RESOURCE_TYPES, SensitiveCategory};
use jiff::Timestamp;

/// The agreements in force, ready to decide with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Agreements, sorted by id so that a choice between two is deterministic.
    pub agreements: Vec<Agreement>,
}

/// One agreement as the gateway enforces it.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub id: String,
    pub consumer_tenant: String,
    pub consumer_organisations: BTreeSet<String>,
    pub resources: BTreeSet<&'static str>,
    pub excluded: BTreeSet<SensitiveCategory>,
    pub valid_from: Timestamp,
    pub expires: Timestamp,
}

impl Agreement {
    /// In force at `now`: `validFrom <= now < expires`.
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.valid_from <= now && now < self.expires
    }

    /// Whether `resource_type` is shared under this agreement.
    pub fn shares(&self, resource_type: &str) -> bool {
        self.resources.contains(resource_type)
    }
}

/// Why a sharing policy document cannot be enforced.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy: {0}")]
    Read(#[from] std::io::Error),
    #[error("the policy is not a carerecord.dev/sharing-policy/v1 document: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid policy: {0}")]
    Invalid(#[from] config::Invalid),
    #[error("agreement {agreement}: {field} is not an RFC 3339 instant: {source}")]
    BadDate { agreement: String, field: &'static str, source: jiff::Error },
    #[error("agreement {agreement}: validFrom must be before expires")]
    DatesOutOfOrder { agreement: String },
    #[error("agreement {agreement}: {resource_type} is not a FHIR R4 resource type")]
    UnknownResourceType { agreement: String, resource_type: String },
    #[error("agreement id {0} appears twice")]
    DuplicateAgreement(String),
}

/// The FHIR fact for a contract category. Exhaustive on both sides: a new
/// category in the contract does not compile until it is mapped.
pub fn category(category: config::SensitiveCategory) -> SensitiveCategory {
    use config::SensitiveCategory as C;
    match category {
        C::SexualHealth => SensitiveCategory::SexualHealth,
        C::ReproductiveHealth => SensitiveCategory::ReproductiveHealth,
        C::GenderIdentity => SensitiveCategory::GenderIdentity,
        C::HIV => SensitiveCategory::HIV,
        C::SubstanceMisuse => SensitiveCategory::SubstanceMisuse,
        C::MentalHealthDetention => SensitiveCategory::MentalHealthDetention,
        C::Safeguarding => SensitiveCategory::Safeguarding,
        C::Adoption => SensitiveCategory::Adoption,
        C::CriminalJustice => SensitiveCategory::CriminalJustice,
    }
}

impl Policy {
    /// Reads and compiles a policy document (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let document: config::SharingPolicy = serde_yaml::from_str(text)?;
        Self::compile(&document)
    }

    /// Compiles a policy document.
    pub fn compile(document: &config::SharingPolicy) -> Result<Self, PolicyError> {
        document.validate()?;
        let mut agreements = Vec::with_capacity(document.agreements.len());
        for a in &document.agreements {
            let date = |field: &'static str, text: &str| {
                text.parse::<Timestamp>().map_err(|source| PolicyError::BadDate {
                    agreement: a.agreement_id.clone(),
                    field,
                    source,
                })
            };
            let valid_from = date("validFrom", &a.valid_from)?;
            let expires = date("expires", &a.expires)?;
            if valid_from >= expires {
                return Err(PolicyError::DatesOutOfOrder { agreement: a.agreement_id.clone() });
            }
            let mut resources = BTreeSet::new();
            for t in &a.resources {
                // Exact spelling only: a policy is rendered, never typed by hand.
                let canonical = R4_RESOURCE_TYPES.iter().copied().find(|c| c == t).ok_or_else(|| {
                    PolicyError::UnknownResourceType { agreement: a.agreement_id.clone(), resource_type: t.clone() }
                })?;
                resources.insert(canonical);
            }
            agreements.push(Agreement {
                id: a.agreement_id.clone(),
                consumer_tenant: a.consumer_tenant.clone(),
                consumer_organisations: a.consumer_organisations.iter().cloned().collect(),
                resources,
                excluded: a.excluded_categories.iter().copied().map(category).collect(),
                valid_from,
                expires,
            });
        }
        agreements.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = agreements.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(PolicyError::DuplicateAgreement(w[0].id.clone()));
        }
        Ok(Self { agreements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: carerecord.dev/sharing-policy/v1
agreements:
  - agreementId: DSA-1
    consumerTenant: greater-manchester
    consumerOrganisations: [QOP]
    resources: [Condition, Patient]
    excludedCategories: [HIV]
    validFrom: "2026-01-01T00:00:00Z"
    expires: "2027-01-01T00:00:00Z"
    purpose: DirectCare
"#;

    #[test]
    fn a_valid_policy_compiles() {
        let policy = Policy::from_yaml(POLICY).unwrap();
        assert_eq!(policy.agreements[0].excluded, BTreeSet::from([SensitiveCategory::HIV]));
        assert!(policy.agreements[0].shares("Condition"));
    }

    #[test]
    fn expires_is_exclusive() {
        let a = &Policy::from_yaml(POLICY).unwrap().agreements[0];
        assert!(a.is_active_at("2026-01-01T00:00:00Z".parse().unwrap()));
        assert!(!a.is_active_at("2027-01-01T00:00:00Z".parse().unwrap()));
        assert!(!a.is_active_at("2025-12-31T23:59:59Z".parse().unwrap()));
    }

    #[test]
    fn a_bad_date_rejects_the_policy() {
        let text = POLICY.replace("2027-01-01T00:00:00Z", "next year");
        assert!(matches!(Policy::from_yaml(&text), Err(PolicyError::BadDate { field: "expires", .. })));
    }

    #[test]
    fn dates_out_of_order_reject_the_policy() {
        let text = POLICY.replace("2027-01-01", "2025-01-01");
        assert!(matches!(Policy::from_yaml(&text), Err(PolicyError::DatesOutOfOrder { .. })));
    }

    #[test]
    fn a_misspelt_resource_type_rejects_the_policy() {
        let text = POLICY.replace("[Condition, Patient]", "[condition]");
        assert!(matches!(Policy::from_yaml(&text), Err(PolicyError::UnknownResourceType { .. })));
    }

    #[test]
    fn another_version_rejects_the_policy() {
        let text = POLICY.replace("sharing-policy/v1", "sharing-policy/v2");
        assert!(matches!(Policy::from_yaml(&text), Err(PolicyError::Parse(_))));
    }

    #[test]
    fn every_contract_category_maps_to_the_fhir_category_of_the_same_name() {
        for c in config::SensitiveCategory::ALL {
            assert_eq!(format!("{c:?}"), category(c).name());
        }
    }
}
