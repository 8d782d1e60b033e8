//! What a server needs from an engine shared by several nodes, beyond the hub's [`Broker`] and
//! [`PresenceStore`]: [`NodeRegistry`] (which nodes are alive, for `info` across nodes) and
//! [`NodeInbox`] (hand a message to one named node, for emulation POSTs that reach a node
//! other than their session's, PROTOCOL.md section 6).
//!
//! The hub itself never calls these; the server does, so it can run on any engine without
//! naming it. The memory engine is one node by construction and implements both trivially
//! ([`super::memory::SingleNode`]).
//!
//! [`Broker`]: super::Broker
//! [`PresenceStore`]: super::PresenceStore

use std::fmt;
use std::time::Duration;

use kilat_protocol::RawJson;
use tokio::sync::mpsc;

use super::{BoxFuture, EngineError};

/// Which nodes share the engine, each with a JSON description it publishes itself.
///
/// Entries expire `ttl` after their last [`NodeRegistry::heartbeat`] (judged by one clock for
/// all nodes, e.g. the Redis server's), so a node that dies drops out on its own; a node that
/// stops gracefully removes itself. Heartbeats are the caller's: the engine does not know what
/// the node wants to say about itself.
pub trait NodeRegistry: Send + Sync + fmt::Debug {
    /// Records or refreshes node `node_id` with `info` (a JSON object, e.g. its stats) for
    /// `ttl`. Replaces the previous info of that id.
    fn heartbeat<'a>(
        &'a self,
        node_id: &'a str,
        info: &'a RawJson,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Removes node `node_id` (on graceful shutdown). Idempotent.
    fn deregister<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// The info of every node whose last heartbeat has not expired, in no particular order.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<RawJson>, EngineError>>;
}

/// One inbox per node: a message sent to a node id reaches the node that opened that inbox.
///
/// Delivery is at most once and unordered across senders: a node that is down or reconnecting
/// misses what is sent meanwhile, and the sender learns from the returned receiver count
/// whether any node was listening. Payloads are opaque bytes.
pub trait NodeInbox: Send + Sync + fmt::Debug {
    /// Sends `payload` to node `node_id`'s inbox. Returns how many inboxes received it: 0 means
    /// no node with that id is listening (it is gone).
    fn send<'a>(
        &'a self,
        node_id: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, EngineError>>;

    /// Opens node `node_id`'s inbox. Messages arrive on the receiver for as long as it lives
    /// (the engine reconnects underneath); past its queue new ones are dropped. Returns once
    /// the inbox is listening. An engine may allow one open inbox only.
    fn open<'a>(
        &'a self,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<mpsc::Receiver<Vec<u8>>, EngineError>>;
}
