//! Token verification for the hub: [`kilat_core::Authenticator`] implemented over
//! [`kilat_auth::Verifier`], with the one mapping from token errors to client error codes.

use kilat_auth::{TokenError, Verifier};
use kilat_core::engine::BoxFuture;
use kilat_core::{Authenticator, Credentials};
use kilat_protocol::{ClientError, ErrorCode};

/// JWT verification installed on the node when a `[token]` key is configured.
#[derive(Debug, Clone)]
pub(crate) struct JwtAuthenticator {
    verifier: Verifier,
}

impl JwtAuthenticator {
    pub(crate) fn new(verifier: Verifier) -> Self {
        JwtAuthenticator { verifier }
    }
}

/// Maps a token failure to what the client sees; the detail goes to the debug log only, so a
/// prober learns "invalid" or "expired" and nothing about keys or claims.
fn client_error(error: &TokenError) -> ClientError {
    tracing::debug!(%error, "token refused");
    let message = match error.code() {
        410 => "token expired",
        503 => "token keys unavailable, try again",
        _ => "invalid token",
    };
    ClientError::new(error.error_code(), message)
}

fn unix_seconds(exp: Option<i64>) -> Option<u64> {
    exp.and_then(|e| u64::try_from(e).ok())
}

impl Authenticator for JwtAuthenticator {
    fn verify_connect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async move {
            let claims = self
                .verifier
                .verify_connection(token)
                .await
                .map_err(|e| client_error(&e))?;
            Ok(Credentials {
                user: claims.sub,
                info: claims.info,
                expires_at: unix_seconds(claims.exp),
                channels: claims.channels,
                token_id: claims.jti,
            })
        })
    }

    fn verify_subscribe<'a>(
        &'a self,
        token: &'a str,
        user: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async move {
            let claims = self
                .verifier
                .verify_subscription(token, channel)
                .await
                .map_err(|e| client_error(&e))?;
            // A subscription token is issued to one user: another connection cannot reuse it.
            if claims.sub != user {
                return Err(ClientError::new(
                    ErrorCode::PERMISSION_DENIED,
                    "subscription token belongs to another user",
                ));
            }
            Ok(Credentials {
                user: claims.sub,
                info: claims.info,
                expires_at: unix_seconds(claims.exp),
                channels: Vec::new(),
                token_id: None,
            })
        })
    }
}
