//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692), server side, on hyper's upgrade.
//!
//! - [`negotiate`] checks an upgrade request and agrees on compression; [`Handshake::response`]
//!   is the `101` answer.
//! - [`WsConnection`] reads messages (cancel safe) and writes [`SharedFrame`]s whose wire
//!   encoding is computed once per frame and setting, then shared by every connection.
//! - [`Decoder`] is the read side without I/O (bytes in, messages out), for fuzzing and
//!   custom transports; [`frame`] is the frame header codec beneath it.
//! - [`echo`] is an echo server on the same code, for Autobahn runs and client debugging.
//!
//! [`SharedFrame`]: kilat_protocol::SharedFrame

use std::io;
use std::time::Duration;

use bytes::Bytes;

mod connection;
pub mod decoder;
mod deflate;
pub mod echo;
pub mod frame;
mod handshake;
mod utf8;

pub use connection::{SLOT_DEFLATE_9, SLOT_DEFLATE_15, SLOT_PLAIN, WsConnection};
pub use decoder::{Decoder, Event};
pub use handshake::{DeflateParams, Handshake, HandshakeError, negotiate, offered_subprotocols};

/// Limits and options of WebSocket connections.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Largest message accepted, in bytes, after decompression (default 64 KiB). Checked from
    /// each frame header before its payload is read; a larger message closes with 1009.
    pub max_message_size: usize,
    /// Whether permessage-deflate is offered to clients that ask for it (default true).
    pub deflate: bool,
    /// Outgoing messages shorter than this are sent uncompressed (default 64 bytes): below
    /// that deflate saves a few bytes at most and costs a compressor pass per message. Longer
    /// messages that deflate does not shrink are sent uncompressed too. `0` compresses every
    /// message, even when that makes it longer: the echo server uses it, because some
    /// conformance clients (kosoku 12.x/13.x) mishandle uncompressed text on a compressed
    /// connection.
    pub deflate_min_size: usize,
    /// Whether to ask clients not to keep their compression context between messages
    /// (default true). Then no connection keeps an inflate window (about 40 KiB) alive between
    /// messages; client commands are small and gain little from context takeover.
    pub deflate_client_no_context_takeover: bool,
    /// How long [`WsConnection::close`] waits for the peer's close frame (default 2 s).
    pub close_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_size: 64 * 1024,
            deflate: true,
            deflate_min_size: 64,
            deflate_client_no_context_takeover: true,
            close_timeout: Duration::from_secs(2),
        }
    }
}

/// A complete message received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The peer closed the connection; our reply close frame was sent and the socket shut
    /// down.
    Close {
        /// The peer's close code, if it sent one.
        code: Option<u16>,
        /// The peer's reason (possibly empty).
        reason: String,
    },
}

/// A protocol violation by the peer, answered with a close frame carrying
/// [`Violation::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A framing rule of RFC 6455 was broken (close code 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message is not UTF-8 (close code 1007).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame's reason is not UTF-8 (close code 1007).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// Compressed data could not be inflated (close code 1007).
    #[error("invalid compressed data")]
    BadCompression,
    /// A message exceeds the size limit (close code 1009).
    #[error("message exceeds the {limit} byte limit")]
    TooBig {
        /// The configured `max_message_size`.
        limit: usize,
    },
    /// More than [`MAX_PINGS_BETWEEN_MESSAGES`] ping frames without a message in between (close
    /// code 1008): a flood that would otherwise cost the server a pong each, unmetered.
    #[error("too many pings")]
    PingFlood,
}

/// The most ping frames a peer may send between two messages. A kilat client answers the
/// server's application ping (every 25 s by default) with a message, so even a client pinging
/// every 100 ms stays far below this; a flood reaches it within milliseconds.
pub const MAX_PINGS_BETWEEN_MESSAGES: u16 = 1000;

/// Close code: policy violation (RFC 6455 7.4.1).
pub const CLOSE_POLICY: u16 = 1008;

/// Close code: protocol error (RFC 6455 7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: payload data inconsistent with the message type (RFC 6455 7.4.1).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: message too big (RFC 6455 7.4.1).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;

impl Violation {
    /// The close code sent for this violation.
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            Violation::InvalidUtf8 | Violation::InvalidCloseReason | Violation::BadCompression => {
                CLOSE_INVALID_PAYLOAD
            }
            Violation::TooBig { .. } => CLOSE_TOO_BIG,
            Violation::PingFlood => CLOSE_POLICY,
        }
    }
}

/// Why [`WsConnection::read_message`] returned no message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The peer broke the protocol; the close frame with the matching code was sent.
    #[error("{0}")]
    Violation(#[from] Violation),
    /// The socket ended without a close frame (close code 1006 in RFC terms).
    #[error("connection ended without a close frame")]
    Eof,
    /// The connection is closing or closed; nothing more will be read.
    #[error("connection already closed")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}
