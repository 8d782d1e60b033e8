//! Token claims (docs/protocol.md section 9) and the checks on them that need no key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kilat_protocol::RawJson;
use serde::{Deserialize, Deserializer};

use crate::error::TokenError;

/// What a valid connection token says about the connecting user.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionClaims {
    /// User id; `""` (or an absent `sub`) is an anonymous user.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; `None` means the token never expires.
    pub exp: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: Option<i64>,
    /// Not before, seconds since the Unix epoch.
    pub nbf: Option<i64>,
    /// Application data attached to the connection, kept as the raw JSON text so that it is
    /// forwarded (presence, join/leave, publication info) without a decode/encode round trip.
    pub info: Option<RawJson>,
    /// Channels the server subscribes this connection to on connect (server-side
    /// subscriptions).
    pub channels: Vec<String>,
    /// The token's id (`jti`), by which the server API can revoke it.
    pub jti: Option<String>,
}

/// What a valid subscription token grants: `sub` may subscribe to `channel`.
///
/// The verifier checks the channel; the caller must still check that `sub` is the user of
/// the connection presenting it, since the verifier does not know the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionClaims {
    /// User id the token was minted for (`""` for anonymous).
    pub sub: String,
    /// The channel this token grants; always equal to the channel asked for.
    pub channel: String,
    /// Expiry, seconds since the Unix epoch; `None` means the token never expires.
    pub exp: Option<i64>,
    /// Application data attached to this subscription, raw JSON (see
    /// [`ConnectionClaims::info`]).
    pub info: Option<RawJson>,
}

impl ConnectionClaims {
    /// Time left before `exp` (zero if already past), `None` for a token that never expires.
    /// The server uses it for the `ttl` of the connect and refresh replies.
    pub fn expires_in(&self) -> Option<Duration> {
        self.exp.map(|exp| remaining(exp, unix_now()))
    }
}

impl SubscriptionClaims {
    /// Time left before `exp` (zero if already past), `None` for a token that never expires.
    pub fn expires_in(&self) -> Option<Duration> {
        self.exp.map(|exp| remaining(exp, unix_now()))
    }
}

fn remaining(exp: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(exp.saturating_sub(now)).unwrap_or(0))
}

/// Every claim either token kind may carry; parsed once after the signature checked out.
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    info: Option<RawJson>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    jti: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claim checks that depend on configuration, not on the key.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) leeway: i64,
    pub(crate) require_exp: bool,
}

