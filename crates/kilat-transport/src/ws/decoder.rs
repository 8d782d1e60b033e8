//! The sans-I/O read side: bytes in, messages and control frames out.
//!
//! [`Decoder`] owns everything needed to turn client bytes into messages (the frame being
//! received, the fragmented message being assembled, UTF-8 and inflate state) but no socket
//! and no buffer: the caller passes its read buffer to every [`Decoder::step`]. The connection
//! drives it from `poll` functions; the fuzz target drives it directly.

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::{InflateError, Inflater};
use super::frame::{
    ClosePayloadError, FrameHeader, HeaderError, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE,
    OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, apply_mask, parse_close_payload,
};
use super::utf8::Utf8Validator;
use super::{Handshake, Message, Violation, WsConfig};

/// What one [`Decoder::step`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message ([`Message::Text`] or [`Message::Binary`]).
    Message(Message),
    /// A ping with its payload: answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// The peer's close frame (validated): answer with a close and stop reading.
    Close {
        /// The peer's code, if it sent one.
        code: Option<u16>,
        /// The peer's reason.
        reason: String,
    },
    /// Something was consumed (a header, some payload, a pong, a fragment); step again.
    Progress,
    /// The buffer does not hold enough; read more bytes into it and step again.
    NeedBytes,
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct FrameProgress {
    /// Its header (opcode, flags, mask key, length).
    head: FrameHeader,
    /// Payload bytes handled so far: unmasked (and UTF-8 checked) bytes at the front of the
    /// buffer while decoding; bytes thrown away while skipping after a close.
    done: u64,
    /// Whether the payload is plain text to validate as it arrives.
    check_utf8: bool,
}

/// A fragmented data message being assembled.
#[derive(Debug)]
struct Partial {
    /// Text or binary.
    opcode: u8,
    /// Whether its frames are compressed (RSV1 on the first frame).
    compressed: bool,
    /// Wire payload bytes received so far (what the raw size limit counts).
    wire_len: u64,
    /// The message so far (inflated when compressed).
    data: Vec<u8>,
}

/// Decodes client frames into messages, enforcing RFC 6455, RFC 7692 and the size limit.
#[derive(Debug)]
pub struct Decoder {
    /// The frame being received, after its header was parsed.
    frame: Option<FrameProgress>,
    /// The fragmented message being assembled; boxed to keep the idle decoder small.
    message: Option<Box<Partial>>,
    /// UTF-8 state of the text message being received.
    utf8: Utf8Validator,
    /// Decompression of client messages, when permessage-deflate was agreed.
    inflater: Option<Inflater>,
    /// Limit on a message's size (inflated size for compressed ones).
    max_message_size: usize,
}

impl Decoder {
    /// A decoder for a connection set up by `handshake`, with `config`'s size limit.
    pub fn new(handshake: &Handshake, config: &WsConfig) -> Self {
        Decoder {
            frame: None,
            message: None,
            utf8: Utf8Validator::default(),
            inflater: handshake
                .deflate()
                .map(|p| Inflater::new(p.client_window_bits, !p.client_no_context_takeover)),
            max_message_size: config.max_message_size,
        }
    }

    /// Whether no frame or message is in progress (the caller may free its buffer).
    pub fn is_idle(&self) -> bool {
        self.frame.is_none() && self.message.is_none()
    }

    /// How many more bytes the frame in progress needs, to reserve room for them.
    pub fn payload_remaining(&self, buffered: usize) -> usize {
        self.frame.map_or(0, |f| {
            usize::try_from(f.head.payload_len)
                .unwrap_or(usize::MAX)
                .saturating_sub(buffered)
        })
    }

    /// Decodes what `buf` holds: consumes a header, checks newly arrived payload, or
    /// completes a frame. Unconsumed bytes stay in `buf`.
    ///
    /// # Errors
    /// A [`Violation`] as soon as the input breaks the protocol (checked from the header,
    /// before the payload, where possible). Call [`Decoder::start_skipping`] then.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Event, Violation> {
        let Some(frame) = &mut self.frame else {
            let (head, n) = match FrameHeader::parse(buf) {
                Ok(parsed) => parsed,
                Err(HeaderError::Incomplete) => return Ok(Event::NeedBytes),
                Err(HeaderError::LengthOverflow) => {
                    return Err(Violation::Protocol("frame length has its top bit set"));
                }
            };
            buf.advance(n);
            // Recorded before the checks, so that after a violation its payload is skipped.
            self.frame = Some(FrameProgress {
                head,
                done: 0,
                check_utf8: false,
            });
            let check_utf8 = self.check_header(&head)?;
            if let Some(frame) = &mut self.frame {
                frame.check_utf8 = check_utf8;
            }
            return Ok(Event::Progress);
        };

