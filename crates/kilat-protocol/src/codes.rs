//! Client-visible error and disconnect codes (docs/protocol.md section 10), the `unsubscribe`
//! push codes, and the two wire types that carry the first two: [`ClientError`] (an error reply)
//! and [`Disconnect`] (a close).
//!
//! Error codes follow HTTP meaning. Disconnect codes double as WebSocket close codes and carry the
//! reconnect rule in their range: 3000-3499 the client reconnects, 3500-3999 it must not.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `unsubscribe` push code 2000: the server API removed the subscription (no resubscribe).
pub const UNSUBSCRIBE_SERVER: u32 = 2000;
/// `unsubscribe` push code 2500: the subscription lost its position (a gap history cannot
/// fill, or a new epoch); the client subscribes again and gets `recovered: false`.
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: u32 = 2500;

/// A client-visible error code (the `code` of an error reply). Values follow HTTP meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 400: the command is malformed (wrong types, missing fields, bad channel name).
    pub const BAD_REQUEST: ErrorCode = ErrorCode(400);
    /// 401: the connection is not authenticated (bad or unverifiable token).
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(401);
    /// 403: the connection is authenticated but not allowed to do this.
    pub const PERMISSION_DENIED: ErrorCode = ErrorCode(403);
    /// 404: unknown channel namespace, method or rpc method.
    pub const NOT_FOUND: ErrorCode = ErrorCode(404);
    /// 409: already subscribed to this channel on this connection.
    pub const ALREADY_SUBSCRIBED: ErrorCode = ErrorCode(409);
    /// 410: the token has expired.
    pub const TOKEN_EXPIRED: ErrorCode = ErrorCode(410);
    /// 413: a payload is larger than the namespace allows.
    pub const TOO_LARGE: ErrorCode = ErrorCode(413);
    /// 429: a limit or rate was exceeded (channels per connection, ...).
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode(429);
    /// 500: an internal error; the detail is logged on the server, never sent.
    pub const INTERNAL: ErrorCode = ErrorCode(500);
    /// 503: unavailable (engine down) or unrecoverable position (history epoch mismatch).
    pub const UNAVAILABLE: ErrorCode = ErrorCode(503);

    /// Whether retrying the same command later may succeed (429, 500 and 503).
    pub fn is_temporary(self) -> bool {
        matches!(self.0, 429 | 500 | 503)
    }
}

/// An error reply: `{"id": n, "error": {"code", "message", "temporary"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientError {
    /// The error code (see [`ErrorCode`]).
    pub code: u32,
    /// A short human-readable message; never contains internal detail.
    pub message: Cow<'static, str>,
    /// Whether retrying later may succeed.
    #[serde(default)]
    pub temporary: bool,
}

impl ClientError {
    /// An error with `code`, `message` and the code's default `temporary` flag.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ClientError {
            code: code.0,
            message: message.into(),
            temporary: code.is_temporary(),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}

/// A disconnect code (also the WebSocket close code).
///
/// 3000-3499: the client should reconnect (with backoff). 3500-3999: it must not reconnect
/// automatically. Codes outside 3000-3999 are not sent by kilat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisconnectCode(pub u16);

impl DisconnectCode {
    /// 3000: server shutdown or drain; reconnect (to another node).
    pub const SHUTDOWN: DisconnectCode = DisconnectCode(3000);
    /// 3001: the client did not read fast enough and its queue overflowed; reconnect.
    pub const SLOW: DisconnectCode = DisconnectCode(3001);
    /// 3002: no pong within `pong_timeout`; reconnect.
    pub const NO_PONG: DisconnectCode = DisconnectCode(3002);
    /// 3003: no connect command within `handshake_timeout`; reconnect.
    pub const HANDSHAKE_TIMEOUT: DisconnectCode = DisconnectCode(3003);
    /// 3004: forced by the server API, reconnect allowed.
    pub const FORCE_RECONNECT: DisconnectCode = DisconnectCode(3004);
    /// 3005: the connection token expired and was not refreshed; reconnect with a new token.
    pub const TOKEN_EXPIRED: DisconnectCode = DisconnectCode(3005);
    /// 3500: the client broke the protocol; do not reconnect.
    pub const BAD_REQUEST: DisconnectCode = DisconnectCode(3500);
    /// 3501: authentication failed; do not reconnect with the same credentials.
    pub const UNAUTHORIZED: DisconnectCode = DisconnectCode(3501);
    /// 3502: too many connections (for this user or node); do not reconnect automatically.
    pub const CONNECTION_LIMIT: DisconnectCode = DisconnectCode(3502);
    /// 3503: forced by the server API, no reconnect.
    pub const FORCE_NO_RECONNECT: DisconnectCode = DisconnectCode(3503);
    /// 3504: the user is banned.
    pub const BANNED: DisconnectCode = DisconnectCode(3504);
    /// 3505: the connection's token (its `jti`) or its user was revoked through the server
    /// API; reconnecting with the same token is refused.
    pub const TOKEN_REVOKED: DisconnectCode = DisconnectCode(3505);

