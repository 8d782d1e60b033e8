//! The client's error type: one enum, with the server's [`ClientError`] kept typed.

use kilat_protocol::{ClientError, Disconnect};
use thiserror::Error;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured URL cannot be used (bad syntax, or a scheme this build does not support).
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening the WebSocket failed, or the connection broke.
    #[error("WebSocket transport failed: {0}")]
    Transport(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server answered the command with an error reply (`{"id", "error"}`).
    #[error("server error {0}")]
    Server(#[from] ClientError),
    /// The server closed the connection with a disconnect code (during `connect`, or one that
    /// forbids reconnecting).
    #[error("disconnected by the server: {0}")]
    Disconnected(Disconnect),
    /// The connection was lost while the command was in flight: it may or may not have been
    /// applied by the server.
    #[error("connection lost before the reply arrived (the command may have been applied)")]
    ConnectionLost,
    /// The client was closed ([`crate::Client::close`]) or stopped reconnecting.
    #[error("client is closed")]
    Closed,
    /// No reply within [`crate::ClientConfig::request_timeout`] (or no connect reply within
    /// [`crate::ClientConfig::handshake_timeout`]).
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server sent something this client cannot read (a protocol mismatch).
    #[error("unexpected frame from the server: {0}")]
    Protocol(#[from] ProtocolError),
    /// Application data could not be serialised to JSON.
    #[error("data is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A server frame this client cannot read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is not a server frame (not JSON, or no known shape).
    #[error("{source}: {frame}")]
    Undecodable {
        /// The start of the frame (at most 200 bytes), for the message.
        frame: String,
        /// Why it did not decode.
        source: serde_json::Error,
    },
    /// A valid frame, but not the one the client waits for.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the client waited for, e.g. "a Subscribe reply".
        expected: &'static str,
        /// What came instead (its debug form).
        got: String,
    },
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::Transport(Box::new(e))
    }
}

impl Error {
    /// The server's error reply, when this is one.
    pub fn server_error(&self) -> Option<&ClientError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed: temporary server errors (429, 500, 503),
    /// transport failures, lost connections and timeouts.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Server(e) => e.temporary,
            Error::Transport(_) | Error::ConnectionLost | Error::Timeout => true,
            Error::Disconnected(d) => d.reconnect,
            _ => false,
        }
    }
}

/// Longest `Retry-After` taken from a server (longer values are cut to this).
const MAX_RETRY_AFTER_SECS: u64 = 3600;

impl Error {
    /// The server's `Retry-After` when it refused the WebSocket upgrade with 503 or 429 (a node
    /// at its handshake bound answers `503` with `Retry-After: 1`). Only the delta-seconds form
    /// is read; an HTTP date or garbage gives `None` (the plain backoff applies).
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        let Error::Transport(error) = self else {
            return None;
        };
        let tokio_tungstenite::tungstenite::Error::Http(response) = error.as_ref() else {
            return None;
        };
        if !matches!(response.status().as_u16(), 429 | 503) {
            return None;
        }
        let value = response.headers().get("retry-after")?.to_str().ok()?.trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs = value.parse::<u64>().ok()?.min(MAX_RETRY_AFTER_SECS);
        Some(std::time::Duration::from_secs(secs))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
