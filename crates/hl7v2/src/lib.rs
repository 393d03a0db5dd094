//! HL7 v2 for the connector runtime, with no I/O: MLLP framing over bytes,
//! message parsing, ACKs, and the mapping of ADT A01/A03/A04/A08 and ORU
//! R01 to FHIR R4 transaction Bundles as the HL7 v2-to-FHIR IG maps them.
//!
//! A listener's loop, per connection:
//!
//! ```
//! use carerecord_hl7v2::{ack, map, message::Message, mllp};
//!
//! let ctx = map::MapContext::new("urn:carerecord:connector:rbt-pas", "RBT");
//! let mut decoder = mllp::Decoder::default();
//! # let read = mllp::frame(&carerecord_hl7v2::fixtures::adt(
//! #     carerecord_hl7v2::fixtures::AdtEvent::A01,
//! #     &carerecord_hl7v2::fixtures::SyntheticPatient::nth(1), "V1", "MSG1", "20261125093000"));
//! decoder.push(&read); // bytes from the socket
//! while let Some(event) = decoder.next_event().unwrap() {
//!     let mllp::Event::Frame(payload) = event else { continue }; // Skipped: log it
//!     let reply = match Message::parse_bytes(&payload) {
//!         Err(e) => ack::build_reject_for_unparsable(&payload, &e, "ACK1", "20261125093001"),
//!         Ok(msg) => match map::to_bundle(&msg, &ctx) {
//!             // POST the bundle; after the store commits:
//!             Ok(_bundle) => ack::build_ack(&msg, ack::AckCode::AA, None, "ACK1", "20261125093001"),
//!             Err(e) => ack::build_ack(&msg, e.ack_code(), Some(&e.to_ack_error()), "ACK1", "20261125093001"),
//!         },
//!     };
//!     let _wire = mllp::frame(&reply); // write to the socket
//! }
//! ```

pub mod ack;
pub mod datetime;
pub mod fixtures;
pub mod map;
pub mod message;
pub mod mllp;
pub mod nhs;

pub use ack::{AckCode, AckError, ErrorCode, build_ack, build_reject_for_unparsable};
pub use map::{Event, MapContext, MapError, patient_key, to_bundle};
pub use message::{Message, ParseError};

impl ParseError {
    /// Always `AR`: a message whose header cannot be read is refused as a
    /// whole (see [`ack::build_reject_for_unparsable`]).
    pub fn ack_code(&self) -> AckCode {
        AckCode::AR
    }
}
