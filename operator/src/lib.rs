//! ics-operator: onboards Integrated Care Systems onto a shared care record
//! platform.
//!
//! Dependencies point one way: `controller` -> `render` -> `api` + `settings`.
//! `api`, `settings` and `render` are pure: no client, no network, no runtime.

pub mod api;
pub mod catalogue;
pub mod controller;
pub mod http;
pub mod probe;
pub mod render;
pub mod settings;
pub mod telemetry;
pub mod yaml;

/// Name under which the operator writes (server-side apply field manager) and
/// reports Events.
pub const MANAGER: &str = "ics-operator";

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