        // Unmask (and check) whatever part of the payload arrived since the last step.
        let len = frame.head.payload_len;
        let available = len.min(buf.len() as u64);
        if frame.done < available {
            let range = frame.done as usize..available as usize;
            if let Some(key) = frame.head.mask {
                apply_mask(&mut buf[range.clone()], key, frame.done as usize);
            }
            if frame.check_utf8 {
                self.utf8
                    .feed(&buf[range])
                    .map_err(|_| Violation::InvalidUtf8)?;
            }
            frame.done = available;
        }
        if frame.done < len {
            return Ok(Event::NeedBytes);
        }
        let head = frame.head;
        self.frame = None;
        let payload = buf.split_to(len as usize);
        self.complete_frame(head, payload)
    }

    /// After a violation or our own close: drops the message in progress and makes
    /// [`Decoder::skip`] discard the current frame from its start.
    pub fn start_skipping(&mut self) {
        if let Some(frame) = &mut self.frame {
            frame.done = 0;
        }
        self.message = None;
        self.utf8 = Utf8Validator::default();
        if let Some(inflater) = &mut self.inflater {
            inflater.end_message(false);
        }
    }

    /// Discards input while waiting for the peer's close. Returns `Some(true)` when a close
    /// frame was passed, `Some(false)` when the input cannot be framed any more, `None` when
    /// more bytes are needed.
    pub fn skip(&mut self, buf: &mut BytesMut) -> Option<bool> {
        loop {
            if let Some(frame) = &mut self.frame {
                let remaining = frame.head.payload_len - frame.done;
                let n = remaining.min(buf.len() as u64);
                buf.advance(n as usize);
                frame.done += n;
                if frame.done < frame.head.payload_len {
                    return None;
                }
                let was_close = frame.head.opcode == OP_CLOSE;
                self.frame = None;
                if was_close {
                    return Some(true);
                }
            }
            match FrameHeader::parse(buf) {
                Ok((head, n)) => {
                    buf.advance(n);
                    self.frame = Some(FrameProgress {
                        head,
                        done: 0,
                        check_utf8: false,
                    });
                }
                Err(HeaderError::Incomplete) => return None,
                Err(HeaderError::LengthOverflow) => return Some(false),
            }
        }
    }

    /// Checks a header against RFC 6455 5.2-5.5 and the size limit before any payload is
    /// read. Returns whether the payload must be UTF-8 checked as it arrives.
    fn check_header(&self, head: &FrameHeader) -> Result<bool, Violation> {
        if head.mask.is_none() {
            return Err(Violation::Protocol("client frame is not masked"));
        }
        if head.rsv2 || head.rsv3 {
            return Err(Violation::Protocol("reserved bits set"));
        }
        let compressed = match head.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !head.fin {
                    return Err(Violation::Protocol("fragmented control frame"));
                }
                if head.rsv1 {
                    return Err(Violation::Protocol("RSV1 set on a control frame"));
                }
                if head.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Violation::Protocol("control frame longer than 125 bytes"));
                }
                return Ok(false);
            }
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(Violation::Protocol(
                        "new data message inside a fragmented message",
                    ));
                }
                if head.rsv1 && self.inflater.is_none() {
                    return Err(Violation::Protocol("RSV1 set without permessage-deflate"));
                }
                head.rsv1
            }
            OP_CONTINUATION => {
                let Some(message) = &self.message else {
                    return Err(Violation::Protocol("continuation frame without a message"));
                };
                if head.rsv1 {
                    return Err(Violation::Protocol("RSV1 set on a continuation frame"));
                }
                message.compressed
            }
            _ => return Err(Violation::Protocol("reserved opcode")),
        };
        // Compressed data may be slightly larger than its inflated form (stored blocks); the
        // real limit on it is applied while inflating.
        let limit = self.max_message_size as u64;
        let wire_limit = if compressed {
            limit + limit / 16 + 1024
        } else {
            limit
        };
        let so_far = self.message.as_ref().map_or(0, |m| m.wire_len);
        if so_far.saturating_add(head.payload_len) > wire_limit {
            return Err(Violation::TooBig {
                limit: self.max_message_size,
            });
        }
        let opcode = match &self.message {
            Some(message) => message.opcode,
            None => head.opcode,
        };
        Ok(opcode == OP_TEXT && !compressed)
    }

    /// Acts on a complete frame whose payload is unmasked.
    fn complete_frame(&mut self, head: FrameHeader, payload: BytesMut) -> Result<Event, Violation> {
        match head.opcode {
            OP_PING => Ok(Event::Ping(payload.freeze())),
            OP_PONG => Ok(Event::Progress),
            OP_CLOSE => {
                let (code, reason) = parse_close_payload(&payload).map_err(|e| match e {
                    ClosePayloadError::Protocol => Violation::Protocol("invalid close payload"),
                    ClosePayloadError::InvalidUtf8 => Violation::InvalidCloseReason,
                })?;
                let reason = reason.to_owned();
                self.start_skipping();
                Ok(Event::Close { code, reason })
            }
            OP_TEXT | OP_BINARY if head.fin && !head.rsv1 => {
                // The common case: a whole message in one plain frame, returned without a copy.
                if head.opcode == OP_TEXT {
                    self.utf8.finish().map_err(|_| Violation::InvalidUtf8)?;
                    Ok(Event::Message(Message::Text(payload.freeze())))
                } else {
                    Ok(Event::Message(Message::Binary(payload.freeze())))
                }
            }
            OP_TEXT | OP_BINARY => {
                let mut message = Box::new(Partial {
                    opcode: head.opcode,
                    compressed: head.rsv1,
                    wire_len: 0,
                    data: Vec::new(),
                });
                self.append(&mut message, &payload)?;
                self.end_frame(message, head.fin)
            }
            _ => {
                // check_header lets a continuation through only when a message is in progress.
                let Some(mut message) = self.message.take() else {
                    return Err(Violation::Protocol("continuation frame without a message"));
                };
                self.append(&mut message, &payload)?;
                self.end_frame(message, head.fin)
            }
        }
    }

    /// Completes the message after its final frame, or keeps it for the next fragment.
    fn end_frame(&mut self, message: Box<Partial>, fin: bool) -> Result<Event, Violation> {
        if fin {
            self.finish(*message).map(Event::Message)
        } else {
            self.message = Some(message);
            Ok(Event::Progress)
        }
    }

    /// Adds one frame's payload to a message, inflating and checking it as needed.
    fn append(&mut self, message: &mut Partial, payload: &[u8]) -> Result<(), Violation> {
        message.wire_len += payload.len() as u64;
        if !message.compressed {
            // Plain text was already UTF-8 checked as it arrived.
            message.data.extend_from_slice(payload);
            return Ok(());
        }
        let before = message.data.len();
        let limit = self.max_message_size;
        let inflater = self
            .inflater
            .as_mut()
            .ok_or(Violation::Protocol("RSV1 set without permessage-deflate"))?;
        inflater
            .inflate(payload, &mut message.data, limit)
            .map_err(|e| inflate_violation(e, limit))?;
        if message.opcode == OP_TEXT {
            self.utf8
                .feed(&message.data[before..])
                .map_err(|_| Violation::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Completes a message after its final frame.
    fn finish(&mut self, mut message: Partial) -> Result<Message, Violation> {
        if message.compressed {
            let before = message.data.len();
            let limit = self.max_message_size;
            if let Some(inflater) = &mut self.inflater {
                inflater
                    .finish(&mut message.data, limit)
                    .map_err(|e| inflate_violation(e, limit))?;
            }
            if message.opcode == OP_TEXT {
                self.utf8
                    .feed(&message.data[before..])
                    .map_err(|_| Violation::InvalidUtf8)?;
            }
        }
        let data = Bytes::from(std::mem::take(&mut message.data));
        if message.opcode == OP_TEXT {
            self.utf8.finish().map_err(|_| Violation::InvalidUtf8)?;
            Ok(Message::Text(data))
        } else {
            Ok(Message::Binary(data))
        }
    }
}

fn inflate_violation(e: InflateError, limit: usize) -> Violation {
    match e {
        InflateError::TooBig => Violation::TooBig { limit },
        InflateError::Corrupt => Violation::BadCompression,
    }
}
