//! The connector runtime (`ics-operator connector`): brings one provider
//! system's records into its tenant's record store so that a replay is
//! harmless and a crash loses nothing. It reads only its configuration file
//! (the `carerecord.dev/connector/v1` contract the operator renders) and the
//! credential files it names; it never talks to Kubernetes.
//!
//! - [`transform`]: what a source record becomes in the store (pure);
//! - [`cursor`]: where the connector has got to, kept in the store itself;
//! - [`source`]: requests to the provider (auth, rate limit, `Retry-After`);
//! - [`writer`]: the write path every FHIR source shares;
//! - [`poll`]: incremental FHIR polling by `_lastUpdated`;
//! - [`export_manifest`] and [`bulk_export`]: Bulk Data `$export` with `_since`;
//! - [`notification`] and [`subscription`]: FHIR Subscription rest-hook notifications;
//! - [`mllp`]: HL7 v2 over MLLP, acknowledged after the store commits;
//! - [`push`]: Bundles pushed by the provider through the record gateway;
//! - [`store`]: transactions into the tenant's store;
//! - [`status`] and [`admin`]: `/status`, `/metrics`, `/healthz`, `/readyz`;
//! - [`cli`]: the command.

pub mod admin;
pub mod bulk_export;
pub mod cli;
pub mod cursor;
pub mod export_manifest;
pub mod mllp;
pub mod notification;
pub mod poll;
pub mod push;
pub mod source;
pub mod status;
pub mod store;
pub mod subscription;
pub mod transform;
pub mod writer;
