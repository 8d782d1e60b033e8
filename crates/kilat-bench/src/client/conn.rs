//! [`Conn`], one load connection (a WebSocket, or an SSE stream), and its transport-neutral
//! reading; `ws.rs` and `sse.rs` add the transport's own methods.

use anyhow::{Result, bail};
use tokio::io::AsyncReadExt;

use super::http::HttpConn;
use super::net::{Stream, Target};
use kilat_transport::ws::frame::OP_TEXT;

/// Largest server message the bench client accepts (also after inflating).
pub(super) const MAX_FRAME: u64 = 16 << 20;

/// One client connection (a WebSocket, or an SSE stream) with an incremental, cancel-safe
/// message reader.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(super) stream: Stream,
    /// Bytes read but not yet returned as messages.
    pub(super) buf: Vec<u8>,
    /// Bytes of the message returned last (consumed at the next read): of `buf` for a
    /// WebSocket, of the SSE body for SSE.
    pub(super) consumed: usize,
    /// permessage-deflate was negotiated: compressed messages are inflated into `scratch`.
    pub(super) inflate: bool,
    /// Compressed messages received (to show that compression was really in use).
    pub(crate) compressed: u64,
    /// Bytes of data messages received as they came on the wire (WebSocket payloads before
    /// inflating or transcoding).
    pub(crate) wire_bytes: u64,
    /// The message returned last when it is not a slice of `buf` (inflated, or an SSE event).
    pub(super) scratch: Vec<u8>,
    /// Set for an SSE connection.
    pub(super) sse: Option<Box<Sse>>,
}

impl Conn {
    /// Sends one text message: a masked text frame, or for SSE a command POSTed to the
    /// emulation endpoint for this session.
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        if self.sse.is_some() {
            return self.post_command(text).await;
        }
        self.send_frame(text).await
    }

    /// Reads the next complete data message and returns its opcode and payload (inflated when
    /// it was compressed), answering ping frames with pongs on the way. For SSE, the next event
    /// as a text message. Cancel-safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn next(&mut self) -> Result<(u8, &[u8])> {
        if self.sse.is_some() {
            return self.next_event().await;
        }
        self.next_message().await
    }

    /// Reads more bytes from the socket into `buf`.
    pub(super) async fn fill(&mut self) -> Result<()> {
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("server closed the TCP connection");
        }
        Ok(())
    }

    /// Reads the next text message (skipping others) and returns an owned copy.
    pub(crate) async fn read_text(&mut self) -> Result<Vec<u8>> {
        loop {
            let (op, payload) = self.next().await?;
            if op == OP_TEXT {
                return Ok(payload.to_vec());
            }
        }
    }

    /// Gives back the read buffers' memory (between phases of an idle connection).
    pub(crate) fn shrink(&mut self) {
        if let Some(sse) = self.sse.as_mut() {
            if self.consumed > 0 {
                sse.body.drain(..self.consumed);
                self.consumed = 0;
            }
            sse.body.shrink_to_fit();
        } else if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.shrink_to_fit();
        self.scratch = Vec::new();
    }
}

/// The state of an SSE connection.
#[derive(Debug)]
pub(super) struct Sse {
    /// The response body is chunked (`Transfer-Encoding: chunked`).
    pub(super) chunked: bool,
    /// Bytes of chunk data still to come in the current chunk.
    pub(super) chunk_left: usize,
    /// A chunk's trailing CRLF is still to be skipped.
    pub(super) chunk_crlf: bool,
    /// The de-chunked response body not yet returned as events.
    pub(super) body: Vec<u8>,
    /// Where commands go (the emulation endpoint), and the session they are for.
    pub(super) emulation: Target,
    pub(super) session: String,
    pub(super) node: String,
    pub(super) http: Option<HttpConn>,
}
