//! Why a token was refused, and how that maps to the client-facing codes of docs/protocol.md section 10.

use kilat_protocol::ErrorCode;

use crate::jwks::JwksError;

/// Why a token was refused.
///
/// Log the detail on the server, send only [`TokenError::code`] to the client: the detail
/// helps an attacker more than a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT: wrong number of segments, bad base64, bad JSON, claims of the wrong type
    /// (a non-numeric `exp`, a `channels` that is not a list of strings).
    #[error("malformed token")]
    Malformed(#[from] MalformedToken),
    /// The signature does not match: forged token or a key we do not have.
    #[error("invalid token signature")]
    BadSignature,
    /// The `alg` in the header is not allowed for this key (includes `none` and any algorithm
    /// from another key family: the algorithm confusion attack).
    #[error("token algorithm {alg:?} not allowed")]
    AlgorithmNotAllowed {
        /// The `alg` header value as sent.
        alg: String,
    },
    /// `exp` is in the past (beyond the configured leeway).
    #[error("token expired at {exp}")]
    Expired {
        /// The `exp` claim, seconds since the Unix epoch.
        exp: i64,
    },
    /// `nbf` or `iat` is in the future (beyond the configured leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// A claim the configuration requires is absent (`exp` with `require_exp`).
    #[error("token lacks the required {0:?} claim")]
    MissingClaim(&'static str),
    /// `aud` does not name the configured audience (or is present while none is configured).
    #[error("token audience mismatch")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer mismatch")]
    WrongIssuer,
    /// A subscription token presented for another channel than the one it was minted for.
    #[error("subscription token is for channel {token_channel:?}, not {requested:?}")]
    ChannelMismatch {
        /// The channel the client asked for.
        requested: String,
        /// The `channel` claim of the token.
        token_channel: String,
    },
    /// A subscription token (it carries a `channel` claim) presented as a connection token, on
    /// `connect` or `refresh`. Token kinds are not interchangeable: a subscription token grants
    /// one channel, never a connection that could then subscribe elsewhere (issue 20).
    #[error("a subscription token (with a channel claim) is not a connection token")]
    SubscriptionTokenForConnection,
    /// A JWKS verifier got a token without a `kid` header, so it cannot pick a key.
    #[error("token has no kid header")]
    MissingKid,
    /// The JWKS has no key with this `kid`, even after a refresh (or a refresh was not allowed
    /// yet because the last one was too recent).
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// The JWKS could not be fetched and no cached key fits: temporary, retry later.
    #[error("JWKS unavailable")]
    JwksUnavailable(#[from] JwksError),
    /// The key selected for this token could not be used for its algorithm (for example a
    /// JWKS entry whose parameters do not form a valid key).
    #[error("key rejected by the JWT library")]
    KeyRejected(#[source] jsonwebtoken::errors::Error),
}

impl TokenError {
    /// True when the token was valid but has expired: the client should refresh it (error
    /// 410 on a command, disconnect 3005 on a live connection after the refresh grace period).
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired { .. })
    }

    /// True when the refusal says nothing about the token itself (the keys could not be
    /// fetched): the client should retry later rather than drop its token.
    pub fn is_temporary(&self) -> bool {
        matches!(self, TokenError::JwksUnavailable(_))
    }

    /// The client-facing error code of docs/protocol.md section 10: [`ErrorCode::TOKEN_EXPIRED`]
    /// (410: refresh the token; on a live connection the server sends a `refresh` push and
    /// disconnects with 3005 after the grace period), [`ErrorCode::UNAVAILABLE`] (503: retry
    /// later) or [`ErrorCode::UNAUTHORIZED`] (401) for everything else.
    pub fn error_code(&self) -> ErrorCode {
        if self.is_expired() {
            ErrorCode::TOKEN_EXPIRED
        } else if self.is_temporary() {
            ErrorCode::UNAVAILABLE
        } else {
            ErrorCode::UNAUTHORIZED
        }
    }

    /// [`TokenError::error_code`] as a bare number.
    pub fn code(&self) -> u32 {
        self.error_code().0
    }
}

/// What exactly is malformed in a token; the source of [`TokenError::Malformed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedToken {
    /// Not three dot-separated segments (header and payload non-empty), or absurdly long.
    #[error("a JWT has three dot-separated segments")]
    Structure,
    /// A segment is not unpadded base64url.
    #[error("segment is not base64url")]
    Base64(#[from] base64::DecodeError),
    /// The header or the claims are not the JSON we expect.
    #[error("invalid JSON in token")]
    Json(#[from] serde_json::Error),
    /// The header lists critical extensions (`crit`), none of which we implement.
    #[error("token uses critical header extensions")]
    Critical,
    /// The JWT library refused the token's structure.
    #[error("rejected by the JWT library")]
    Jwt(#[source] jsonwebtoken::errors::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_protocol_section_9() {
        assert_eq!(TokenError::Expired { exp: 1 }.code(), 410);
        assert_eq!(TokenError::JwksUnavailable(JwksError::Timeout).code(), 503);
        assert_eq!(TokenError::BadSignature.code(), 401);
        assert_eq!(TokenError::UnknownKid("k".into()).code(), 401);
        assert!(TokenError::Expired { exp: 1 }.is_expired());
        assert!(!TokenError::NotYetValid.is_expired());
        assert!(TokenError::JwksUnavailable(JwksError::Timeout).is_temporary());
        assert!(!TokenError::UnknownKid("k".into()).is_temporary());
    }
}
