//! The sharing policy the record store enforces: every Active agreement under
//! which this tenant shares records, with its types and exclusions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::Ctx;

/// Name of the ConfigMap the record store reads.
pub const SHARING_POLICY: &str = "sharing-policy";

pub(super) fn sharing_policy(ctx: &Ctx) -> ConfigMap {
    let mut agreements = ctx.facts.active_agreements.clone();
    agreements.sort_by(|a, b| a.agreement_id.cmp(&b.agreement_id).then(a.consumer_tenant.cmp(&b.consumer_tenant)));
    let text = serde_yaml::to_string(&serde_json::json!({ "agreements": agreements })).unwrap_or_default();
    ConfigMap {
        metadata: ctx.meta(SHARING_POLICY, "sharing-policy"),
        data: Some(BTreeMap::from([("agreements.yaml".to_string(), text)])),
        ..ConfigMap::default()
    }
}
