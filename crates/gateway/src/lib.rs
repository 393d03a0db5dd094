//! The record gateway: the only way into a tenant's records.
//!
//! For every request it authenticates the bearer token, decides (a pure
//! function: [`decision::decide`]), forwards what was decided to the record
//! store, filters what comes back (a pure function: [`filter::filter_response`]),
//! and writes an AuditEvent. The pure core (`decision`, `filter`, `consent`,
//! `paging`, `policy`, `request`, `audit::event`) has no I/O; the rest wires it
//! to HTTP (`server`, `auth`, `objections`, `audit::writer`, `reload`, `admin`).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod caller;
pub mod cli;
pub mod consent;
pub mod decision;
pub mod filter;
pub mod metrics;
pub mod objections;
pub mod outcome;
pub mod paging;
pub mod policy;
pub mod reload;
pub mod request;
pub mod server;
pub mod settings;
