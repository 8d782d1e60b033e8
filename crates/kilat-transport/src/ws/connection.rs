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

use bytes::{Bytes, BytesMut};
use kilat_protocol::{Encoding, EncodingSlot, SharedFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::decoder::{Decoder, Event};
use super::deflate::compressed_frame;
use super::frame::{FrameHeader, OP_BINARY, OP_PONG, OP_TEXT, encode_close, encode_frame};
use super::{CLOSE_NORMAL, Handshake, Message, Violation, WsConfig, WsError};

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
    /// Frame and message state of the read side (sans I/O).
    decoder: Decoder,
    /// Window bits we compress with, when permessage-deflate was agreed.
    server_window_bits: Option<u8>,
    /// The protocol encoding agreed in the handshake: JSON frames go out as text messages,
    /// MessagePack frames as binary messages.
    encoding: Encoding,
    /// Ping frames since the last message: past [`super::MAX_PINGS_BETWEEN_MESSAGES`] the peer is
    /// closed with 1008 (issue 20). Sits in what would be padding.
    pings_since_message: u16,
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
            decoder: Decoder::new(handshake, config),
            server_window_bits: deflate.map(|p| p.server_window_bits),
            encoding: handshake.encoding(),
            pings_since_message: 0,
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

    /// Writes already framed WebSocket messages (each a complete, uncompressed frame from
    /// [`super::frame::encode_frame`]), in order, in vectored writes: for protocol adapters that
    /// cache their own encoding of a shared frame (the Pusher endpoint).
    ///
    /// # Errors
    /// As [`WsConnection::send_frames`].
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`WsConnection::send_frames`].
    pub async fn send_encoded(&mut self, frames: &[Bytes]) -> io::Result<()> {
        self.ready_to_send().await?;
        write_all_vectored(&mut self.io, frames).await?;
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
                self.decoder.start_skipping();
                self.state = State::CloseSent;
            }
            State::ReplyQueued { .. } => {
                // The peer already closed and our reply is queued: send it and finish.
                let result = poll_fn(|cx| self.poll_flush_wbuf(cx)).await;
                self.state = State::Closed;
                result?;
                return self.io.shutdown().await;
            }
            // fail() already started skipping; a drain cut short by a timeout resumes as is.
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

    /// The protocol encoding this connection speaks.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The cached wire encoding of a shared frame for this connection's settings.
    fn encode_shared(&self, frame: &SharedFrame) -> Bytes {
        if self.encoding == Encoding::Msgpack {
            return self.encode_shared_binary(frame);
        }
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

    /// The cached binary WebSocket frame of a shared frame's MessagePack encoding (itself cached
    /// once per frame, see [`crate::binary::msgpack`]).
    fn encode_shared_binary(&self, frame: &SharedFrame) -> Bytes {
        use crate::binary::{SLOT_WS_BINARY, SLOT_WS_BINARY_DEFLATE_9, SLOT_WS_BINARY_DEFLATE_15};
        let plain = |packed: &[u8]| encode_frame(OP_BINARY, false, packed);
        match self.server_window_bits {
            Some(bits) if frame.len() >= self.deflate_min_size => {
                let (slot, bits) = if bits >= 15 {
                    (SLOT_WS_BINARY_DEFLATE_15, 15)
                } else {
                    (SLOT_WS_BINARY_DEFLATE_9, 9)
                };
                frame.encoded(slot, |_| {
                    let packed = crate::binary::msgpack(frame);
                    compressed_frame(OP_BINARY, &packed, bits, self.deflate_min_size == 0)
                        .unwrap_or_else(|| plain(&packed))
                })
            }
            _ => frame.encoded(SLOT_WS_BINARY, |_| plain(&crate::binary::msgpack(frame))),
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
            match self.decoder.step(&mut self.rbuf) {
                Ok(Event::Message(message)) => {
                    self.pings_since_message = 0;
                    self.release_idle_buffer();
                    return Poll::Ready(Ok(message));
                }
                Ok(Event::Ping(_))
                    if self.pings_since_message >= super::MAX_PINGS_BETWEEN_MESSAGES =>
                {
                    self.fail(Violation::PingFlood);
                }
                Ok(Event::Ping(payload)) => {
                    self.pings_since_message += 1;
                    self.wbuf
                        .extend_from_slice(&encode_frame(OP_PONG, false, &payload));
                }
                Ok(Event::Close { code, reason }) => {
                    // Echo the peer's code (RFC 6455 5.5.1); a close without code gets 1000.
                    self.wbuf
                        .extend_from_slice(&encode_close(Some(code.unwrap_or(CLOSE_NORMAL)), ""));
                    self.state = State::ReplyQueued { code, reason };
                }
                Ok(Event::Progress) => {}
                Ok(Event::NeedBytes) => {
                    // The frame's size was checked: reserve its whole payload so big frames
                    // are read straight into place.
                    let remaining = self.decoder.payload_remaining(self.rbuf.len());
                    self.rbuf.reserve(remaining);
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.state = State::Closed;
                        return Poll::Ready(Err(WsError::Eof));
                    }
                }
                Err(violation) => self.fail(violation),
            }
        }
    }

    /// Queues the close frame for a violation and starts skipping input.
    fn fail(&mut self, violation: Violation) {
        tracing::debug!(%violation, "failing websocket connection");
        self.wbuf
            .extend_from_slice(&encode_close(Some(violation.close_code()), ""));
        self.decoder.start_skipping();
        self.state = State::Failed(violation);
    }

    /// Frees the read buffer when it holds nothing, so an idle connection owns no buffer.
    ///
    /// Capacity is no test: after the last message was split off, `rbuf` may have none left
    /// and still share (and keep alive) the allocation the message was read into.
    fn release_idle_buffer(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// Reads once from the socket into `rbuf`; `Ok(0)` is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.decoder.payload_remaining(0) == 0 {
            // Between frames: nothing reserved is worth keeping while we wait.
            self.release_idle_buffer();
        }
        if self.rbuf.capacity() - self.rbuf.len() >= STACK_READ {
            // A large frame is expected and room was reserved: read straight into it.
            return tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf);
        }
        // Uninitialised: zeroing 4 KiB on every poll (most find nothing to read) was the largest
        // single cost per delivery under callgrind.
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut buf = ReadBuf::uninit(&mut stack);
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
            if self.decoder.skip(&mut self.rbuf).is_some() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::super::frame::{OP_CLOSE, OP_CONTINUATION, OP_PING, apply_mask};
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn handshake(deflate: bool) -> Handshake {
        Handshake::for_offer(
            deflate.then_some("permessage-deflate"),
            &WsConfig::default(),
        )
    }

    /// A frame sent to many MessagePack connections is transcoded once and framed once per
    /// setting: every connection writes the same cached bytes, and JSON connections keep theirs.
    #[tokio::test]
    async fn binary_connections_share_one_encoding_per_frame() {
        let frame = SharedFrame::new(
            &br#"{"push":{"channel":"c","pub":{"data":{"x":[1,2,3]},"offset":7}}}"#[..],
        );
        let mut outputs = Vec::new();
        for (encoding, deflate) in [
            (Encoding::Msgpack, false),
            (Encoding::Msgpack, false),
            (Encoding::Json, false),
            (Encoding::Msgpack, true),
        ] {
            let (server_io, mut client) = tokio::io::duplex(1 << 16);
            let mut hs = handshake(deflate);
            if encoding == Encoding::Msgpack {
                hs.set_subprotocol("kilat.msgpack", Encoding::Msgpack);
            }
            let mut conn = WsConnection::new(server_io, &hs, &WsConfig::default());
            assert_eq!(conn.encoding(), encoding);
            conn.send_frames(std::slice::from_ref(&frame))
                .await
                .expect("send");
            drop(conn);
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.expect("read");
            outputs.push(wire);
        }
        let packed = crate::binary::msgpack(&frame);
        let mut expected = vec![0x82, packed.len() as u8];
        expected.extend_from_slice(&packed);
        assert_eq!(
            outputs[0], expected,
            "an unmasked binary frame of the MessagePack"
        );
        assert_eq!(outputs[1], outputs[0]);
        assert_eq!(outputs[2][0], 0x81, "JSON connections still get text");
        assert_eq!(&outputs[2][2..], frame.json().as_ref());
        assert_eq!(
            outputs[3][0] & 0x0f,
            0x02,
            "compressed binary is still binary"
        );
        // Cached: the slot hands out the same allocation every time.
        let again = frame.encoded(crate::binary::SLOT_WS_BINARY, |_| unreachable!("cached"));
        assert_eq!(again.as_ref(), &expected[..]);
        assert_eq!(
            crate::binary::msgpack(&frame).as_ptr(),
            packed.as_ptr(),
            "transcoded once"
        );
    }

    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let head = FrameHeader {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        head.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    /// Runs `wire` through a connection, delivered in chunks cut at `cuts`; returns the
    /// messages read until the connection errors, and what the server wrote back.
    fn run(wire: &[u8], cuts: &[usize], deflate: bool) -> (Vec<Message>, Option<String>, Vec<u8>) {
        // Paused clock: the 5 ms timeout below fires only once the runtime has nothing left
        // to do, i.e. exactly when the read is stalled waiting for bytes. Deterministic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (server_io, mut client): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 20);
            let mut conn = WsConnection::new(server_io, &handshake(deflate), &WsConfig::default());
            let mut bounds: Vec<usize> = cuts.iter().map(|c| (*c).min(wire.len())).collect();
            bounds.push(0);
            bounds.push(wire.len());
            bounds.sort_unstable();
            let mut messages = Vec::new();
            let mut error = None;
            for w in bounds.windows(2) {
                client.write_all(&wire[w[0]..w[1]]).await.expect("write");
                // Read until this chunk is used up (the read is cancelled when it stalls).
                loop {
                    let read = tokio::time::timeout(Duration::from_millis(5), conn.read_message());
                    match read.await {
                        Ok(Ok(m)) => {
                            let closed = matches!(m, Message::Close { .. });
                            messages.push(m);
                            if closed {
                                error = Some("closed by peer".to_owned());
                                break;
                            }
                        }
                        Ok(Err(e)) => {
                            error = Some(e.to_string());
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if error.is_some() {
                    break;
                }
            }
            drop(conn);
            let mut back = Vec::new();
            let _ = client.read_to_end(&mut back).await;
            (messages, error, back)
        })
    }

    /// Issue 20: a ping flood is closed with 1008; pings between messages are fine.
    #[test]
    fn a_ping_flood_is_closed_with_policy_violation() {
        let limit = usize::from(super::super::MAX_PINGS_BETWEEN_MESSAGES);
        let mut wire = Vec::new();
        for _ in 0..limit {
            wire.extend(client_frame(true, OP_PING, b"p", [1, 2, 3, 4]));
        }
        wire.extend(client_frame(true, OP_TEXT, b"{}", [1, 2, 3, 4]));
        for _ in 0..=limit {
            wire.extend(client_frame(true, OP_PING, b"p", [1, 2, 3, 4]));
        }
        let (messages, error, back) = run(&wire, &[], false);
        assert_eq!(messages.len(), 1, "the message between the bursts arrives");
        assert!(error.is_some(), "the second burst ends the connection");
        let close = encode_close(Some(super::super::CLOSE_POLICY), "");
        assert!(back.ends_with(&close), "closed with 1008");
    }

    #[test]
    fn pings_are_answered_and_close_is_echoed() {
        let mut wire = client_frame(true, OP_PING, b"abc", [9, 8, 7, 6]);
        wire.extend(client_frame(
            true,
            OP_CLOSE,
            &[0x0F, 0xA0, b'x'],
            [1, 1, 1, 1],
        ));
        let (messages, error, back) = run(&wire, &[], false);
        assert_eq!(
            messages,
            vec![Message::Close {
                code: Some(4000),
                reason: "x".into()
            }]
        );
        assert_eq!(error.as_deref(), Some("closed by peer"));
        let mut expected = encode_frame(OP_PONG, false, b"abc").to_vec();
        expected.extend_from_slice(&encode_close(Some(4000), ""));
        assert_eq!(back, expected);
    }

    #[test]
    fn idle_connection_holds_no_buffers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (server_io, mut client) = tokio::io::duplex(1 << 16);
            let mut conn = WsConnection::new(server_io, &handshake(true), &WsConfig::default());
            client
                .write_all(&client_frame(true, OP_TEXT, &[b'a'; 3000], [1, 2, 3, 4]))
                .await
                .expect("write");
            let message = conn.read_message().await.expect("message");
            assert_eq!(message, Message::Text(vec![b'a'; 3000].into()));
            assert_eq!(conn.rbuf.capacity(), 0);
            let Message::Text(text) = message else {
                unreachable!("checked above")
            };
            assert!(
                text.is_unique(),
                "the read buffer still shares the message's allocation"
            );
            assert_eq!(conn.wbuf.capacity(), 0);
            assert!(conn.decoder.is_idle());
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fragmented_messages_round_trip(
            texts in proptest::collection::vec("\\PC{0,40}", 1..4),
            fragments in 1usize..5,
            keys in proptest::collection::vec(any::<[u8; 4]>(), 20),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
            ping_between in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            let mut k = keys.iter().cycle();
            for text in &texts {
                let bytes = text.as_bytes();
                let size = bytes.len().div_ceil(fragments).max(1);
                let pieces: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(size).collect() };
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                    let key = *k.next().expect("cycle");
                    wire.extend(client_frame(i + 1 == pieces.len(), opcode, piece, key));
                    if ping_between {
                        wire.extend(client_frame(true, OP_PING, b"p", key));
                    }
                }
            }
            let (messages, error, _) = run(&wire, &cuts, false);
            prop_assert!(error.is_none(), "{error:?}");
            let expected: Vec<Message> = texts.iter().map(|t| Message::Text(Bytes::copy_from_slice(t.as_bytes()))).collect();
            prop_assert_eq!(messages, expected);
        }

        #[test]
        fn arbitrary_input_never_panics(
            wire in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..4),
            deflate in any::<bool>(),
        ) {
            let _ = run(&wire, &cuts, deflate);
        }
    }
}