    /// The reconnect rule of this code's range: true for 3000-3499.
    pub fn reconnect(self) -> bool {
        (3000..3500).contains(&self.0)
    }
}

/// Why a connection is closed: sent as the WebSocket close (code, reason) and, on transports
/// without close frames, as a `disconnect` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// The close code (see [`DisconnectCode`]).
    pub code: u16,
    /// A short reason (at most 123 bytes so it fits a WebSocket close frame).
    pub reason: Cow<'static, str>,
    /// Whether the client should reconnect; derived from the code's range.
    pub reconnect: bool,
    /// A reconnect spread hint in milliseconds: the client waits a random time in
    /// `[0, delay_ms]` (on top of its own backoff floor) before reconnecting, so the clients of a
    /// draining node do not all arrive at the next node at once. Absent when the server gives no
    /// hint. WebSocket close frames cannot carry it, so a server that sets it sends the
    /// `disconnect` push before the close frame on WebSocket too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u32>,
}

impl Disconnect {
    /// 3000 shutdown.
    pub const SHUTDOWN: Disconnect = Disconnect::fixed(DisconnectCode::SHUTDOWN, "shutdown");
    /// 3001 slow consumer.
    pub const SLOW: Disconnect = Disconnect::fixed(DisconnectCode::SLOW, "slow");
    /// 3002 no pong.
    pub const NO_PONG: Disconnect = Disconnect::fixed(DisconnectCode::NO_PONG, "no pong");
    /// 3003 handshake timeout.
    pub const HANDSHAKE_TIMEOUT: Disconnect =
        Disconnect::fixed(DisconnectCode::HANDSHAKE_TIMEOUT, "handshake timeout");
    /// 3004 forced reconnect.
    pub const FORCE_RECONNECT: Disconnect =
        Disconnect::fixed(DisconnectCode::FORCE_RECONNECT, "force reconnect");
    /// 3005 token expired.
    pub const TOKEN_EXPIRED: Disconnect =
        Disconnect::fixed(DisconnectCode::TOKEN_EXPIRED, "token expired");
    /// 3500 bad request.
    pub const BAD_REQUEST: Disconnect =
        Disconnect::fixed(DisconnectCode::BAD_REQUEST, "bad request");
    /// 3501 unauthorized.
    pub const UNAUTHORIZED: Disconnect =
        Disconnect::fixed(DisconnectCode::UNAUTHORIZED, "unauthorized");
    /// 3502 connection limit.
    pub const CONNECTION_LIMIT: Disconnect =
        Disconnect::fixed(DisconnectCode::CONNECTION_LIMIT, "connection limit");
    /// 3503 forced, no reconnect.
    pub const FORCE_NO_RECONNECT: Disconnect =
        Disconnect::fixed(DisconnectCode::FORCE_NO_RECONNECT, "force disconnect");
    /// 3504 banned.
    pub const BANNED: Disconnect = Disconnect::fixed(DisconnectCode::BANNED, "banned");
    /// 3505 token revoked.
    pub const TOKEN_REVOKED: Disconnect =
        Disconnect::fixed(DisconnectCode::TOKEN_REVOKED, "token revoked");

    const fn fixed(code: DisconnectCode, reason: &'static str) -> Disconnect {
        Disconnect {
            code: code.0,
            reason: Cow::Borrowed(reason),
            reconnect: code.0 >= 3000 && code.0 < 3500,
            delay_ms: None,
        }
    }

    /// A disconnect with `code`, a custom `reason` and the code's reconnect rule.
    pub fn new(code: DisconnectCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Disconnect {
            code: code.0,
            reason: reason.into(),
            reconnect: code.reconnect(),
            delay_ms: None,
        }
    }

    /// This disconnect with a reconnect spread hint (see [`Disconnect::delay_ms`]).
    #[must_use]
    pub fn with_delay_ms(mut self, delay_ms: u32) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_follows_the_code_range() {
        let fixed = [
            (Disconnect::SHUTDOWN, true),
            (Disconnect::TOKEN_EXPIRED, true),
            (Disconnect::BAD_REQUEST, false),
            (Disconnect::BANNED, false),
            (Disconnect::TOKEN_REVOKED, false),
        ];
        for (d, reconnect) in fixed {
            assert_eq!(d.reconnect, reconnect, "{d}");
            assert_eq!(DisconnectCode(d.code).reconnect(), reconnect, "{d}");
        }
        assert!(Disconnect::new(DisconnectCode(3499), "x").reconnect);
        assert!(!Disconnect::new(DisconnectCode(3500), "x").reconnect);
    }

    #[test]
    fn temporary_errors_are_the_retryable_codes() {
        assert!(ClientError::new(ErrorCode::LIMIT_EXCEEDED, "x").temporary);
        assert!(!ClientError::new(ErrorCode::BAD_REQUEST, "x").temporary);
    }
}
