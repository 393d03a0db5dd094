//! Sharing agreements, pure: whether an agreement is Active (`decide`) and
//! what the provider side exposes while it is (`children`).

mod decide;
mod exposure;
pub mod offline;

pub use decide::{AgreementReason, Counterpart, Decision, Inputs, Side, decide};
pub use exposure::{AgreementChildren, children, federation_path};
