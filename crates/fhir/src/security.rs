//! `meta.security` labels and the sensitive categories they mark.
//!
//! A record is in a category when any of its labels is one of that
//! category's v3 ActCode codes, or the category's own code in this project's
//! code system. The project code system exists because UK categories such as
//! adoption and criminal-justice records have no ActCode; connectors label
//! with both where both exist. The mapping errs on the side of withholding:
//! codes shared by two categories (SEX) mark both, and a label with no
//! system but a matching code counts.

use std::collections::BTreeSet;

use serde_json::Value;

/// HL7 v3 ActCode, whose information-sensitivity codes label records.
pub const ACT_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// This project's code system for sensitive categories; codes are the
/// category names (`SexualHealth`, `Adoption`, ...).
pub const CATEGORY_SYSTEM: &str = "https://carerecord.dev/fhir/CodeSystem/sensitive-category";

/// Categories of record that need extra protection, named as the
/// SharingAgreement CRD names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SensitiveCategory {
    SexualHealth,
    ReproductiveHealth,
    GenderIdentity,
    #[allow(clippy::upper_case_acronyms)]
    HIV,
    SubstanceMisuse,
    MentalHealthDetention,
    Safeguarding,
    Adoption,
    CriminalJustice,
}

impl SensitiveCategory {
    /// Every category.
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

    /// The name, as the CRD and this project's code system spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SexualHealth => "SexualHealth",
            Self::ReproductiveHealth => "ReproductiveHealth",
            Self::GenderIdentity => "GenderIdentity",
            Self::HIV => "HIV",
            Self::SubstanceMisuse => "SubstanceMisuse",
            Self::MentalHealthDetention => "MentalHealthDetention",
            Self::Safeguarding => "Safeguarding",
            Self::Adoption => "Adoption",
            Self::CriminalJustice => "CriminalJustice",
        }
    }

    /// The category named `name` (exact spelling).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// v3 ActCode information-sensitivity codes that mark this category.
    /// Adoption and criminal justice have none: only the project's code marks them.
    pub fn act_codes(self) -> &'static [&'static str] {
        match self {
            // SEX: sexuality and reproductive health; STD: sexually transmitted disease.
            Self::SexualHealth => &["SEX", "STD"],
            Self::ReproductiveHealth => &["SEX"],
            // GENDER: gender and sexual orientation information sensitivity.
            Self::GenderIdentity => &["GENDER"],
            Self::HIV => &["HIV"],
            // ETH: substance abuse; SUD: substance use disorder; OPIOIDUD: opioid use disorder.
            Self::SubstanceMisuse => &["ETH", "SUD", "OPIOIDUD"],
            // PSY: psychiatry; PSYTHPN: psychotherapy note; BH: behavioural health.
            Self::MentalHealthDetention => &["PSY", "PSYTHPN", "BH"],
            // SDV: sexual assault, abuse or domestic violence.
            Self::Safeguarding => &["SDV"],
            Self::Adoption | Self::CriminalJustice => &[],
        }
    }

    /// Whether a label (`system`, `code`) marks this category.
    pub fn is_marked_by(self, system: Option<&str>, code: &str) -> bool {
        match system {
            Some(ACT_CODE_SYSTEM) => self.act_codes().contains(&code),
            Some(CATEGORY_SYSTEM) => self.name() == code,
            // A label without a system cannot be told apart: withhold on either reading.
            None => self.act_codes().contains(&code) || self.name() == code,
            Some(_) => false,
        }
    }

    /// The labels a connector writes on a record of this category: the project
    /// code, then each ActCode.
    pub fn labels(self) -> Vec<Value> {
        let mut labels = vec![serde_json::json!({"system": CATEGORY_SYSTEM, "code": self.name()})];
        labels.extend(self.act_codes().iter().map(|c| serde_json::json!({"system": ACT_CODE_SYSTEM, "code": c})));
        labels
    }
}

/// The (`system`, `code`) pairs of a resource's `meta.security`.
pub fn security_labels(resource: &Value) -> impl Iterator<Item = (Option<&str>, &str)> {
    resource.get("meta").and_then(|m| m.get("security")).and_then(Value::as_array).into_iter().flatten().filter_map(
        |coding| {
            let code = coding.get("code")?.as_str()?;
            Some((coding.get("system").and_then(Value::as_str), code))
        },
    )
}

/// Every sensitive category a resource's own labels mark.
pub fn categories_of(resource: &Value) -> BTreeSet<SensitiveCategory> {
    let mut categories = BTreeSet::new();
    for (system, code) in security_labels(resource) {
        for category in SensitiveCategory::ALL {
            if category.is_marked_by(system, code) {
                categories.insert(category);
            }
        }
    }
    categories
}

/// Whether a resource carries a label of any of `excluded`.
pub fn is_in_any(resource: &Value, excluded: &BTreeSet<SensitiveCategory>) -> bool {
    !excluded.is_empty() && categories_of(resource).iter().any(|c| excluded.contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labelled(system: &str, code: &str) -> Value {
        json!({"resourceType": "Condition", "meta": {"security": [{"system": system, "code": code}]}})
    }

    #[test]
    fn every_category_has_a_label_that_marks_it() {
        for category in SensitiveCategory::ALL {
            for label in category.labels() {
                let resource = json!({"resourceType": "Observation", "meta": {"security": [label]}});
                assert!(categories_of(&resource).contains(&category), "{category:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for category in SensitiveCategory::ALL {
            assert_eq!(SensitiveCategory::from_name(category.name()), Some(category));
        }
    }

    #[test]
    fn psy_marks_mental_health() {
        assert!(categories_of(&labelled(ACT_CODE_SYSTEM, "PSY")).contains(&SensitiveCategory::MentalHealthDetention));
    }

    #[test]
    fn sex_marks_both_sexual_and_reproductive_health() {
        let categories = categories_of(&labelled(ACT_CODE_SYSTEM, "SEX"));
        assert!(categories.contains(&SensitiveCategory::SexualHealth));
        assert!(categories.contains(&SensitiveCategory::ReproductiveHealth));
    }

    #[test]
    fn a_code_from_another_system_marks_nothing() {
        assert!(categories_of(&labelled("http://example.org/codes", "HIV")).is_empty());
    }

    #[test]
    fn a_label_without_system_is_read_as_either() {
        let resource = json!({"resourceType": "Condition", "meta": {"security": [{"code": "HIV"}]}});
        assert!(categories_of(&resource).contains(&SensitiveCategory::HIV));
    }

    #[test]
    fn confidentiality_codes_are_not_categories() {
        let r = labelled("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R");
        assert!(categories_of(&r).is_empty());
    }
}