impl RawClaims {
    /// Checks time, audience and issuer claims against `rules` at time `now` (Unix seconds).
    pub(crate) fn check(&self, rules: &ClaimRules, now: i64) -> Result<(), TokenError> {
        match self.exp {
            // RFC 7519 4.1.4: the current time must be before exp.
            Some(exp) if now >= exp.saturating_add(rules.leeway) => {
                return Err(TokenError::Expired { exp });
            }
            None if rules.require_exp => return Err(TokenError::MissingClaim("exp")),
            _ => {}
        }
        let latest = now.saturating_add(rules.leeway);
        if self.nbf.is_some_and(|nbf| nbf > latest) || self.iat.is_some_and(|iat| iat > latest) {
            return Err(TokenError::NotYetValid);
        }
        let audience_ok = match (&rules.audience, &self.aud) {
            (None, None) => true,
            // A token addressed to someone else is refused even when we expect no audience.
            (None, Some(Audience::Many(list))) => list.is_empty(),
            (None, Some(Audience::One(_))) => false,
            (Some(_), None) => false,
            (Some(want), Some(Audience::One(aud))) => aud == want,
            (Some(want), Some(Audience::Many(list))) => list.iter().any(|aud| aud == want),
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        if let Some(want) = &rules.issuer
            && self.iss.as_deref() != Some(want.as_str())
        {
            return Err(TokenError::WrongIssuer);
        }
        Ok(())
    }

    /// Turns the claims into a connection grant, refusing a subscription token: one that names a
    /// `channel` grants that channel only, not a connection.
    pub(crate) fn into_connection(self) -> Result<ConnectionClaims, TokenError> {
        if self.channel.is_some() {
            return Err(TokenError::SubscriptionTokenForConnection);
        }
        Ok(ConnectionClaims {
            sub: self.sub.unwrap_or_default(),
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            info: self.info,
            channels: self.channels.unwrap_or_default(),
            jti: self.jti,
        })
    }

    /// Turns the claims into a subscription grant for `requested`, refusing a token minted
    /// for another channel (or for none: a connection token is not a subscription token).
    pub(crate) fn into_subscription(
        self,
        requested: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let channel = self.channel.unwrap_or_default();
        if channel.is_empty() || channel != requested {
            return Err(TokenError::ChannelMismatch {
                requested: requested.to_owned(),
                token_channel: channel,
            });
        }
        Ok(SubscriptionClaims {
            sub: self.sub.unwrap_or_default(),
            channel,
            exp: self.exp,
            info: self.info,
        })
    }
}

/// Current time in Unix seconds; a clock before 1970 reads as 0.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A NumericDate (RFC 7519 2): integer or fractional seconds; fractions are truncated.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        // `as` saturates for finite values out of range, which is what we want for a date.
        Some(f) if f.is_finite() => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::custom(
            "a NumericDate must be a finite number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: None,
            issuer: None,
            leeway: 0,
            require_exp: false,
        }
    }

    fn claims(json: &str) -> RawClaims {
        serde_json::from_str(json).expect("test claims parse")
    }

    #[test]
    fn exp_is_exclusive_and_leeway_extends_it() {
        let c = claims(r#"{"exp": 100}"#);
        assert!(c.check(&rules(), 99).is_ok());
        assert!(matches!(
            c.check(&rules(), 100),
            Err(TokenError::Expired { exp: 100 })
        ));
        let lenient = ClaimRules {
            leeway: 5,
            ..rules()
        };
        assert!(c.check(&lenient, 104).is_ok());
        assert!(c.check(&lenient, 105).is_err());
    }

    #[test]
    fn token_without_exp_never_expires_unless_required() {
        let c = claims(r#"{"sub": "u"}"#);
        assert!(c.check(&rules(), i64::MAX).is_ok());
        let strict = ClaimRules {
            require_exp: true,
            ..rules()
        };
        assert!(matches!(
            c.check(&strict, 0),
            Err(TokenError::MissingClaim("exp"))
        ));
    }

    #[test]
    fn nbf_or_iat_in_the_future_is_not_yet_valid() {
        assert!(matches!(
            claims(r#"{"nbf": 50}"#).check(&rules(), 10),
            Err(TokenError::NotYetValid)
        ));
        assert!(matches!(
            claims(r#"{"iat": 50}"#).check(&rules(), 10),
            Err(TokenError::NotYetValid)
        ));
        assert!(
            claims(r#"{"iat": 50, "nbf": 50}"#)
                .check(&rules(), 50)
                .is_ok()
        );
    }

    #[test]
    fn audience_must_match_when_configured_and_be_absent_otherwise() {
        let want = ClaimRules {
            audience: Some("kilat".into()),
            ..rules()
        };
        assert!(claims(r#"{"aud": "kilat"}"#).check(&want, 0).is_ok());
        assert!(claims(r#"{"aud": ["x", "kilat"]}"#).check(&want, 0).is_ok());
        assert!(matches!(
            claims(r#"{"aud": "x"}"#).check(&want, 0),
            Err(TokenError::WrongAudience)
        ));
        assert!(matches!(
            claims("{}").check(&want, 0),
            Err(TokenError::WrongAudience)
        ));
        assert!(matches!(
            claims(r#"{"aud": "x"}"#).check(&rules(), 0),
            Err(TokenError::WrongAudience)
        ));
    }

    #[test]
    fn issuer_must_match_when_configured() {
        let want = ClaimRules {
            issuer: Some("app".into()),
            ..rules()
        };
        assert!(claims(r#"{"iss": "app"}"#).check(&want, 0).is_ok());
        assert!(matches!(
            claims(r#"{"iss": "evil"}"#).check(&want, 0),
            Err(TokenError::WrongIssuer)
        ));
        assert!(matches!(
            claims("{}").check(&want, 0),
            Err(TokenError::WrongIssuer)
        ));
    }

    #[test]
    fn fractional_and_huge_dates_do_not_panic() {
        assert_eq!(claims(r#"{"exp": 1.9}"#).exp, Some(1));
        assert_eq!(claims(r#"{"exp": 1e300}"#).exp, Some(i64::MAX));
        assert!(
            claims(r#"{"exp": 1e300}"#)
                .check(
                    &ClaimRules {
                        leeway: 86_400,
                        ..rules()
                    },
                    i64::MAX
                )
                .is_err()
        );
        assert!(serde_json::from_str::<RawClaims>(r#"{"exp": "soon"}"#).is_err());
    }

    #[test]
    fn subscription_needs_the_same_channel() {
        assert!(
            claims(r#"{"channel": "news"}"#)
                .into_subscription("news")
                .is_ok()
        );
        assert!(matches!(
            claims(r#"{"channel": "news"}"#).into_subscription("chat"),
            Err(TokenError::ChannelMismatch { .. })
        ));
        assert!(claims("{}").into_subscription("").is_err());
    }
}
