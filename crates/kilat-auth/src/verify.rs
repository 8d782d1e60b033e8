//! [`Verifier`]: checks connection and subscription tokens against the configured key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use crate::claims::{ClaimRules, ConnectionClaims, RawClaims, SubscriptionClaims, unix_now};
use crate::config::{ConfigError, TokenConfig};
use crate::error::{MalformedToken, TokenError};
use crate::jwks::JwksCache;

/// Tokens longer than this are refused before any decoding: a connection token with a
/// generous `info` and `channels` list stays well under it.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Algorithms allowed by default for a shared secret.
pub(crate) const HMAC_DEFAULT: &[Algorithm] =
    &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// Algorithms allowed by default for an RSA key (PS* only when listed in `algorithms`).
pub(crate) const RSA_DEFAULT: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
/// Algorithms a JWKS verifier may ever accept: asymmetric only.
pub(crate) const JWKS_ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Checks tokens. Cheap to clone: every clone shares the keys and the JWKS cache.
///
/// Every `verify_*` method accepts any string without panicking; malformed input is an
/// error like any other.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeySource,
    rules: ClaimRules,
}

enum KeySource {
    /// A secret or PEM key from the config, with the algorithms its type allows.
    Static {
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
    },
    /// Keys looked up by `kid` in a fetched key set.
    Jwks(JwksCache),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.inner.keys {
            KeySource::Static { algorithms, .. } => format!("static {algorithms:?}"),
            KeySource::Jwks(_) => "jwks".to_owned(),
        };
        f.debug_struct("Verifier")
            .field("keys", &keys)
            .field("rules", &self.inner.rules)
            .finish()
    }
}

/// The part of the JOSE header we read. Parsed by us, not by the JWT library, so that
/// `alg: none` (and any name the library does not know) is a clear "algorithm not allowed"
/// rather than a JSON error.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token split at its dots, not yet decoded.
struct Segments<'a> {
    header: &'a str,
    payload: &'a str,
    /// `header.payload`: the signed bytes.
    message: &'a str,
    signature: &'a str,
}

impl Verifier {
    /// Builds a verifier from `[token]`.
    ///
    /// # Errors
    /// [`ConfigError`] when no key or more than one key source is set, the PEM is not a
    /// supported public key, `algorithms` does not fit the key, or `jwks_url` is not http.
    pub fn new(config: &TokenConfig) -> Result<Self, ConfigError> {
        if config.leeway > 86_400 {
            return Err(ConfigError::LeewayTooLarge(config.leeway));
        }
        let keys = match (&config.secret, &config.public_key, &config.jwks_url) {
            (None, None, None) => return Err(ConfigError::NoKey),
            (Some(secret), None, None) => {
                if secret.is_empty() {
                    return Err(ConfigError::EmptySecret);
                }
                if secret.len() < 32 {
                    // RFC 7518 3.2: an HS256 key should be at least as long as the hash.
                    tracing::warn!(
                        len = secret.len(),
                        "[token] secret is shorter than 32 bytes; tokens are easier to forge"
                    );
                }
                let key = DecodingKey::from_secret(secret.as_bytes());
                KeySource::Static {
                    key,
                    algorithms: pin(HMAC_DEFAULT, &config.algorithms, |a| {
                        a.family() == AlgorithmFamily::Hmac
                    })?,
                }
            }
            (None, Some(pem), None) => {
                let (key, by_type) = parse_public_key(pem.as_bytes())?;
                let family = key.family();
                let curve_fits = |a: Algorithm| match family {
                    AlgorithmFamily::Ec => by_type.contains(&a),
                    other => a.family() == other,
                };
                KeySource::Static {
                    key,
                    algorithms: pin(by_type, &config.algorithms, curve_fits)?,
                }
            }
            (None, None, Some(url)) => {
                if let Some(&alg) = config.algorithms.iter().find(|a| !JWKS_ALLOWED.contains(a)) {
                    return Err(ConfigError::AlgorithmMismatch { alg });
                }
                KeySource::Jwks(JwksCache::new(url, config)?)
            }
            _ => return Err(ConfigError::ConflictingKeys),
        };
        let rules = ClaimRules {
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway: i64::try_from(config.leeway).unwrap_or(i64::MAX),
            require_exp: config.require_exp,
        };
        Ok(Verifier {
            inner: Arc::new(Inner { keys, rules }),
        })
    }

