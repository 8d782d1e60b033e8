//! permessage-deflate (RFC 7692) compression and decompression on flate2's zlib-rs backend.
//!
//! The server always compresses with no context takeover, so a compressed message depends only
//! on its bytes, the level and the window bits: it can be computed once and shared by every
//! connection with the same window. Compressors therefore live in a thread-local cache (one per
//! window size, reset between messages), never in a connection.
//!
//! Decompressors: a client with context takeover needs its own, kept for the whole connection
//! (allocated on its first compressed message). A client without context takeover borrows one
//! from a small thread-local pool for the length of a message and gives it back, so an idle
//! connection holds no inflate state at all.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::FrameHeader;

/// The 4 bytes a sync flush ends with; removed after compressing, added back before inflating
/// (RFC 7692 7.2.1 and 7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Compression level for outgoing messages: fast, most of the gain on JSON.
const LEVEL: u32 = 3;

/// Decompressors kept per thread for clients without context takeover.
const POOL_SIZE: usize = 8;

/// Room reserved before the compressed bytes for the largest unmasked server header.
const HEADER_ROOM: usize = 10;

thread_local! {
    /// One compressor per window size 9..=15, created on first use and reset per message.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    /// Spare 15-bit decompressors for messages from clients without context takeover. Boxed
    /// because connections hold them as `Option<Box<_>>` (8 bytes while idle).
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Decompress>>> = const { RefCell::new(Vec::new()) };
}

/// Encodes a complete server frame whose payload is `payload` compressed with `window_bits`
/// (clamped to 9..=15), with RSV1 set, or `None` if compression would not make it smaller
/// (unless `always`).
pub(crate) fn compressed_frame(
    opcode: u8,
    payload: &[u8],
    window_bits: u8,
    always: bool,
) -> Option<Bytes> {
    let bits = window_bits.clamp(9, 15);
    let mut out = Vec::with_capacity(HEADER_ROOM + payload.len() / 2 + 64);
    out.resize(HEADER_ROOM, 0);
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let compressor = compressors[usize::from(bits - 9)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
        });
        // One reset per message, before it: whatever the last message left (even a failed,
        // half-used stream) is cleared. A reset clears a 64 KiB hash table, measurable next to
        // deflating a short message, so it is not repeated after.
        compressor.reset();
        deflate_sync(compressor, payload, &mut out)
    })?;
    if !out.ends_with(&SYNC_TAIL) {
        return None;
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    let compressed_len = out.len() - HEADER_ROOM;
    if !always && compressed_len >= payload.len() {
        return None;
    }
    let header = FrameHeader {
        fin: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
        payload_len: compressed_len as u64,
    };
    let mut head = Vec::with_capacity(HEADER_ROOM);
    header.encode(&mut head);
    let start = HEADER_ROOM - head.len();
    out[start..HEADER_ROOM].copy_from_slice(&head);
    Some(Bytes::from(out).slice(start..))
}

/// Compresses all of `input` into `out` and sync-flushes.
fn deflate_sync(compressor: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(256));
        }
        let before_in = compressor.total_in();
        compressor
            .compress_vec(input, out, FlushCompress::Sync)
            .ok()?;
        let consumed = usize::try_from(compressor.total_in() - before_in).ok()?;
        input = input.get(consumed..)?;
        // Done once all input is in and the flush did not fill the output.
        if input.is_empty() && out.len() < out.capacity() {
            return Some(());
        }
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The inflated message would exceed the size limit.
    TooBig,
    /// The data is not a valid deflate stream.
    Corrupt,
}

/// The inflate side of one connection.
#[derive(Debug)]
pub(crate) struct Inflater {
    /// The decompressor in use: kept across messages under context takeover, borrowed from
    /// the thread-local pool for one message otherwise. `None` while idle without takeover.
    decompress: Option<Box<Decompress>>,
    /// Window bits the client compresses with (decompressor size under context takeover).
    window_bits: u8,
    /// Whether the client keeps its LZ77 window between messages.
    context_takeover: bool,
}

impl Inflater {
    /// An inflater for a connection; allocates nothing until the first compressed message.
    pub(crate) fn new(window_bits: u8, context_takeover: bool) -> Self {
        Inflater {
            decompress: None,
            window_bits: window_bits.clamp(9, 15),
            context_takeover,
        }
    }

    /// Inflates the next piece of a message into `out`, which must stay at most `limit` bytes.
    ///
    /// # Errors
    /// [`InflateError`] for corrupt data or an oversized result (a deflate bomb stops here,
    /// after at most `limit` plus one chunk of output).
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let d = match &mut self.decompress {
            Some(d) => d,
            slot @ None => slot.insert(if self.context_takeover {
                Box::new(Decompress::new_with_window_bits(false, self.window_bits))
            } else {
                POOL.with(|pool| pool.borrow_mut().pop())
                    .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, 15)))
            }),
        };
        run_inflate(d, input, out, limit)
    }

    /// Ends a message: appends the sync tail and, without context takeover, returns the
    /// decompressor to the pool.
    ///
    /// # Errors
    /// As [`Inflater::inflate`].
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let result = self.inflate(&SYNC_TAIL, out, limit);
        self.end_message(result.is_ok());
        result
    }

    /// Forgets the current message (after an error, or when it completed).
    pub(crate) fn end_message(&mut self, clean: bool) {
        if self.context_takeover && clean {
            return;
        }
        if let Some(mut d) = self.decompress.take()
            && !self.context_takeover
        {
            d.reset(false);
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_SIZE {
                    pool.push(d);
                }
            });
        }
    }
}

