//! `[token]` in kilat.toml: where the keys come from and which claims are checked.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// Token checks, read from the `[token]` table of kilat.toml.
///
/// Exactly one of `secret`, `public_key` and `jwks_url` must be set. Example:
///
/// ```toml
/// [token]
/// secret = "change-me"          # HS256/384/512
/// audience = "kilat"
/// leeway = 5
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// HMAC secret shared with the application backend that mints tokens. Allows HS256,
    /// HS384 and HS512 (unless `algorithms` narrows that).
    pub secret: Option<String>,
    /// A public key in PEM (SPKI `-----BEGIN PUBLIC KEY-----`, or PKCS#1 for RSA). Its type
    /// decides the allowed algorithms: RSA -> RS256/384/512, P-256 -> ES256, P-384 -> ES384,
    /// Ed25519 -> EdDSA.
    pub public_key: Option<String>,
    /// URL of a JSON Web Key Set: `http://`, or `https://` when kilat-auth is built with its
    /// `https` feature (rustls, Mozilla roots). Tokens must carry a `kid` header naming one of
    /// its keys. The set is
    /// fetched on first use, cached, and refetched when a token names an unknown `kid` (at most
    /// once per `jwks_min_refresh_interval`) or when it is older than `jwks_max_age`.
    pub jwks_url: Option<String>,
    /// When set, tokens must carry an `aud` claim naming this audience. When unset, a token
    /// that carries `aud` is refused (RFC 7519 4.1.3: it is meant for someone else).
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss` claim.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Default 0.
    pub leeway: u64,
    /// Allowed `alg` values. Empty (the default) means every algorithm of the key's type;
    /// a non-empty list must stay within that type (a `secret` with `RS256` is a
    /// configuration error), so algorithm confusion is impossible either way.
    pub algorithms: Vec<Algorithm>,
    /// Refuse tokens without `exp`. Default false: a token without `exp` never expires, as in
    /// Centrifugo; the application decides by minting with or without a TTL.
    pub require_exp: bool,
    /// Timeout for one JWKS fetch (connect, request and body), in milliseconds. Default 5000.
    pub jwks_timeout_ms: u64,
    /// Minimum time between two JWKS fetches, in seconds, whatever triggers them: a stream of
    /// tokens with made-up `kid`s costs the JWKS endpoint at most one request per interval.
    /// Default 10.
    pub jwks_min_refresh_interval: u64,
    /// Age in seconds after which the cached JWKS is refetched on the next verification (the
    /// stale set stays in use if that fetch fails). Default 3600.
    pub jwks_max_age: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            secret: None,
            public_key: None,
            jwks_url: None,
            audience: None,
            issuer: None,
            leeway: 0,
            algorithms: Vec::new(),
            require_exp: false,
            jwks_timeout_ms: 5_000,
            jwks_min_refresh_interval: 10,
            jwks_max_age: 3_600,
        }
    }
}

impl TokenConfig {
    /// A config that checks HMAC tokens with `secret`, everything else at its default.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        TokenConfig {
            secret: Some(secret.into()),
            ..TokenConfig::default()
        }
    }

    /// A config that checks tokens signed by the private half of this PEM public key.
    pub fn with_public_key(pem: impl Into<String>) -> Self {
        TokenConfig {
            public_key: Some(pem.into()),
            ..TokenConfig::default()
        }
    }

    /// A config that checks tokens against the keys served at `url`.
    pub fn with_jwks_url(url: impl Into<String>) -> Self {
        TokenConfig {
            jwks_url: Some(url.into()),
            ..TokenConfig::default()
        }
    }

    pub(crate) fn jwks_timeout(&self) -> Duration {
        Duration::from_millis(self.jwks_timeout_ms)
    }
}

// Hand-written so that the secret never reaches a log line.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key.as_ref().map(|_| "[pem]"))
            .field("jwks_url", &self.jwks_url)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("algorithms", &self.algorithms)
            .field("require_exp", &self.require_exp)
            .field("jwks_timeout_ms", &self.jwks_timeout_ms)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("jwks_max_age", &self.jwks_max_age)
            .finish()
    }
}

/// Why a [`TokenConfig`] cannot make a [`Verifier`](crate::Verifier).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// None of `secret`, `public_key`, `jwks_url` is set.
    #[error("[token] needs one of secret, public_key or jwks_url")]
    NoKey,
    /// More than one of `secret`, `public_key`, `jwks_url` is set: which one should win is a
    /// guess we refuse to make.
    #[error("[token] takes only one of secret, public_key or jwks_url")]
    ConflictingKeys,
    /// `secret` is the empty string.
    #[error("[token] secret is empty")]
    EmptySecret,
    /// `public_key` is not an RSA, P-256, P-384 or Ed25519 public key in PEM.
    #[error("[token] public_key is not an RSA, P-256, P-384 or Ed25519 public key in PEM")]
    InvalidPublicKey,
    /// An entry of `algorithms` does not fit the key type.
    #[error("[token] algorithm {alg:?} cannot be used with this key")]
    AlgorithmMismatch {
        /// The offending algorithm.
        alg: Algorithm,
    },
    /// `jwks_url` is not an absolute `http://` URL (or `https://` with the `https` feature).
    #[error(
        "[token] jwks_url {url:?} is not an absolute http:// (or, with the https feature, https://) URL"
    )]
    InvalidJwksUrl {
        /// The URL as configured.
        url: String,
    },
    /// `leeway` is larger than one day, which is surely a unit mistake.
    #[error("[token] leeway {0} s is more than a day")]
    LeewayTooLarge(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_toml_like_json_and_defaults_fill_the_rest() {
        let config: TokenConfig = serde_json::from_value(serde_json::json!({
            "secret": "s3cret",
            "audience": "kilat",
            "algorithms": ["HS256"],
        }))
        .expect("valid config");
        assert_eq!(config.secret.as_deref(), Some("s3cret"));
        assert_eq!(config.algorithms, vec![Algorithm::HS256]);
        assert_eq!(config.jwks_min_refresh_interval, 10);
        assert_eq!(config.leeway, 0);
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", TokenConfig::with_secret("hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<TokenConfig>(serde_json::json!({"secrte": "x"}));
        assert!(err.is_err());
    }
}
