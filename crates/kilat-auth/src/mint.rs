//! Minting tokens: what `kilat token` does, and what tests and examples use to log in.
//!
//! Production tokens are minted by the application backend that knows its users; kilat
//! mints them only for development, tests and operations.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde::Serialize;

use crate::claims::unix_now;

/// What to put in a new token. A connection token unless `channel` is set.
///
/// ```
/// use std::time::Duration;
/// use kilat_auth::TokenRequest;
///
/// let request = TokenRequest::connection("alice").with_ttl(Duration::from_secs(3600));
/// let token = kilat_auth::mint(b"secret", kilat_auth::Algorithm::HS256, &request).unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRequest {
    /// User id (`sub`); empty for an anonymous user.
    pub user: String,
    /// Lifetime from now (`exp = now + ttl`); `None` mints a token that never expires.
    pub ttl: Option<Duration>,
    /// Mint a subscription token for this channel instead of a connection token.
    pub channel: Option<String>,
    /// Application data (`info` claim), any JSON.
    pub info: Option<serde_json::Value>,
    /// Server-side subscriptions (`channels` claim); connection tokens only.
    pub channels: Vec<String>,
    /// Token id (`jti` claim), by which the server API can revoke the token.
    pub jti: Option<String>,
}

impl TokenRequest {
    /// A connection token request for `user`.
    pub fn connection(user: impl Into<String>) -> Self {
        TokenRequest {
            user: user.into(),
            ..TokenRequest::default()
        }
    }

    /// A subscription token request granting `user` the channel `channel`.
    pub fn subscription(user: impl Into<String>, channel: impl Into<String>) -> Self {
        TokenRequest {
            user: user.into(),
            channel: Some(channel.into()),
            ..TokenRequest::default()
        }
    }

    /// Sets the lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the `jti` claim (the token's id, for revocation).
    pub fn with_jti(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// Sets the `info` claim.
    pub fn with_info(mut self, info: serde_json::Value) -> Self {
        self.info = Some(info);
        self
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// [`mint`] signs with a shared secret only; use [`mint_with_key`] for the others.
    #[error("{alg:?} is not an HMAC algorithm; a secret can only mint HS256/384/512 tokens")]
    NotHmac {
        /// The algorithm asked for.
        alg: Algorithm,
    },
    /// The secret is empty.
    #[error("the secret is empty")]
    EmptySecret,
    /// `exp` would not fit in a JWT NumericDate.
    #[error("ttl too large")]
    TtlTooLarge,
    /// `channels` was set on a subscription token, which cannot carry them.
    #[error("a subscription token cannot carry server-side channels")]
    ChannelsOnSubscription,
    /// The JWT library failed to sign (for example a key of another type than `alg`).
    #[error("cannot sign the token")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// The claims we write, in the order they read best in a decoded token.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

/// Mints an HS256/384/512 token with `secret`: what `kilat token` calls.
///
/// # Errors
/// [`MintError::NotHmac`] for another algorithm, [`MintError::EmptySecret`], and the
/// request errors of [`mint_with_key`].
pub fn mint(secret: &[u8], alg: Algorithm, request: &TokenRequest) -> Result<String, MintError> {
    if alg.family() != AlgorithmFamily::Hmac {
        return Err(MintError::NotHmac { alg });
    }
    if secret.is_empty() {
        return Err(MintError::EmptySecret);
    }
    mint_with_key(&EncodingKey::from_secret(secret), alg, None, request)
}

/// Mints a token with any key (a private key for RS/ES/EdDSA), setting `kid` in the header
/// when given (needed for JWKS verifiers).
///
/// # Errors
/// [`MintError::TtlTooLarge`], [`MintError::ChannelsOnSubscription`], or
/// [`MintError::Jwt`] when the key does not fit `alg`.
pub fn mint_with_key(
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    request: &TokenRequest,
) -> Result<String, MintError> {
    if request.channel.is_some() && !request.channels.is_empty() {
        return Err(MintError::ChannelsOnSubscription);
    }
    let now = unix_now();
    let exp = match request.ttl {
        None => None,
        Some(ttl) => Some(
            i64::try_from(ttl.as_secs())
                .ok()
                .and_then(|ttl| now.checked_add(ttl))
                .ok_or(MintError::TtlTooLarge)?,
        ),
    };
    let claims = MintedClaims {
        sub: &request.user,
        channel: request.channel.as_deref(),
        iat: now,
        exp,
        info: request.info.as_ref(),
        channels: &request.channels,
        jti: request.jti.as_deref(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(&header, &claims, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_mints_only_hmac() {
        let req = TokenRequest::connection("u");
        assert!(matches!(
            mint(b"s", Algorithm::RS256, &req),
            Err(MintError::NotHmac { .. })
        ));
        assert!(matches!(
            mint(b"", Algorithm::HS256, &req),
            Err(MintError::EmptySecret)
        ));
        assert!(mint(b"s", Algorithm::HS384, &req).is_ok());
    }

    #[test]
    fn absurd_ttl_is_an_error_not_an_overflow() {
        let req = TokenRequest::connection("u").with_ttl(Duration::MAX);
        assert!(matches!(
            mint(b"s", Algorithm::HS256, &req),
            Err(MintError::TtlTooLarge)
        ));
    }

    #[test]
    fn subscription_tokens_carry_no_server_side_channels() {
        let req = TokenRequest {
            channels: vec!["a".into()],
            ..TokenRequest::subscription("u", "c")
        };
        assert!(matches!(
            mint(b"s", Algorithm::HS256, &req),
            Err(MintError::ChannelsOnSubscription)
        ));
    }
}
