//! The sharing policy the record gateway enforces: every Active agreement
//! under which this tenant shares records, as the typed, versioned document
//! (`carerecord-config`) the gateway reads and reloads without a restart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::Ctx;
use super::record_gateway::{POLICY_KEY, sharing_policy as policy};

/// Name of the ConfigMap the record gateway reads.
pub const SHARING_POLICY: &str = "sharing-policy";

pub(super) fn sharing_policy(ctx: &Ctx) -> ConfigMap {
    let text = serde_yaml::to_string(&policy(ctx)).unwrap_or_default();
    ConfigMap {
        metadata: ctx.meta(SHARING_POLICY, "sharing-policy"),
        data: Some(BTreeMap::from([(POLICY_KEY.to_string(), text)])),
        ..ConfigMap::default()
    }
}
