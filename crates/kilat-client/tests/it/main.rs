//! Integration tests of `kilat-client` against a real kilat server (and, for the edge cases a
//! real server will not produce on demand, a scripted WebSocket peer). One binary, one module
//! per area.

/// Servers on free loopback ports, a TCP proxy that can cut connections, event helpers.
mod support;

/// Commands with acknowledgement: the Rust client as the device.
mod commands;
/// `delta: "fossil"` subscriptions: same documents, deltas on the wire, recovery in full.
mod delta;
/// History, presence, presence stats, join/leave.
mod presence_history;
/// Publish/subscribe round trips, ordering, unsubscribe, typed errors.
mod pubsub;
/// Connection loss, reconnect with recovery, server restart (`recovered: false`), close.
mod reconnect;
/// Scripted server: batched frames, application ping, terminal disconnect codes.
mod scripted;
