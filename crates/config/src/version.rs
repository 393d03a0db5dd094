//! `apiVersion` markers. Each is a one-value enum so that a document of
//! another version fails to deserialize, naming the version it carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the gateway configuration document.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayApiVersion {
    /// The first version of the gateway configuration.
    #[default]
    #[serde(rename = "carerecord.dev/gateway/v1")]
    V1,
}

/// Version of the sharing policy document.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyApiVersion {
    /// The first version of the sharing policy.
    #[default]
    #[serde(rename = "carerecord.dev/sharing-policy/v1")]
    V1,
}

/// Version of the connector configuration document.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectorApiVersion {
    /// The first version of the connector configuration.
    #[default]
    #[serde(rename = "carerecord.dev/connector/v1")]
    V1,
}

/// Version of the connector's `/status` document.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectorStatusApiVersion {
    /// The first version of the connector status.
    #[default]
    #[serde(rename = "carerecord.dev/connector-status/v1")]
    V1,
}
