//! [`CoreError`]: what can go wrong in the hub, and the one place it becomes a client error.

use std::borrow::Cow;

use kilat_protocol::{ChannelError, ClientError, ErrorCode};
use thiserror::Error;

use crate::engine::EngineError;

/// Hub errors. [`CoreError::to_client_error`] is the only mapping to wire codes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Malformed request (400).
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    /// Invalid channel name (400).
    #[error("invalid channel name: {0}")]
    BadChannel(#[from] ChannelError),
    /// Not authenticated (401).
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    /// Not allowed (403).
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The channel's namespace is not configured (404).
    #[error("unknown channel namespace")]
    UnknownNamespace,
    /// Unknown rpc method or missing handler (404).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// Already subscribed on this connection (409).
    #[error("already subscribed")]
    AlreadySubscribed,
    /// Payload too large for the namespace (413).
    #[error("data is larger than max_message_size")]
    TooLarge,
    /// A limit was exceeded (429).
    #[error("limit exceeded: {0}")]
    LimitExceeded(&'static str),
    /// `history.since` names another epoch than the stream's (503, not temporary).
    #[error("epoch mismatch")]
    EpochMismatch,
    /// The engine failed (503); the detail is logged, not sent.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An error produced by a pluggable component (authenticator, rpc handler), already in
    /// client form.
    #[error("{0}")]
    Client(ClientError),
}

impl CoreError {
    /// The error reply for the client. Engine failures are logged here, once, with detail.
    pub fn to_client_error(&self) -> ClientError {
        let (code, message): (ErrorCode, Cow<'static, str>) = match self {
            CoreError::BadRequest(m) => (ErrorCode::BAD_REQUEST, m.clone()),
            CoreError::BadChannel(e) => (ErrorCode::BAD_REQUEST, e.to_string().into()),
            CoreError::Unauthorized(m) => (ErrorCode::UNAUTHORIZED, m.clone()),
            CoreError::PermissionDenied(m) => (ErrorCode::PERMISSION_DENIED, Cow::Borrowed(*m)),
            CoreError::UnknownNamespace => {
                (ErrorCode::NOT_FOUND, "unknown channel namespace".into())
            }
            CoreError::NotFound(m) => (ErrorCode::NOT_FOUND, Cow::Borrowed(*m)),
            CoreError::AlreadySubscribed => {
                (ErrorCode::ALREADY_SUBSCRIBED, "already subscribed".into())
            }
            CoreError::TooLarge => (
                ErrorCode::TOO_LARGE,
                "data is larger than max_message_size".into(),
            ),
            CoreError::LimitExceeded(m) => (ErrorCode::LIMIT_EXCEEDED, Cow::Borrowed(*m)),
            CoreError::EpochMismatch => {
                return ClientError {
                    code: ErrorCode::UNAVAILABLE.0,
                    message: "epoch mismatch".into(),
                    temporary: false,
                };
            }
            CoreError::Engine(EngineError::BadCursor) => (
                ErrorCode::BAD_REQUEST,
                "bad presence cursor: pass back the cursor of the previous reply".into(),
            ),
            CoreError::Engine(error) => {
                tracing::warn!(%error, source = ?std::error::Error::source(error), "engine error");
                (ErrorCode::UNAVAILABLE, "engine unavailable".into())
            }
            CoreError::Client(error) => return error.clone(),
        };
        ClientError::new(code, message)
    }
}
