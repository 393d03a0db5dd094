//! Property tests: MLLP framing survives any split of the stream, and no
//! input makes the parser, the mapper or the ACK builder panic.

use carerecord_hl7v2::ack::{self, AckCode};
use carerecord_hl7v2::fixtures::{self, AdtEvent, SyntheticPatient};
use carerecord_hl7v2::map::{self, MapContext};
use carerecord_hl7v2::message::Message;
use carerecord_hl7v2::mllp::{self, Decoder, Event};
use proptest::prelude::*;

/// Message payloads: anything without MLLP block characters.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no block bytes", |b| *b != mllp::START_BLOCK && *b != mllp::END_BLOCK),
        0..300,
    )
}

fn decode_in_chunks(wire: &[u8], cuts: &[usize], limit: usize) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut decoder = Decoder::new(limit);
    let mut frames = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        for event in decoder.feed(&wire[start..cut]) {
            match event {
                Ok(Event::Frame(f)) => frames.push(f),
                Ok(Event::Skipped(n)) => panic!("skipped {n} bytes of a clean stream"),
                Err(e) => panic!("{e}"),
            }
        }
        start = cut;
    }
    assert!(decoder.is_idle());
    frames
}

proptest! {
    #[test]
    fn any_messages_split_anywhere_decode_to_the_same_messages(
        messages in proptest::collection::vec(payload(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut wire = Vec::new();
        for m in &messages {
            mllp::encode(m, &mut wire);
        }
        prop_assert_eq!(decode_in_chunks(&wire, &cuts, 1024), messages);
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_frames_still_decode(
        messages in proptest::collection::vec(payload(), 1..5),
        garbage in proptest::collection::vec(payload(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut wire = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            wire.extend(&garbage[i % garbage.len()]);
            mllp::encode(m, &mut wire);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([wire.len()]) {
            for event in decoder.feed(&wire[start..cut]) {
                if let Ok(Event::Frame(f)) = event {
                    frames.push(f);
                }
            }
            start = cut;
        }
        prop_assert_eq!(frames, messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_and_memory_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
    ) {
        let mut decoder = Decoder::new(32);
        for chunk in &chunks {
            for event in decoder.feed(chunk) {
                if let Ok(Event::Frame(f)) = event {
                    prop_assert!(f.len() <= 32);
                }
            }
            prop_assert!(decoder.buffered() <= 32 + 2 + 64);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_parse_map_or_ack(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_text_after_an_msh_never_panics(
        body in "[A-Z0-9|^~\\\\&\r\n\"<>.+-]{0,300}",
    ) {
        let text = format!("MSH|^~\\&|PAS|RBT|ICS|ICS|20261125093000||ADT^A01|M1|P|2.4\rPID|{body}");
        exercise(text.as_bytes());
        let text = format!("MSH|^~\\&|LIMS|RBT|||20261125||ORU^R01|M1|P|2.4\rPID|1||9990000018^^^NHS^NH\rOBR|{body}\rOBX|{body}");
        exercise(text.as_bytes());
    }

    #[test]
    fn mutated_fixture_messages_never_panic(
        n in 0u32..1000,
        position in any::<usize>(),
        replacement in "[|^~\\\\&\rA-Z0-9\"]{0,6}",
    ) {
        let patient = SyntheticPatient::nth(n);
        for text in [
            fixtures::adt(AdtEvent::A01, &patient, "V1", "M1", "20261125093000"),
            fixtures::oru_r01(&patient, Some("V1"), "L1", "M2", "20261125093000"),
        ] {
            let at = position % text.len();
            let mutated = format!("{}{}{}", &text[..at], replacement, &text[at..]);
            exercise(mutated.as_bytes());
        }
    }
}

fn exercise(bytes: &[u8]) {
    let ctx = MapContext::new("urn:test", "RBT");
    match Message::parse_bytes(bytes) {
        Err(e) => {
            let ack = ack::build_reject_for_unparsable(bytes, &e, "A1", "20261125093001");
            assert_eq!(e.ack_code(), AckCode::AR);
            assert!(ack.starts_with("MSH|"));
        }
        Ok(msg) => {
            let _ = msg.header();
            let _ = map::patient_key(&msg);
            let _ = msg.to_string();
            match map::to_bundle(&msg, &ctx) {
                Ok(bundle) => assert_eq!(bundle["resourceType"], "Bundle"),
                Err(e) => {
                    let ack = ack::build_ack(&msg, e.ack_code(), Some(&e.to_ack_error()), "A1", "20261125093001");
                    // The ACK itself always parses.
                    Message::parse(&ack).unwrap();
                }
            }
        }
    }
}
