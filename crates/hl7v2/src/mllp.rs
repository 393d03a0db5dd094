//! MLLP (Minimal Lower Layer Protocol) framing over bytes, with no I/O.
//!
//! A frame is `0x0B <payload> 0x1C 0x0D`. [`Decoder`] is a streaming
//! decoder: feed it whatever a socket read returned with [`Decoder::push`],
//! then drain [`Decoder::next_event`] until it returns `Ok(None)`. It copes
//! with a frame split across any number of reads, several frames in one
//! read, bytes outside any frame (skipped and reported, never fatal) and a
//! frame larger than its limit (a typed error; the oversized frame is
//! discarded up to its end block, so memory stays bounded and the stream can
//! carry on).
//!
//! ```
//! use carerecord_hl7v2::mllp::{self, Decoder, Event};
//!
//! let wire = mllp::frame("MSH|^~\\&|PAS|RBT\r");
//! let mut decoder = Decoder::default();
//! decoder.push(&wire[..5]);
//! assert_eq!(decoder.next_event().unwrap(), None); // needs more bytes
//! decoder.push(&wire[5..]);
//! assert_eq!(
//!     decoder.next_event().unwrap(),
//!     Some(Event::Frame(b"MSH|^~\\&|PAS|RBT\r".to_vec()))
//! );
//! ```

/// Start block: vertical tab.
pub const START_BLOCK: u8 = 0x0B;
/// First byte of the end block: file separator.
pub const END_BLOCK: u8 = 0x1C;
/// Second byte of the end block: carriage return.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// Default largest payload [`Decoder::default`] accepts: 1 MiB. HL7 v2 ADT
/// and ORU messages are a few kilobytes; a report with embedded documents
/// (ED data type, base64) can reach hundreds of kilobytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Frames one message for MLLP: `0x0B message 0x1C 0x0D`.
pub fn frame(message: &str) -> Vec<u8> {
    frame_bytes(message.as_bytes())
}

/// Frames one payload of raw bytes (e.g. ISO-8859-1 text) for MLLP.
pub fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    encode(payload, &mut out);
    out
}

/// Frames each message in turn and concatenates them: what a sender writes
/// to the socket to send a batch (it should then read one ACK per message).
pub fn frame_all<I, S>(messages: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = Vec::new();
    for message in messages {
        encode(message.as_ref().as_bytes(), &mut out);
    }
    out
}

/// Appends the MLLP frame of `payload` to `out` (the encoder).
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(payload);
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
}

/// What the decoder found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete frame's payload, without the start and end blocks.
    Frame(Vec<u8>),
    /// This many bytes outside any frame were dropped: bytes before a start
    /// block, or an unfinished frame abandoned by a new start block. Worth a
    /// log line or a metric; the stream carries on.
    Skipped(usize),
}

/// A framing error. The decoder stays usable after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MllpError {
    /// A frame's payload grew past the decoder's limit. Its bytes are
    /// dropped up to its end block; frames after it decode normally. A
    /// listener would usually answer nothing for it and may close the
    /// connection.
    #[error("MLLP frame larger than the {limit}-byte limit")]
    FrameTooLarge {
        /// The decoder's limit, in payload bytes.
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start block.
    Idle,
    /// `buf[0]` is a start block; `scanned` payload bytes after it hold no
    /// end block.
    InFrame { scanned: usize },
    /// Dropping an oversized frame up to its end block.
    Discarding,
}