    /// With a JWKS: fetches the key set now (at startup, so that the first clients do not
    /// wait for it), unless a fetch happened less than `jwks_min_refresh_interval` ago.
    /// Without a JWKS: does nothing.
    ///
    /// # Errors
    /// [`TokenError::JwksUnavailable`] when the fetch fails; the verifier stays usable and
    /// fetches again on demand.
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        match &self.inner.keys {
            KeySource::Static { .. } => Ok(()),
            KeySource::Jwks(cache) => cache.prefetch().await,
        }
    }

    /// Checks a connection token: signature, algorithm, `exp`/`nbf`/`iat`, `aud`, `iss`.
    ///
    /// # Errors
    /// A [`TokenError`]; [`TokenError::code`] gives the client-facing code.
    ///
    /// # Cancel safety
    /// Cancel safe. Dropping the future during a JWKS fetch abandons the fetch; the rate limit
    /// still counts it.
    pub async fn verify_connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        self.verify(token).await?.into_connection()
    }

    /// Checks a subscription token like [`Verifier::verify_connection`], and that its
    /// `channel` claim is `channel`: a token minted for one channel opens no other.
    ///
    /// # Errors
    /// A [`TokenError`]; [`TokenError::ChannelMismatch`] for a token of another channel
    /// (or one without `channel`, such as a connection token).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Verifier::verify_connection`].
    pub async fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        self.verify(token).await?.into_subscription(channel)
    }

    async fn verify(&self, token: &str) -> Result<RawClaims, TokenError> {
        let segments = split(token)?;
        let header_json = URL_SAFE_NO_PAD
            .decode(segments.header)
            .map_err(MalformedToken::from)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(MalformedToken::from)?;
        // We implement no JWS extension, so any critical one must be refused (RFC 7515 4.1.11).
        if header.crit.is_some() {
            return Err(MalformedToken::Critical.into());
        }
        let not_allowed = || TokenError::AlgorithmNotAllowed {
            alg: header.alg.clone(),
        };
        // "none" is not an `Algorithm` variant, so this also refuses unsigned tokens.
        let alg = Algorithm::from_str(&header.alg).map_err(|_| not_allowed())?;

        let jwk;
        let (key, allowed) = match &self.inner.keys {
            KeySource::Static { key, algorithms } => (key, algorithms.as_slice()),
            KeySource::Jwks(cache) => {
                // Refuse HS* (and anything the config excludes) before the kid can trigger a fetch.
                if !cache.may_verify(alg) {
                    return Err(not_allowed());
                }
                let kid = header.kid.as_deref().ok_or(TokenError::MissingKid)?;
                jwk = cache.key_for(kid).await?;
                (&jwk.key, jwk.algorithms.as_slice())
            }
        };
        if !allowed.contains(&alg) {
            return Err(not_allowed());
        }
        let valid =
            jsonwebtoken::crypto::verify(segments.signature, segments.message.as_bytes(), key, alg)
                .map_err(|err| match err.kind() {
                    jsonwebtoken::errors::ErrorKind::Base64(_) => MalformedToken::Jwt(err).into(),
                    _ => TokenError::KeyRejected(err),
                })?;
        if !valid {
            return Err(TokenError::BadSignature);
        }
        // Only now, with the signature checked, do we parse what the sender wrote.
        let payload = URL_SAFE_NO_PAD
            .decode(segments.payload)
            .map_err(MalformedToken::from)?;
        let claims: RawClaims = serde_json::from_slice(&payload).map_err(MalformedToken::from)?;
        claims.check(&self.inner.rules, unix_now())?;
        Ok(claims)
    }
}

