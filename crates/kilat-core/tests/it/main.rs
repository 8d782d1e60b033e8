//! kilat-core integration tests: sessions driven through real [`kilat_core::Outbox`]es, no
//! sockets. Time-dependent tests run on tokio's paused clock.

/// Test client and node helpers.
mod support;

/// Token verification through a fake `Authenticator`: connect, subscribe, refresh, expiry.
mod auth;
/// Identical concurrent history reads reach the engine once (single-flight).
mod coalesce;
/// Parallel publishers and recovering subscribers on a multi-threaded runtime.
mod concurrency;
/// Conflation (`conflate_ms`): one publication per window, the newest.
mod conflation;
/// `delta: "fossil"` subscriptions: same documents, full after recovery, errors.
mod delta;
/// The engine conformance suite against the memory engine, and memory-engine TTLs.
mod engine;
/// Outbox limits, drain, ping/pong and timers.
mod lifecycle;
/// Presence, join/leave and their cleanup.
mod presence;
/// Join/leave as batched `presence_diff` pushes: a property test.
mod presence_diff;
/// Presence equals the subscribed set under any interleaving, ping refreshes included.
mod presence_props;
/// Property test: random interleavings keep the delivery guarantee.
mod property;
/// Subscribe with recovery, `connect.subs`, positions and epochs.
mod recovery;
/// Revocation of tokens (`jti`) and users.
mod revoke;
/// Connect, every command, pushes, and each error and disconnect code.
mod session;
