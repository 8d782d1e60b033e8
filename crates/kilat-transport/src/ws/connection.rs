//! One server-side WebSocket connection: reading messages, writing shared frames, closing.
//!
//! All read state lives in [`WsConnection`] and is advanced inside `poll` functions, so
//! `read_message` can be dropped at any await point (it is raced against the write side in
//! `select!`) without losing bytes. While idle the connection owns no heap memory: socket
//! reads go through a stack buffer and the read buffer is only allocated while a frame is in
//! flight, then given back.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kilat_protocol::{EncodingSlot, SharedFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::deflate::{InflateError, Inflater, compressed_frame};
use super::frame::{
    ClosePayloadError, FrameHeader, HeaderError, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE,
    OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, apply_mask, encode_close, encode_frame,
    parse_close_payload,
};
use super::utf8::Utf8Validator;
use super::{Handshake, Message, Violation, WsConfig, WsError};

/// Encoding slot of a plain (uncompressed) text frame.
pub const SLOT_PLAIN: EncodingSlot = EncodingSlot(0);
/// Encoding slot of a text frame compressed with a 15-bit window.
pub const SLOT_DEFLATE_15: EncodingSlot = EncodingSlot(1);
/// Encoding slot of a text frame compressed with a 9-bit window, used for every client that
/// limits our window below 15 bits (a smaller window than allowed is always valid), so all
/// limited clients share one encoding.
pub const SLOT_DEFLATE_9: EncodingSlot = EncodingSlot(2);

/// Size of the on-stack buffer socket reads go through when no frame is in flight.
const STACK_READ: usize = 4096;

