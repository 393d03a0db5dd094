//! The chart's ClusterRole grants exactly what the operator's code uses.

use std::collections::BTreeSet;
use std::path::Path;

use ics_operator::controller::rbac::{Rules, cluster_rules};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

fn chart_rules() -> Rules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ics-operator/files/clusterrole-rules.yaml");
    let rules: Vec<Rule> = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Rules::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let verbs: &mut BTreeSet<String> = out.entry((group.clone(), resource.clone())).or_default();
                verbs.extend(rule.verbs.iter().cloned());
            }
        }
    }
    out
}

#[test]
fn chart_cluster_role_grants_exactly_what_the_code_uses() {
    let (chart, code) = (chart_rules(), cluster_rules());
    for (key, verbs) in &code {
        let granted = chart.get(key).cloned().unwrap_or_default();
        let missing: Vec<_> = verbs.difference(&granted).collect();
        assert!(missing.is_empty(), "chart ClusterRole lacks {missing:?} on {key:?}");
    }
    for (key, verbs) in &chart {
        let used = code.get(key).cloned().unwrap_or_default();
        let extra: Vec<_> = verbs.difference(&used).collect();
        assert!(extra.is_empty(), "chart ClusterRole grants unused {extra:?} on {key:?}");
    }
}

#[test]
fn chart_crds_match_the_generated_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart = std::fs::read_to_string(root.join("charts/ics-operator/crds/carerecord.dev.yaml")).unwrap();
    let generated = std::fs::read_to_string(root.join("crds/carerecord.dev.yaml")).unwrap();
    assert!(chart == generated, "copy crds/carerecord.dev.yaml to charts/ics-operator/crds/ (make crds does both)");
}
