//! RFC 6455 section 5 framing: header parsing and encoding, masking, close payloads.
//!
//! Pure functions over byte slices, no I/O, so the connection, the fuzz target and the unit
//! tests share exactly the same parser.

use bytes::{BufMut, Bytes, BytesMut};

/// Continuation frame opcode.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Largest payload a control frame may carry (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest header: 2 bytes + 8 bytes extended length + 4 bytes mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN bit: last frame of a message.
    pub fin: bool,
    /// RSV1 bit: "compressed" under permessage-deflate.
    pub rsv1: bool,
    /// RSV2 bit (no extension of ours uses it).
    pub rsv2: bool,
    /// RSV3 bit (no extension of ours uses it).
    pub rsv3: bool,
    /// The 4-bit opcode.
    pub opcode: u8,
    /// Masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length as announced (before any size check).
    pub payload_len: u64,
}

/// Why a header could not be parsed from the bytes at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not enough bytes yet; read more and try again.
    Incomplete,
    /// The 64-bit length has its most significant bit set (RFC 6455 5.2).
    LengthOverflow,
}

impl FrameHeader {
    /// Whether this is a control frame (close, ping, pong or a reserved control opcode).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Parses a header from the start of `buf`, returning it and its length in bytes.
    ///
    /// # Errors
    /// [`HeaderError::Incomplete`] when `buf` holds only part of a header.
    pub fn parse(buf: &[u8]) -> Result<(FrameHeader, usize), HeaderError> {
        let [b0, b1, ..] = *buf else {
            return Err(HeaderError::Incomplete);
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => {
                let bytes: [u8; 2] = buf
                    .get(2..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(HeaderError::Incomplete)?;
                (u64::from(u16::from_be_bytes(bytes)), 4)
            }
            127 => {
                let bytes: [u8; 8] = buf
                    .get(2..10)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(HeaderError::Incomplete)?;
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(HeaderError::LengthOverflow);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let key: [u8; 4] = buf
                .get(pos..pos + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or(HeaderError::Incomplete)?;
            pos += 4;
            Some(key)
        } else {
            None
        };
        Ok((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode: b0 & 0x0F,
                mask,
                payload_len,
            },
            pos,
        ))
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        let mut b0 = self.opcode & 0x0F;
        if self.fin {
            b0 |= 0x80;
        }
        if self.rsv1 {
            b0 |= 0x40;
        }
        if self.rsv2 {
            b0 |= 0x20;
        }
        if self.rsv3 {
            b0 |= 0x10;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(b0);
        match self.payload_len {
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n @ 126..=0xFFFF => {
                out.put_u8(mask_bit | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.put_u64(n);
            }
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }
}

/// XORs `data` with `key`, where `data` starts at byte `offset` of the payload.
///
/// Works a word at a time; `offset` lets a payload be unmasked in pieces as it arrives.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut w = [0u8; 4];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Encodes a complete unmasked server frame (header + payload) into one buffer.
pub fn encode_frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        fin: true,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    header.encode(&mut out);
    out.extend_from_slice(payload);
    out.freeze()
}

/// Whether `code` may appear in a close frame received from a peer (RFC 6455 7.4, IANA registry).
///
/// 1004-1006 and 1015 are reserved and never sent on the wire; 1016-2999 are unassigned;
/// 3000-4999 belong to libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What is wrong with a received close payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosePayloadError {
    /// One byte, or a reserved/unassigned code: close 1002.
    Protocol,
    /// The reason is not UTF-8: close 1007.
    InvalidUtf8,
}

/// Parses a received close payload into its code and reason.
///
/// # Errors
/// [`ClosePayloadError`] when the payload violates RFC 6455 5.5.1 / 7.4.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &str), ClosePayloadError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ClosePayloadError::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ClosePayloadError::Protocol);
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| ClosePayloadError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Encodes a close frame; the reason is cut at a character boundary to fit in 123 bytes.
pub fn encode_close(code: Option<u16>, reason: &str) -> Bytes {
    let Some(code) = code else {
        return encode_frame(OP_CLOSE, false, &[]);
    };
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OP_CLOSE, false, &payload[..2 + end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masked_frame(h: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.encode(&mut out);
        let mut body = payload.to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut body, key, 0);
        }
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn parses_rfc_examples() {
        // RFC 6455 5.7: a single-frame masked text message "Hello".
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = FrameHeader::parse(&wire).expect("complete header");
        assert_eq!(n, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OP_TEXT);
        assert_eq!(h.payload_len, 5);
        let mut payload = wire[n..].to_vec();
        apply_mask(&mut payload, h.mask.expect("masked"), 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let full = masked_frame(
            &FrameHeader {
                fin: true,
                rsv1: false,
                rsv2: false,
                rsv3: false,
                opcode: OP_BINARY,
                mask: Some([1, 2, 3, 4]),
                payload_len: 70_000,
            },
            &[],
        );
        for cut in 0..full.len() {
            assert_eq!(
                FrameHeader::parse(&full[..cut]),
                Err(HeaderError::Incomplete)
            );
        }
        assert_eq!(FrameHeader::parse(&full).map(|(_, n)| n), Ok(14));
    }

    #[test]
    fn length_with_top_bit_is_rejected() {
        let wire = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&wire), Err(HeaderError::LengthOverflow));
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok((None, "")));
        assert_eq!(parse_close_payload(&[3]), Err(ClosePayloadError::Protocol));
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, b'o', b'k']),
            Ok((Some(1000), "ok"))
        );
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                parse_close_payload(&bad.to_be_bytes()),
                Err(ClosePayloadError::Protocol),
                "{bad}"
            );
        }
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ClosePayloadError::InvalidUtf8)
        );
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let frame = encode_close(Some(1001), &reason);
        let (h, n) = FrameHeader::parse(&frame).expect("header");
        assert!(h.payload_len <= MAX_CONTROL_PAYLOAD as u64);
        let (code, text) = parse_close_payload(&frame[n..]).expect("valid");
        assert_eq!(code, Some(1001));
        assert_eq!(text.len(), 122);
    }

    proptest! {
        #[test]
        fn header_round_trips(
            fin: bool, rsv1: bool, rsv2: bool, rsv3: bool, opcode in 0u8..16,
            mask: Option<[u8; 4]>, payload_len in prop_oneof![0u64..200, 0u64..70_000, 0u64..(1 << 63)],
        ) {
            let h = FrameHeader { fin, rsv1, rsv2, rsv3, opcode, mask, payload_len };
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(FrameHeader::parse(&out), Ok((h, out.len())));
        }

        #[test]
        fn masking_in_pieces_equals_masking_at_once(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key: [u8; 4],
            cuts in proptest::collection::vec(0usize..300, 0..5),
        ) {
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            bounds.push(0);
            bounds.push(data.len());
            bounds.sort_unstable();
            for w in bounds.windows(2) {
                apply_mask(&mut pieces[w[0]..w[1]], key, w[0]);
            }
            prop_assert_eq!(&whole, &pieces);
            let naive: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            prop_assert_eq!(whole, naive);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::parse(&bytes);
            let _ = parse_close_payload(&bytes);
        }
    }
}