/// Streaming MLLP decoder. Memory is bounded by the frame limit plus the
/// largest single [`push`](Decoder::push).
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    state: State,
    max_frame_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    /// A decoder that refuses payloads longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self { buf: Vec::new(), state: State::Idle, max_frame_len }
    }

    /// The payload limit this decoder enforces.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Bytes received and not yet returned or dropped (part of a frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when the decoder is between frames: nothing is pending. A
    /// listener seeing EOF with this false has lost a partial frame.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.state == State::Idle
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame or skipped run, `Ok(None)` when more bytes are
    /// needed, or an error for an oversized frame. Call it until `Ok(None)`
    /// after every [`push`](Decoder::push).
    pub fn next_event(&mut self) -> Result<Option<Event>, MllpError> {
        loop {
            match self.state {
                State::Idle => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    match self.buf.iter().position(|&b| b == START_BLOCK) {
                        Some(0) => self.state = State::InFrame { scanned: 0 },
                        Some(at) => {
                            self.buf.drain(..at);
                            self.state = State::InFrame { scanned: 0 };
                            return Ok(Some(Event::Skipped(at)));
                        }
                        None => {
                            let skipped = self.buf.len();
                            self.buf.clear();
                            return Ok(Some(Event::Skipped(skipped)));
                        }
                    }
                }
                State::InFrame { scanned } => {
                    // Payload is buf[1..]; look from where the last call stopped
                    // (minus one byte: an END_BLOCK may have been the last byte).
                    let from = 1 + scanned.saturating_sub(1);
                    let mut found = None;
                    for i in from..self.buf.len() {
                        match self.buf[i] {
                            END_BLOCK if i + 1 < self.buf.len() && self.buf[i + 1] == CARRIAGE_RETURN => {
                                found = Some(Found::End(i));
                                break;
                            }
                            START_BLOCK => {
                                found = Some(Found::Restart(i));
                                break;
                            }
                            _ => {}
                        }
                    }
                    match found {
                        Some(Found::End(end)) => {
                            let payload_len = end - 1;
                            if payload_len > self.max_frame_len {
                                self.buf.drain(..end + 2);
                                self.state = State::Idle;
                                return Err(self.too_large());
                            }
                            let payload = self.buf[1..end].to_vec();
                            self.buf.drain(..end + 2);
                            self.state = State::Idle;
                            return Ok(Some(Event::Frame(payload)));
                        }
                        Some(Found::Restart(at)) => {
                            // A sender gave up on a frame and started another.
                            self.buf.drain(..at);
                            self.state = State::InFrame { scanned: 0 };
                            return Ok(Some(Event::Skipped(at)));
                        }
                        None => {
                            let payload_len = self.buf.len() - 1;
                            // A trailing END_BLOCK may be the end block's first byte.
                            let body_len =
                                if self.buf.last() == Some(&END_BLOCK) { payload_len - 1 } else { payload_len };
                            if body_len > self.max_frame_len {
                                let keep_tail = self.buf.last() == Some(&END_BLOCK);
                                self.buf.clear();
                                if keep_tail {
                                    self.buf.push(END_BLOCK);
                                }
                                self.state = State::Discarding;
                                return Err(self.too_large());
                            }
                            self.state = State::InFrame { scanned: payload_len };
                            return Ok(None);
                        }
                    }
                }
                State::Discarding => {
                    let end = self.buf.windows(2).position(|w| w == [END_BLOCK, CARRIAGE_RETURN]);
                    match end {
                        Some(end) => {
                            self.buf.drain(..end + 2);
                            self.state = State::Idle;
                        }
                        None => {
                            let keep_tail = self.buf.last() == Some(&END_BLOCK);
                            self.buf.clear();
                            if keep_tail {
                                self.buf.push(END_BLOCK);
                            }
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Convenience for tests and simple callers: push `bytes`, then drain
    /// every event (errors included, in order).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Event, MllpError>> {
        self.push(bytes);
        let mut events = Vec::new();
        loop {
            match self.next_event() {
                Ok(Some(event)) => events.push(Ok(event)),
                Ok(None) => return events,
                Err(error) => events.push(Err(error)),
            }
        }
    }

    fn too_large(&self) -> MllpError {
        MllpError::FrameTooLarge { limit: self.max_frame_len }
    }
}

enum Found {
    End(usize),
    Restart(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(events: Vec<Result<Event, MllpError>>) -> Vec<Vec<u8>> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Ok(Event::Frame(f)) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_message_split_across_reads_decodes_once() {
        let wire = frame("MSH|^~\\&|A\rPID|1\r");
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for byte in &wire {
            got.extend(frames(decoder.feed(std::slice::from_ref(byte))));
        }
        assert_eq!(got, vec![b"MSH|^~\\&|A\rPID|1\r".to_vec()]);
        assert!(decoder.is_idle());
    }

    #[test]
    fn several_messages_in_one_read_all_decode_in_order() {
        let wire = frame_all(["one", "two", "three"]);
        let mut decoder = Decoder::default();
        assert_eq!(frames(decoder.feed(&wire)), vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn garbage_before_a_start_block_is_skipped_and_reported() {
        let mut wire = b"\r\nnoise".to_vec();
        wire.extend(frame("msg"));
        let mut decoder = Decoder::default();
        assert_eq!(decoder.feed(&wire), vec![Ok(Event::Skipped(7)), Ok(Event::Frame(b"msg".to_vec()))]);
    }

    #[test]
    fn a_new_start_block_abandons_an_unfinished_frame() {
        let mut wire = vec![START_BLOCK];
        wire.extend_from_slice(b"half");
        wire.extend(frame("whole"));
        let mut decoder = Decoder::default();
        assert_eq!(decoder.feed(&wire), vec![Ok(Event::Skipped(5)), Ok(Event::Frame(b"whole".to_vec()))]);
    }

    #[test]
    fn an_end_block_split_between_reads_is_found() {
        let mut decoder = Decoder::default();
        assert!(frames(decoder.feed(&[START_BLOCK, b'a', END_BLOCK])).is_empty());
        assert_eq!(frames(decoder.feed(&[CARRIAGE_RETURN])), vec![b"a".to_vec()]);
    }

    #[test]
    fn a_lone_fs_inside_a_payload_is_payload() {
        let mut decoder = Decoder::default();
        let wire = [START_BLOCK, b'a', END_BLOCK, b'b', END_BLOCK, CARRIAGE_RETURN];
        assert_eq!(frames(decoder.feed(&wire)), vec![vec![b'a', END_BLOCK, b'b']]);
    }

    #[test]
    fn an_oversized_frame_is_a_typed_error_and_the_next_frame_still_decodes() {
        let mut decoder = Decoder::new(8);
        let mut events = decoder.feed(&[START_BLOCK]);
        for _ in 0..100 {
            events.extend(decoder.feed(b"0123456789"));
        }
        assert!(decoder.buffered() <= 1);
        events.extend(decoder.feed(&[END_BLOCK, CARRIAGE_RETURN]));
        events.extend(decoder.feed(&frame("ok")));
        assert_eq!(events, vec![Err(MllpError::FrameTooLarge { limit: 8 }), Ok(Event::Frame(b"ok".to_vec()))]);
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let mut decoder = Decoder::new(3);
        assert_eq!(frames(decoder.feed(&frame("abc"))), vec![b"abc".to_vec()]);
        assert_eq!(decoder.feed(&frame("abcd")), vec![Err(MllpError::FrameTooLarge { limit: 3 })]);
    }
}
