//! The contract between the operator (which renders these documents into
//! ConfigMaps) and the data plane (which reads them). Versioned, typed,
//! strict: unknown fields are errors, and each document's `apiVersion` is
//! checked before anything else is trusted. See README.md for the shapes.
//!
//! This crate only describes data. Meaning that needs other facts (dates
//! parsed as instants, categories mapped to security labels, resource types
//! checked against FHIR) is compiled by the reader.

mod connector;
mod gateway;
mod policy;
mod status;
mod validate;
mod version;

pub use connector::{
    AssertionAlgorithm, ChangeFeed, ConnectorConfig, ConnectorProvider, ExportLevel, FhirPoll, Mllp, Push,
    SecurityRule, Source, SourceAuth, Unavailable,
};
pub use gateway::{AuditSettings, GatewayConfig, InboundConnector, Issuer, Tenant};
pub use policy::{Agreement, Purpose, SensitiveCategory, SharingPolicy};
pub use status::{ConnectorStatus, DeadLetterSummary, SourceKind};
pub use validate::{Invalid, is_ods_code};
pub use version::{ConnectorApiVersion, ConnectorStatusApiVersion, GatewayApiVersion, PolicyApiVersion};
