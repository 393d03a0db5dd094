//! FHIR R4 facts with no I/O, shared by the record gateway and the connector
//! runtime: resource type names, Bundle entries, `meta.security` labels and
//! the sensitive categories they mark, patient references, SMART scopes.
//!
//! Resources are `serde_json::Value`s: the data plane passes records through
//! and only ever needs a handful of elements, so a typed model of every
//! resource would cost more than it checks.

pub mod bundle;
pub mod patient;
pub mod resource_type;
pub mod scope;
pub mod security;

pub use resource_type::{R4_RESOURCE_TYPES, canonical_resource_type, is_resource_type};
pub use scope::{Interaction, Scope, ScopeContext, ScopeError, ScopeSet};
pub use security::SensitiveCategory;