/// Splits a compact JWS into its three segments, refusing anything else early and cheaply.
fn split(token: &str) -> Result<Segments<'_>, MalformedToken> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(MalformedToken::Structure);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MalformedToken::Structure);
    };
    // An empty signature is left for the signature check to refuse, so that an unsigned
    // `alg: none` token is reported as such.
    if header.is_empty() || payload.is_empty() {
        return Err(MalformedToken::Structure);
    }
    let message = &token[..header.len() + 1 + payload.len()];
    Ok(Segments {
        header,
        payload,
        message,
        signature,
    })
}

/// Picks the allowed algorithms: the key type's default, or the configured list if every
/// entry `fits` the key.
fn pin(
    by_type: &[Algorithm],
    configured: &[Algorithm],
    fits: impl Fn(Algorithm) -> bool,
) -> Result<Vec<Algorithm>, ConfigError> {
    if configured.is_empty() {
        return Ok(by_type.to_vec());
    }
    match configured.iter().find(|&&alg| !fits(alg)) {
        Some(&alg) => Err(ConfigError::AlgorithmMismatch { alg }),
        None => Ok(configured.to_vec()),
    }
}

/// Reads a PEM public key and returns it with the algorithms its type allows by default.
/// The curve of an EC key is told by the length of its uncompressed SEC1 point.
fn parse_public_key(pem: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), ConfigError> {
    // The PEM parser also reads private keys; a private key has no place in the server's
    // config (and would not verify), so say so at startup.
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(ConfigError::InvalidPublicKey);
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, RSA_DEFAULT));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        let by_type: &'static [Algorithm] = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => &[Algorithm::ES256],
            Ok(97) => &[Algorithm::ES384],
            _ => return Err(ConfigError::InvalidPublicKey),
        };
        return Ok((key, by_type));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, &[Algorithm::EdDSA]));
    }
    Err(ConfigError::InvalidPublicKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_refuses_anything_but_three_non_empty_segments() {
        for bad in ["", "a", "a.b", "a.b.c.d", "a..c", ".b.c", "..", "..."] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
        let s = split("h.p.s").expect("three segments");
        assert_eq!(
            (s.header, s.payload, s.message, s.signature),
            ("h", "p", "h.p", "s")
        );
        assert!(split("h.p.").is_ok(), "empty signature is refused later");
        assert!(split(&"a.".repeat(MAX_TOKEN_LEN)).is_err());
    }

    #[test]
    fn configured_algorithms_must_fit_the_key_type() {
        let hs = |a: Algorithm| a.family() == AlgorithmFamily::Hmac;
        assert_eq!(
            pin(HMAC_DEFAULT, &[], hs).expect("default"),
            HMAC_DEFAULT.to_vec()
        );
        assert_eq!(
            pin(HMAC_DEFAULT, &[Algorithm::HS512], hs).expect("subset"),
            vec![Algorithm::HS512]
        );
        assert!(pin(HMAC_DEFAULT, &[Algorithm::RS256], hs).is_err());
    }

    #[test]
    fn secret_config_refuses_rsa_algorithms() {
        let config = TokenConfig {
            algorithms: vec![Algorithm::RS256],
            ..TokenConfig::with_secret("s")
        };
        assert!(matches!(
            Verifier::new(&config),
            Err(ConfigError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn exactly_one_key_source() {
        assert!(matches!(
            Verifier::new(&TokenConfig::default()),
            Err(ConfigError::NoKey)
        ));
        let both = TokenConfig {
            public_key: Some("x".into()),
            ..TokenConfig::with_secret("s")
        };
        assert!(matches!(
            Verifier::new(&both),
            Err(ConfigError::ConflictingKeys)
        ));
        assert!(matches!(
            Verifier::new(&TokenConfig::with_secret("")),
            Err(ConfigError::EmptySecret)
        ));
        assert!(matches!(
            Verifier::new(&TokenConfig::with_public_key("garbage")),
            Err(ConfigError::InvalidPublicKey)
        ));
    }

    #[test]
    fn jwks_config_refuses_hmac_algorithms() {
        let config = TokenConfig {
            algorithms: vec![Algorithm::HS256],
            ..TokenConfig::with_jwks_url("http://127.0.0.1:1/jwks")
        };
        assert!(matches!(
            Verifier::new(&config),
            Err(ConfigError::AlgorithmMismatch { .. })
        ));
    }
}
