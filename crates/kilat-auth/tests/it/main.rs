//! kilat-auth integration tests: one binary, one module per concern.

/// Test keys (checked in under tests/keys, used nowhere else) and token-signing helpers.
mod common;

/// HMAC secrets: claims, time checks, audience/issuer, channel binding, error codes.
mod hmac;

/// RSA, EC and Ed25519 public keys: each algorithm, wrong keys, algorithm confusion, `alg: none`.
mod asymmetric;

/// JWKS over HTTP from a local server: fetch, key rotation, rate limit, outages and timeouts.
mod jwks;

/// Minting with `mint`/`mint_with_key`, then verifying what was minted.
mod mint;

/// Property tests: any input to the verify functions is an error, never a panic.
mod fuzz;
