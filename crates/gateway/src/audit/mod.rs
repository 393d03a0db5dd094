//! The audit trail: what an event says (pure) and how it is written.

pub mod event;
pub mod writer;