/// Feeds `input` through `d`, appending to `out` while enforcing `limit`.
fn run_inflate(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), InflateError> {
    const CHUNK: usize = 32 * 1024;
    loop {
        if out.len() == out.capacity() {
            // Room for one byte past the limit, so an oversized message is detected.
            let room = (limit + 1).saturating_sub(out.len()).clamp(1, CHUNK);
            out.reserve(room);
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::None)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > limit {
            return Err(InflateError::TooBig);
        }
        let consumed =
            usize::try_from(d.total_in() - before_in).map_err(|_| InflateError::Corrupt)?;
        let produced = d.total_out() - before_out;
        input = input.get(consumed..).ok_or(InflateError::Corrupt)?;
        match status {
            Status::StreamEnd => {
                // A final block (BFINAL) ends the stream; anything after starts a new one.
                d.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
            }
            Status::Ok | Status::BufError => {
                if input.is_empty() && out.len() < out.capacity() {
                    return Ok(());
                }
                if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                    return Err(InflateError::Corrupt);
                }
            }
        }
    }
}

/// Compresses a text payload for the given window, or frames it plain when that is smaller.
#[cfg(test)]
mod tests {
    use super::super::frame::OP_TEXT;
    use super::*;

    /// Compresses a text payload for the given window, or frames it plain when that is smaller.
    fn text_frame(payload: &[u8], window_bits: u8) -> Bytes {
        compressed_frame(OP_TEXT, payload, window_bits, false)
            .unwrap_or_else(|| super::super::frame::encode_frame(OP_TEXT, false, payload))
    }
    use proptest::prelude::*;

    fn inflate_frame(frame: &[u8], bits: u8, limit: usize) -> Result<Vec<u8>, InflateError> {
        let (h, n) = FrameHeader::parse(frame).expect("header");
        let mut inflater = Inflater::new(bits, false);
        let mut out = Vec::new();
        if !h.rsv1 {
            return Ok(frame[n..].to_vec());
        }
        inflater.inflate(&frame[n..], &mut out, limit)?;
        inflater.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    fn rfc_7692_hello_example() {
        // RFC 7692 7.2.3.1: "Hello" compressed without context takeover.
        let mut inflater = Inflater::new(15, false);
        let mut out = Vec::new();
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .expect("inflate");
        inflater.finish(&mut out, 100).expect("finish");
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn small_window_round_trips() {
        let text = "abcdefghij".repeat(200);
        for bits in 8..=15 {
            let frame = text_frame(text.as_bytes(), bits);
            assert!(frame.len() < text.len(), "compressed at {bits}");
            assert_eq!(
                inflate_frame(&frame, bits, 1 << 20).expect("inflate"),
                text.as_bytes()
            );
        }
    }

    #[test]
    fn incompressible_data_is_sent_plain() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(compressed_frame(OP_TEXT, &[b'x'; 3], 15, false).is_none());
        assert!(compressed_frame(OP_TEXT, &data, 15, false).is_none());
        let forced = compressed_frame(OP_TEXT, &data, 15, true).expect("forced");
        assert_eq!(inflate_frame(&forced, 15, 1000).expect("inflate"), data);
        let empty = compressed_frame(OP_TEXT, b"", 15, true).expect("forced");
        assert_eq!(inflate_frame(&empty, 15, 1000).expect("inflate"), b"");
    }

    #[test]
    fn deflate_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let frame = compressed_frame(OP_TEXT, &zeros, 15, false).expect("compresses well");
        assert!(frame.len() < 20_000);
        assert_eq!(
            inflate_frame(&frame, 15, 64 * 1024),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inflater = Inflater::new(15, true);
        let mut out = Vec::new();
        let r = inflater
            .inflate(&[0xFF, 0xFF, 0xFF, 0xFF], &mut out, 1000)
            .and_then(|()| inflater.finish(&mut out, 1000));
        assert_eq!(r, Err(InflateError::Corrupt));
    }

    #[test]
    fn context_takeover_keeps_the_window() {
        // Compress two messages with one stream, as a client with context takeover would.
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut inflater = Inflater::new(15, true);
        for _ in 0..3 {
            let mut wire = Vec::with_capacity(1000);
            deflate_sync(&mut c, b"the same words again and again", &mut wire).expect("deflate");
            wire.truncate(wire.len() - 4);
            let mut out = Vec::new();
            inflater.inflate(&wire, &mut out, 1000).expect("inflate");
            inflater.finish(&mut out, 1000).expect("finish");
            assert_eq!(out, b"the same words again and again");
        }
    }

    proptest! {
        #[test]
        fn compress_round_trips(data in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..3000), bits in 8u8..=15) {
            let frame = compressed_frame(OP_TEXT, &data, bits, false);
            if let Some(frame) = frame {
                prop_assert_eq!(inflate_frame(&frame, bits, 1 << 20).expect("inflate"), data);
            }
        }
    }
}
