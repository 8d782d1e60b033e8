//! The seam for token verification: [`Authenticator`], installed with
//! [`crate::Node::set_authenticator`]. Without one, every token is refused with 401 (see
//! `docs/protocol.md`); the JWT implementation lives in another crate.

use std::fmt;

use kilat_protocol::{ClientError, RawJson};

use crate::engine::BoxFuture;

/// Who a verified token says the connection (or subscription) is.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User id (`""` = anonymous).
    pub user: String,
    /// Connection (or subscription) info, attached to presence, join/leave and publications.
    pub info: Option<RawJson>,
    /// Expiry as Unix seconds, when the token has one.
    pub expires_at: Option<u64>,
    /// Channels to subscribe the connection to at connect (the connection token's `channels`
    /// claim). Granted by the token: namespace permissions are not checked for them.
    pub channels: Vec<String>,
    /// The token's id (`jti`), for revocation through the server API (connection tokens).
    pub token_id: Option<String>,
}

/// Verifies connection and subscription tokens.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// Verifies a connection token.
    ///
    /// # Errors
    /// The error reply for the client (401 invalid, 410 expired).
    fn verify_connect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>>;

    /// Verifies a subscription token for `channel`, presented by connection `client` of `user`.
    ///
    /// # Errors
    /// The error reply for the client (401 invalid, 403 other channel or user, 410 expired).
    fn verify_subscribe<'a>(
        &'a self,
        token: &'a str,
        user: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>>;
}
