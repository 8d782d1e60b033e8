//! JWT checks and minting for kilat: connection tokens and subscription tokens
//! (docs/protocol.md section 9).
//!
//! The server builds one [`Verifier`] from the `[token]` table of kilat.toml ([`TokenConfig`])
//! and calls [`Verifier::verify_connection`] on `connect`/`refresh` and
//! [`Verifier::verify_subscription`] on `subscribe`/`sub_refresh`. A refusal is a
//! [`TokenError`]; [`TokenError::error_code`] maps it to the client-facing code of docs/protocol.md
//! section 10 (401, 410 expired, 503 keys unavailable). The CLI mints development tokens with
//! [`mint`] and a [`TokenRequest`].
//!
//! # Modules
//! - `config`: [`TokenConfig`] and [`ConfigError`].
//! - `verify`: [`Verifier`]; header parsing, algorithm pinning, signature check.
//! - `claims`: [`ConnectionClaims`], [`SubscriptionClaims`], and the time/audience/issuer checks.
//! - `jwks`: fetching and caching a JSON Web Key Set ([`JwksError`]).
//! - `mint`: [`mint`], [`mint_with_key`], [`TokenRequest`].
//! - `error`: [`TokenError`], [`MalformedToken`].
//!
//! # Decisions
//! - **Algorithms are pinned by key type.** A secret allows only HS256/384/512, an RSA key
//!   only RS256/384/512 (PS* if listed), a P-256 key only ES256, a P-384 key only ES384, an
//!   Ed25519 key only EdDSA; `[token] algorithms` may narrow that but never cross key types
//!   (a mismatch is a startup error). The `alg` header is attacker-controlled: if it could
//!   choose the family, an RSA public key (public by definition) could be used as an HMAC
//!   secret to forge tokens. `alg: none` is refused before any other work, and the header is
//!   parsed by us so that it is reported as "algorithm not allowed", not a JSON error.
//! - **A token without `exp` never expires** (as in Centrifugo): the application that mints
//!   tokens decides. Set `require_exp = true` to refuse such tokens.
//! - **JWKS refresh policy.** The set is fetched on first use over HTTP/1.1 (a bare hyper
//!   client connection, bounded by `jwks_timeout_ms`; `https://` through rustls with the
//!   optional `https` feature, so default builds carry no TLS stack), cached by `kid`, and
//!   refetched when
//!   a token names an unknown `kid` or the set is older than `jwks_max_age`, but never more
//!   than once per `jwks_min_refresh_interval`: a flood of tokens with made-up `kid`s costs
//!   the identity provider one request per interval. Concurrent misses share one fetch. A
//!   failed fetch keeps the cached keys, so an outage only refuses tokens signed by keys we
//!   have never seen, and those get a temporary error (503), not "unauthorized". Symmetric
//!   (`oct`) keys in a JWKS are ignored, and HS* tokens never reach a JWKS verifier's cache.
//! - **Claims are parsed only after the signature is verified**; `info` stays raw JSON
//!   (`kilat_protocol::RawJson`) so that the server forwards it without re-encoding.
//! - **Robust to any input.** Every `verify_*` accepts any string and returns an error, never
//!   panics; tokens over [`MAX_TOKEN_LEN`] are refused before decoding. A proptest feeds
//!   random strings and random base64 segments.
//! - jsonwebtoken 11 with the `rust_crypto` backend only (no C build). Enabling its
//!   `aws_lc_rs` feature too anywhere in the build would make it panic at run time, since it
//!   could no longer pick a provider.

#![warn(missing_docs)]

mod claims;
mod config;
mod error;
mod jwks;
mod mint;
mod verify;

pub use claims::{ConnectionClaims, SubscriptionClaims};
pub use config::{ConfigError, TokenConfig};
pub use error::{MalformedToken, TokenError};
pub use jsonwebtoken::{Algorithm, EncodingKey};
pub use jwks::JwksError;
pub use mint::{MintError, TokenRequest, mint, mint_with_key};
pub use verify::{MAX_TOKEN_LEN, Verifier};
