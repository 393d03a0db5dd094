//! The connector catalogue: one profile per kind of care system. Built-in
//! profiles are data (`profiles.yaml`); operators add their own from a
//! ConfigMap, validated the same way.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::connector::{Schedule, ScheduleMode};
use crate::api::fhir;

const BUILT_IN: &str = include_str!("profiles.yaml");

/// How a connector talks to its system.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Protocol {
    /// FHIR R4 REST (probed with GET <url>/metadata).
    FhirR4,
    /// HL7 v2 messages over MLLP (probed with a TCP connect).
    Hl7v2Mllp,
}

/// One kind of care system.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub display_name: String,
    #[serde(default)]
    pub vendor: String,
    pub protocol: Protocol,
    /// Path probed under the endpoint URL (FHIR only).
    #[serde(default)]
    pub probe_path: Option<String>,
    /// Default FHIR resource types.
    pub resources: Vec<String>,
    /// Default schedule.
    pub schedule: Schedule,
    /// Port the connector serves on (inbound pushes, health).
    pub port: i32,
    /// Connector image; absent (every built-in profile): the operator's own
    /// image, running `ics-operator connector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Why connectors of this profile cannot move records on this platform
    /// (e.g. a national service it cannot reach); they deploy and report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Profile-specific settings passed to the connector as they are.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Why a set of profiles is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot parse profiles: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("profile {name}: {problem}")]
    Invalid { name: String, problem: String },
}

/// Every profile, by name.
#[derive(Clone, Debug)]
pub struct Catalogue {
    profiles: BTreeMap<String, Profile>,
}

impl Catalogue {
    /// The built-in profiles.
    pub fn built_in() -> Self {
        let profiles = parse(BUILT_IN).unwrap_or_else(|e| panic!("built-in catalogue is valid (tested): {e}"));
        Self { profiles: profiles.into_iter().map(|p| (p.name.clone(), p)).collect() }
    }

    /// Built-in profiles plus extra ones (YAML list); an extra profile with
    /// a built-in name replaces it.
    pub fn with_extra(extra_yaml: &str) -> Result<Self, CatalogueError> {
        let mut catalogue = Self::built_in();
        for profile in parse(extra_yaml)? {
            catalogue.profiles.insert(profile.name.clone(), profile);
        }
        Ok(catalogue)
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }
}

fn parse(yaml: &str) -> Result<Vec<Profile>, CatalogueError> {
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let profiles: Vec<Profile> = serde_yaml::from_str(yaml)?;
    for p in &profiles {
        validate(p).map_err(|problem| CatalogueError::Invalid { name: p.name.clone(), problem })?;
    }
    Ok(profiles)
}

fn validate(p: &Profile) -> Result<(), String> {
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 63
        && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !p.name.starts_with('-')
        && !p.name.ends_with('-');
    if !name_ok {
        return Err("name must be a DNS label (lower-case letters, digits, '-')".into());
    }
    if let Some(t) = p.resources.iter().find(|t| !fhir::is_resource_type(t)) {
        return Err(format!("{t} is not a FHIR R4 resource type"));
    }
    if !(1..=65535).contains(&p.port) {
        return Err(format!("port {} is out of range", p.port));
    }
    if p.image.as_ref().is_some_and(|i| i.is_empty() || i.contains(' ')) {
        return Err("image must be a container image reference".into());
    }
    match (p.schedule.mode, p.schedule.interval_seconds) {
        (ScheduleMode::Poll, None) => return Err("a Poll schedule needs intervalSeconds".into()),
        (ScheduleMode::Poll, Some(s)) if !(60..=86400).contains(&s) => {
            return Err("intervalSeconds must be between 60 and 86400".into());
        }
        (ScheduleMode::Push | ScheduleMode::Subscription, Some(_)) => {
            return Err("intervalSeconds only applies to Poll".into());
        }
        _ => {}
    }
    if p.protocol == Protocol::FhirR4 && p.probe_path.as_deref().is_none_or(|path| !path.starts_with('/')) {
        return Err("a FHIR profile needs a probePath starting with /".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalogue_has_the_ten_nhs_systems() {
        assert_eq!(
            Catalogue::built_in().names(),
            [
                "emis-web",
                "epic",
                "generic-fhir-r4",
                "gp-connect",
                "hl7v2-mllp",
                "liquidlogic-las",
                "mosaic",
                "oracle-health-millennium",
                "rio",
                "systmone"
            ]
        );
    }

    #[test]
    fn extra_profile_is_added() {
        let extra = "- {name: cleo, displayName: Cleo, protocol: FhirR4, probePath: /metadata, resources: [Patient], schedule: {mode: Push}, port: 8080, image: example/cleo:1}\n";
        assert!(Catalogue::with_extra(extra).unwrap().get("cleo").is_some());
    }

    #[test]
    fn extra_profile_with_an_unknown_resource_type_is_rejected() {
        let extra = "- {name: bad, displayName: Bad, protocol: FhirR4, probePath: /metadata, resources: [Patients], schedule: {mode: Push}, port: 8080, image: x:1}\n";
        let err = Catalogue::with_extra(extra).unwrap_err().to_string();
        assert!(err.contains("Patients is not a FHIR R4 resource type"), "{err}");
    }

    #[test]
    fn extra_poll_profile_without_interval_is_rejected() {
        let extra = "- {name: bad, displayName: Bad, protocol: FhirR4, probePath: /metadata, resources: [Patient], schedule: {mode: Poll}, port: 8080, image: x:1}\n";
        assert!(Catalogue::with_extra(extra).unwrap_err().to_string().contains("needs intervalSeconds"));
    }

    #[test]
    fn extra_profile_with_unknown_key_is_rejected() {
        let extra = "- {name: bad, displayName: Bad, protocol: FhirR4, probePath: /metadata, resources: [Patient], schedule: {mode: Push}, port: 8080, image: x:1, imgae: y}\n";
        assert!(Catalogue::with_extra(extra).is_err());
    }
}
