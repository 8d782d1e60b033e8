//! The shared, pre-encoded server frame behind encode-once fan-out.
//!
//! A publication is serialised to its JSON push frame exactly once. Every subscriber's queue
//! receives a clone of the same [`SharedFrame`] (an `Arc` bump). Each transport derives its own
//! wire bytes from the JSON (a WebSocket header, a compressed WebSocket frame, an SSE `data:`
//! event) at most once per frame, cached in a slot of the frame, so a thousand subscribers on
//! the same transport settings cost one encoding, not a thousand.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

/// Number of per-transport encoding slots a frame carries.
pub const ENCODING_SLOTS: usize = 12;

/// Which cached wire encoding of a frame a transport asks for.
///
/// The numbering is owned by the transports; the protocol crate only guarantees that a slot
/// index below [`ENCODING_SLOTS`] is valid and that one slot is computed at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncodingSlot(pub u8);

struct Inner {
    /// The frame as JSON text (one frame, or several separated by `\n`), with no trailing newline.
    json: Bytes,
    /// Lazily computed transport encodings, indexed by [`EncodingSlot`].
    encodings: [OnceLock<Bytes>; ENCODING_SLOTS],
    /// A reply to one client's own command (see [`SharedFrame::reply`]).
    reply: bool,
    /// When a publication's push was encoded, for the publish-to-write latency metric (set by
    /// [`SharedFrame::stamped`]; once per publication, not per subscriber).
    stamp: Option<Instant>,
}

/// One server frame, serialised once and shared by every connection that sends it.
#[derive(Clone)]
pub struct SharedFrame(Arc<Inner>);

impl SharedFrame {
    /// Wraps already-serialised JSON text.
    pub fn new(json: impl Into<Bytes>) -> Self {
        SharedFrame(Arc::new(Inner {
            json: json.into(),
            encodings: Default::default(),
            reply: false,
            stamp: None,
        }))
    }

    /// Wraps the JSON text of a reply to a client's own command. A write queue does not count a
    /// reply that is being written as the client being slow: a large history page or recovery
    /// must not look like a consumer falling behind (issue 20).
    pub fn reply(json: impl Into<Bytes>) -> Self {
        SharedFrame(Arc::new(Inner {
            json: json.into(),
            encodings: Default::default(),
            reply: true,
            stamp: None,
        }))
    }

    /// Whether this frame is a reply (made by [`SharedFrame::reply`]).
    pub fn is_reply(&self) -> bool {
        self.0.reply
    }

    /// Wraps already-serialised JSON text with the instant its publication reached the hub, so
    /// a transport can measure how long the push took to reach the socket.
    pub fn stamped(json: impl Into<Bytes>, at: Instant) -> Self {
        SharedFrame(Arc::new(Inner {
            json: json.into(),
            encodings: Default::default(),
            reply: false,
            stamp: Some(at),
        }))
    }

    /// When the frame was stamped (see [`SharedFrame::stamped`]).
    pub fn stamp(&self) -> Option<Instant> {
        self.0.stamp
    }

    /// The frame's JSON text.
    pub fn json(&self) -> &Bytes {
        &self.0.json
    }

    /// Length of the JSON text in bytes; what write queues count against their limit.
    pub fn len(&self) -> usize {
        self.0.json.len()
    }

    /// Whether the JSON text is empty (never true for a real frame).
    pub fn is_empty(&self) -> bool {
        self.0.json.is_empty()
    }

    /// The encoding in `slot`, computed from the JSON by `encode` the first time it is asked for.
    ///
    /// Concurrent callers for the same slot race to compute; exactly one result is kept and every
    /// caller gets that one.
    ///
    /// # Panics
    /// If `slot.0 as usize >= ENCODING_SLOTS` (a transport bug, not an input error).
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&[u8]) -> Bytes) -> Bytes {
        self.0.encodings[slot.0 as usize]
            .get_or_init(|| encode(&self.0.json))
            .clone()
    }
}

impl fmt::Debug for SharedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFrame")
            .field("json", &String::from_utf8_lossy(&self.0.json))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_computed_once_per_slot() {
        let frame = SharedFrame::new(&b"{\"push\":{}}"[..]);
        let copy = frame.clone();
        let mut calls = 0;
        let a = frame.encoded(EncodingSlot(1), |j| {
            calls += 1;
            Bytes::copy_from_slice(j)
        });
        let b = copy.encoded(EncodingSlot(1), |_| unreachable!("slot 1 already encoded"));
        assert_eq!(calls, 1);
        assert_eq!(a, b);
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the cached bytes are shared, not copied"
        );
    }
}