/// Largest number of buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Read-side lifecycle.
#[derive(Debug)]
enum State {
    /// Messages flow both ways.
    Open,
    /// The peer's close arrived and our reply is queued; once it is flushed the socket is
    /// shut down and `read_message` returns [`Message::Close`].
    ReplyQueued {
        /// Code of the peer's close, if it had one.
        code: Option<u16>,
        /// Reason of the peer's close.
        reason: String,
    },
    /// We failed the connection; our close frame is queued. `read_message` returns the
    /// violation once the close is flushed.
    Failed(Violation),
    /// We sent a close frame; only [`WsConnection::close`] reads on (discarding data).
    CloseSent,
    /// The close handshake is over or the socket is gone.
    Closed,
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct FrameProgress {
    /// Its header (opcode, flags, mask key, length).
    head: FrameHeader,
    /// Payload bytes handled so far: unmasked (and UTF-8 checked) bytes at the front of
    /// `rbuf` while reading; bytes thrown away while draining after a close.
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

/// What one parsing step achieved.
enum Step {
    /// A complete data message.
    Message(Message),
    /// The peer's close frame arrived (reply queued).
    PeerClosed,
    /// Something was consumed; run another step.
    Progress,
    /// The buffered bytes are not enough; read from the socket.
    NeedBytes,
}

/// One server-side WebSocket connection over any byte stream.
///
/// Reading and writing both take `&mut self`: the connection task owns it and alternates
/// between them in a `select!` where only [`WsConnection::read_message`] is raced.
#[derive(Debug)]
pub struct WsConnection<IO> {
    /// The upgraded socket.
    io: IO,
    /// Bytes read but not consumed: the current frame's payload, perhaps the next header.
    /// Holds no allocation while idle.
    rbuf: BytesMut,
    /// Control frames (pong, close) waiting to be written; written before any data frame.
    wbuf: Vec<u8>,
    /// The frame being received, after its header was parsed.
    frame: Option<FrameProgress>,
    /// The fragmented message being assembled; boxed to keep the idle struct small.
    message: Option<Box<Partial>>,
    /// UTF-8 state of the text message being received.
    utf8: Utf8Validator,
    /// Decompression of client messages, when permessage-deflate was agreed.
    inflater: Option<Inflater>,
    /// Window bits we compress with, when permessage-deflate was agreed.
    server_window_bits: Option<u8>,
    /// Limit on a message's size (inflated size for compressed ones).
    max_message_size: usize,
    /// Text shorter than this is sent uncompressed.
    deflate_min_size: usize,
    /// How long `close` waits for the peer's close.
    close_timeout: Duration,
    /// Where the close handshake stands.
    state: State,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WsConnection<IO> {
    /// Wraps an upgraded socket, applying the handshake's negotiated extension and `config`'s
    /// limits. Allocates nothing.
    pub fn new(io: IO, handshake: &Handshake, config: &WsConfig) -> Self {
        let deflate = handshake.deflate();
        WsConnection {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            frame: None,
            message: None,
            utf8: Utf8Validator::default(),
            inflater: deflate
                .map(|p| Inflater::new(p.client_window_bits, !p.client_no_context_takeover)),
            server_window_bits: deflate.map(|p| p.server_window_bits),
            max_message_size: config.max_message_size,
            deflate_min_size: config.deflate_min_size,
            close_timeout: config.close_timeout,
            state: State::Open,
        }
    }

    /// Reads the next complete data message.
    ///
    /// Pings are answered with pongs and pongs are ignored, internally. When the peer closes,
    /// the reply close frame is sent, the socket shut down, and [`Message::Close`] returned.
    ///
    /// # Errors
    /// - [`WsError::Violation`]: the peer broke the protocol; the matching close frame
    ///   (1002, 1007 or 1009) has been sent. Call [`WsConnection::close`] to finish.
    /// - [`WsError::Eof`]: the socket ended without a close frame.
    /// - [`WsError::Closed`]: the connection was already closing or closed.
    /// - [`WsError::Io`]: the socket failed.
    ///
    /// # Cancel safety
    /// Cancel safe: partial frames stay buffered in `self` and a later call resumes.
    pub async fn read_message(&mut self) -> Result<Message, WsError> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Writes frames as text messages, in order, in vectored writes.
    ///
    /// Each frame's wire bytes come from the frame's encoding cache
    /// ([`SLOT_PLAIN`], [`SLOT_DEFLATE_15`] or [`SLOT_DEFLATE_9`]), so they are computed once for
    /// every connection with the same settings.
    ///
    /// # Errors
    /// Socket errors; `NotConnected` once a close frame was sent.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled write may leave a partial frame on the wire, after which
    /// the connection must be dropped.
    pub async fn send_frames(&mut self, frames: &[SharedFrame]) -> io::Result<()> {
        self.ready_to_send().await?;
        let encoded: Vec<Bytes> = frames.iter().map(|f| self.encode_shared(f)).collect();
        write_all_vectored(&mut self.io, &encoded).await?;
        self.io.flush().await
    }

    /// Sends one text message that is not shared (a reply), compressed under the same rules.
    ///
    /// # Errors
    /// As [`WsConnection::send_frames`].
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`WsConnection::send_frames`].
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.send_data(OP_TEXT, text).await
    }

    /// Sends one binary message, compressed under the same rules as text.
    ///
    /// # Errors
    /// As [`WsConnection::send_frames`].
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`WsConnection::send_frames`].
    pub async fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_data(OP_BINARY, data).await
    }

    /// Closes the connection: sends a close frame with `code` and `reason` (cut to 123 bytes)
    /// unless one was already sent, waits up to the configured close timeout for the peer's
    /// close or EOF (discarding data meanwhile), then shuts the socket down.
    ///
    /// Also the way to finish after [`WsError::Violation`]: the close frame is then already
    /// sent and only the wait and shutdown remain.
    ///
    /// # Errors
    /// Socket errors while sending the close frame or shutting down.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        match self.state {
            State::Closed => return Ok(()),
            State::Open => {
                self.wbuf
                    .extend_from_slice(&encode_close(Some(code), reason));
                self.enter_drain();
            }
            State::ReplyQueued { .. } => {
                // The peer already closed and our reply is queued: send it and finish.
                let result = poll_fn(|cx| self.poll_flush_wbuf(cx)).await;
                self.state = State::Closed;
                result?;
                return self.io.shutdown().await;
            }
            // fail() already set up the drain; a drain cut short by a timeout resumes as is.
            State::Failed(_) | State::CloseSent => self.state = State::CloseSent,
        }
        let timeout = self.close_timeout;
        let drained = tokio::time::timeout(timeout, poll_fn(|cx| self.poll_drain(cx))).await;
        self.state = State::Closed;
        if let Ok(result) = drained {
            result?;
        }
        self.io.shutdown().await
    }

    /// Whether a close frame was sent or the connection is gone.
    pub fn is_closed(&self) -> bool {
        !matches!(self.state, State::Open)
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Flushes queued control frames and checks that data may still be sent.
    async fn ready_to_send(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush_wbuf(cx)).await?;
        if matches!(self.state, State::Open) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "websocket close frame already sent",
            ))
        }
    }

    async fn send_data(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.ready_to_send().await?;
        let frame = match self.server_window_bits {
            Some(bits) if payload.len() >= self.deflate_min_size => {
                compressed_frame(opcode, payload, bits, self.deflate_min_size == 0)
            }
            _ => None,
        };
        match frame {
            Some(frame) => self.io.write_all(&frame).await?,
            None => {
                // Header and payload in one vectored write, without copying the payload.
                let header = FrameHeader {
                    fin: true,
                    rsv1: false,
                    rsv2: false,
                    rsv3: false,
                    opcode,
                    mask: None,
                    payload_len: payload.len() as u64,
                };
                let mut head = Vec::with_capacity(10);
                header.encode(&mut head);
                write_all_vectored(&mut self.io, &[&head[..], payload]).await?;
            }
        }
        self.io.flush().await
    }

    /// The cached wire encoding of a shared frame for this connection's settings.
    fn encode_shared(&self, frame: &SharedFrame) -> Bytes {
        let plain = |json: &[u8]| encode_frame(OP_TEXT, false, json);
        match self.server_window_bits {
            Some(bits) if frame.len() >= self.deflate_min_size => {
                let (slot, bits) = if bits >= 15 {
                    (SLOT_DEFLATE_15, 15)
                } else {
                    (SLOT_DEFLATE_9, 9)
                };
                frame.encoded(slot, |json| {
                    compressed_frame(OP_TEXT, json, bits, self.deflate_min_size == 0)
                        .unwrap_or_else(|| plain(json))
                })
            }
            _ => frame.encoded(SLOT_PLAIN, plain),
        }
    }

    /// Drives reading until a message, a close or an error.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, WsError>> {
        loop {
            // Control replies go out before anything else is read, which also bounds `wbuf`
            // to one frame when the peer does not read.
            ready!(self.poll_flush_wbuf(cx))?;
            match &mut self.state {
                State::Open => {}
                State::ReplyQueued { code, reason } => {
                    let message = Message::Close {
                        code: *code,
                        reason: std::mem::take(reason),
                    };
                    // Best effort: the peer may already be gone, which is fine after a close.
                    let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                    self.state = State::Closed;
                    return Poll::Ready(Ok(message));
                }
                State::Failed(violation) => {
                    let violation = *violation;
                    self.state = State::CloseSent;
                    return Poll::Ready(Err(WsError::Violation(violation)));
                }
                State::CloseSent | State::Closed => return Poll::Ready(Err(WsError::Closed)),
            }
            match self.step() {
                Ok(Step::Message(message)) => {
                    self.release_idle_buffer();
                    return Poll::Ready(Ok(message));
                }
                Ok(Step::PeerClosed | Step::Progress) => {}
                Ok(Step::NeedBytes) => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.state = State::Closed;
                        return Poll::Ready(Err(WsError::Eof));
                    }
                }
                Err(violation) => self.fail(violation),
            }
        }
    }

    /// Queues the close frame for a violation and drops the message in progress.
    fn fail(&mut self, violation: Violation) {
        tracing::debug!(%violation, "failing websocket connection");
        self.wbuf
            .extend_from_slice(&encode_close(Some(violation.close_code()), ""));
        self.message = None;
        if let Some(inflater) = &mut self.inflater {
            inflater.end_message(false);
        }
        self.utf8 = Utf8Validator::default();
        self.enter_drain();
        self.state = State::Failed(violation);
    }

    /// Switches to discarding input after our close frame: the frame in progress is skipped
    /// from its start, all of which is still at the front of `rbuf`.
    fn enter_drain(&mut self) {
        if let Some(frame) = &mut self.frame {
            frame.done = 0;
        }
        self.message = None;
        self.state = State::CloseSent;
    }

    /// Frees the read buffer when it holds nothing, so an idle connection owns no buffer.
    fn release_idle_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// Reads once from the socket into `rbuf`; `Ok(0)` is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() >= STACK_READ {
            // A large frame is expected and room was reserved: read straight into it.
            return tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf);
        }
        self.release_idle_buffer();
        let mut stack = [0u8; STACK_READ];
        let mut buf = ReadBuf::new(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let filled = buf.filled();
        self.rbuf.extend_from_slice(filled);
        Poll::Ready(Ok(filled.len()))
    }

    /// Writes out queued control frames.
    fn poll_flush_wbuf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.wbuf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.drain(..n);
        }
        self.wbuf = Vec::new();
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// After our close frame: discards input until the peer's close frame or EOF.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_flush_wbuf(cx))?;
            if let Some(frame) = &mut self.frame {
                let remaining = frame.head.payload_len - frame.done;
                let skip = remaining.min(self.rbuf.len() as u64);
                self.rbuf.advance(skip as usize);
                frame.done += skip;
                if frame.done == frame.head.payload_len {
                    let was_close = frame.head.opcode == OP_CLOSE;
                    self.frame = None;
                    if was_close {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
            } else {
                match FrameHeader::parse(&self.rbuf) {
                    Ok((head, n)) => {
                        self.rbuf.advance(n);
                        self.frame = Some(FrameProgress {
                            head,
                            done: 0,
                            check_utf8: false,
                        });
                        continue;
                    }
                    Err(HeaderError::Incomplete) => {}
                    Err(HeaderError::LengthOverflow) => return Poll::Ready(Ok(())),
                }
            }
            // Keep at most a small buffer while discarding.
            if self.rbuf.is_empty() {
                self.rbuf = BytesMut::new();
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Parses what is buffered: a header, more payload, or a complete frame.
    fn step(&mut self) -> Result<Step, Violation> {
        let Some(frame) = &mut self.frame else {
            let (head, n) = match FrameHeader::parse(&self.rbuf) {
                Ok(parsed) => parsed,
                Err(HeaderError::Incomplete) => return Ok(Step::NeedBytes),
                Err(HeaderError::LengthOverflow) => {
                    return Err(Violation::Protocol("frame length has its top bit set"));
                }
            };
            self.rbuf.advance(n);
            self.frame = Some(FrameProgress {
                head,
                done: 0,
                check_utf8: false,
            });
            let check_utf8 = self.check_header(&head)?;
            if let Some(frame) = &mut self.frame {
                frame.check_utf8 = check_utf8;
            }
            // The size was checked: reserve the whole payload now so big frames are read
            // straight into place.
            let wanted = usize::try_from(head.payload_len).unwrap_or(usize::MAX);
            self.rbuf.reserve(wanted.saturating_sub(self.rbuf.len()));
            return Ok(Step::Progress);
        };

        // Unmask (and check) whatever part of the payload has arrived since the last step.
        let len = frame.head.payload_len;
        let available = len.min(self.rbuf.len() as u64);
        if frame.done < available {
            let range = frame.done as usize..available as usize;
            if let Some(key) = frame.head.mask {
                apply_mask(&mut self.rbuf[range.clone()], key, frame.done as usize);
            }
            if frame.check_utf8 {
                self.utf8
                    .feed(&self.rbuf[range])
                    .map_err(|_| Violation::InvalidUtf8)?;
            }
            frame.done = available;
        }
        if frame.done < len {
            return Ok(Step::NeedBytes);
        }
        let head = frame.head;
        self.frame = None;
        let payload = self.rbuf.split_to(len as usize);
        self.complete_frame(head, payload)
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
    fn complete_frame(&mut self, head: FrameHeader, payload: BytesMut) -> Result<Step, Violation> {
        match head.opcode {
            OP_PING => {
                self.wbuf
                    .extend_from_slice(&encode_frame(OP_PONG, false, &payload));
                Ok(Step::Progress)
            }
            OP_PONG => Ok(Step::Progress),
            OP_CLOSE => {
                let (code, reason) = parse_close_payload(&payload).map_err(|e| match e {
                    ClosePayloadError::Protocol => Violation::Protocol("invalid close payload"),
                    ClosePayloadError::InvalidUtf8 => Violation::InvalidCloseReason,
                })?;
                // Echo the peer's code (RFC 6455 5.5.1); a close without code gets 1000.
                self.wbuf
                    .extend_from_slice(&encode_close(Some(code.unwrap_or(1000)), ""));
                self.state = State::ReplyQueued {
                    code,
                    reason: reason.to_owned(),
                };
                self.message = None;
                Ok(Step::PeerClosed)
            }
            OP_TEXT | OP_BINARY if head.fin && !head.rsv1 => {
                // The common case: a whole message in one plain frame, returned without a copy.
                if head.opcode == OP_TEXT {
                    self.utf8.finish().map_err(|_| Violation::InvalidUtf8)?;
                    Ok(Step::Message(Message::Text(payload.freeze())))
                } else {
                    Ok(Step::Message(Message::Binary(payload.freeze())))
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
                if head.fin {
                    self.finish(*message).map(Step::Message)
                } else {
                    self.message = Some(message);
                    Ok(Step::Progress)
                }
            }
            _ => {
                // check_header only lets a continuation through when a message is in progress.
                let Some(mut message) = self.message.take() else {
                    return Err(Violation::Protocol("continuation frame without a message"));
                };
                self.append(&mut message, &payload)?;
                if head.fin {
                    self.finish(*message).map(Step::Message)
                } else {
                    self.message = Some(message);
                    Ok(Step::Progress)
                }
            }
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

/// Writes every buffer, in order, with as few vectored writes as the socket allows.
async fn write_all_vectored<IO, B>(io: &mut IO, bufs: &[B]) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
    B: AsRef<[u8]>,
{
    let mut index = 0;
    let mut offset = 0;
    while index < bufs.len() {
        let slices: Vec<io::IoSlice<'_>> = bufs[index..]
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(i, b)| {
                let b = b.as_ref();
                io::IoSlice::new(if i == 0 { &b[offset..] } else { b })
            })
            .collect();
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        drop(slices);
        // Advance past what was written (empty buffers are stepped over).
        while index < bufs.len() {
            let left = bufs[index].as_ref().len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}
