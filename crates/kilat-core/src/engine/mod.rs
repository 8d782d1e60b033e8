//! The engine contracts: [`Broker`] (publish/subscribe/history) and [`PresenceStore`], and for
//! the server's multi-node needs [`NodeRegistry`] and [`NodeInbox`].
//!
//! The hub talks to other nodes and to stored state only through these two traits, so the
//! memory engine (one node) and the Redis engine (many nodes) are interchangeable. Both traits
//! are object safe and used as `Arc<dyn Broker>` / `Arc<dyn PresenceStore>`; async methods
//! return boxed futures ([`BoxFuture`]). Run [`crate::testing`]'s conformance suite against
//! every implementation.

pub mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kilat_protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use thiserror::Error;
use tokio::sync::mpsc;

/// The shard of `channel` among `n` (0 when `n` is 0): FNV-1a of the name, deterministic
/// across processes and cheap, so the hub and every engine spread channels the same way.
pub fn shard_of(channel: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// A boxed, sendable future: what engine methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Engine failures. The hub maps them to error 503 for the client and logs the detail.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The backing store cannot be reached or refused the operation.
    #[error("engine unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A [`PresenceStore::page`] cursor this engine never handed out (error 400 for the
    /// client: cursors are opaque and come from the client).
    #[error("bad presence cursor")]
    BadCursor,
}

/// Receives what the broker delivers to this node. Implemented by the hub.
///
/// Calls for one channel are made one at a time, in offset order (the memory engine calls
/// from inside `publish`, under the channel's lock). Implementations must not block or call
/// back into the broker; the hub only pushes into bounded queues.
pub trait BrokerHandler: Send + Sync {
    /// A publication in `channel` (only for channels this node subscribed to; the memory engine
    /// may also call for others, the hub ignores them). `epoch` is the stream's epoch, `""`
    /// when the channel keeps no history (then `publication.offset` is `None`).
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str);
    /// A join (`join = true`) or leave event in `channel`.
    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool);
}

/// History settings for one publish, from the channel's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// Publications kept (0: no history; the publication gets no offset).
    pub history_size: usize,
    /// How long each publication is kept.
    pub history_ttl: Duration,
}

/// Which part of a channel's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Without `reverse`: only publications with offset > `since`. With `reverse`: only those
    /// with offset < `since`.
    pub since: Option<u64>,
    /// At most this many publications (`Some(0)`: only the position). `None`: all kept.
    pub limit: Option<usize>,
    /// Newest first. Without `since`, the `limit` newest; with `since`, the `limit` newest
    /// before it.
    pub reverse: bool,
}

/// A history read: the publications and the stream position at the moment of the read.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Selected publications, ascending by offset (descending with `reverse`).
    pub publications: Vec<Publication>,
    /// The stream's top offset and epoch, read atomically with `publications`.
    pub position: StreamPosition,
}

/// Whether a presence change is a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinLeave {
    /// A client subscribed.
    Join,
    /// A client unsubscribed or disconnected.
    Leave,
}

/// Publications, node subscriptions and history: the multi-node fan-out contract.
///
/// Offsets and epochs: a channel with history has a stream. Each publication appended gets
/// `offset = previous + 1` (the first is 1), assigned atomically with the append, so offsets in
/// a stream have no gaps and no repeats. The stream's `epoch` is a string chosen at random when
/// the stream is created; whenever the stream is lost (TTL of its metadata, engine restart,
/// [`Broker::remove_history`]) a new stream starts with a new epoch and offsets restart at 1.
/// A position `(offset, epoch)` is therefore meaningful only within its epoch.
pub trait Broker: Send + Sync + fmt::Debug {
    /// Installs the handler that receives publications and join/leave events for this node.
    /// Called once by the hub before any other method.
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>);

    /// Publishes to `channel`. With `history_size > 0` the publication is appended to the
    /// stream and given the next offset atomically; the stream is trimmed to `history_size`
    /// and entries expire after `history_ttl`. Delivery to every subscribed node (this one
    /// included) happens in offset order per channel. Returns the new position, or `None`
    /// without history.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, EngineError>>;

    /// Sends a join or leave event to every node subscribed to `channel`. Not stored.
    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        kind: JoinLeave,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Subscribes this node to `channel`: once it returns, every publication accepted
    /// afterwards reaches the handler. Idempotent.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Unsubscribes this node from `channel`. Idempotent.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Reads history (see [`HistoryQuery`]). The position is read atomically with the
    /// publications. A channel with no stream gets one (a new epoch, offset 0), so the returned
    /// epoch is the one later publications will carry.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>>;

    /// Drops `channel`'s stream: its publications, offset and epoch (and its latest values).
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// [`Broker::publish`] with history (`options.history_size` > 0; without, it publishes
    /// and keeps nothing), keeping the publication as the latest value of `key` in `channel`
    /// for `options.history_ttl` (a namespace with `latest`), atomically with the publish: a
    /// [`Broker::latest`] read sees either the publication in the latest values, or a position
    /// below its offset (so a subscriber positioned there receives it live).
    ///
    /// Contract: values belong to the stream's epoch and go with it (a stream that is lost or
    /// removed takes its latest values along). A key keeps the publication with the highest
    /// offset. A channel keeps at most `max_keys` keys: a publication with a new key past that
    /// is published but not kept ([`Latest::Full`]). Expired values are never returned.
    fn publish_latest<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
        key: &'a str,
        max_keys: usize,
    ) -> BoxFuture<'a, Result<(Option<StreamPosition>, Latest), EngineError>>;

    /// The latest value of every key of `channel` (see [`Broker::store_latest`]), ascending by
    /// offset, with the stream position read atomically with them (every returned offset is
    /// at or below it). Like [`Broker::history`], a channel with no stream gets one.
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HistoryPage, EngineError>>;
}

/// Outcome of [`Broker::store_latest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latest {
    /// Kept as the key's latest value.
    Kept,
    /// Not kept: the publication has no offset (no history).
    Unstored,
    /// Not kept: the channel holds `max_keys` other keys already.
    Full,
}

/// Counts of a channel's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceStats {
    /// Connections present.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// One page of a channel's presence ([`PresenceStore::page`]).
#[derive(Debug, Clone, Default)]
pub struct PresencePage {
    /// Entries of this page.
    pub entries: Vec<ClientInfo>,
    /// Where the next page starts; `""` when this page is the last.
    pub cursor: String,
}

/// The size of `info` counted against a presence page's byte budget: its strings and a fixed
/// allowance for the JSON around them (`{"<client>":{"user":"","info":}}`).
pub fn presence_entry_len(info: &ClientInfo) -> usize {
    const FIXED: usize = 32;
    FIXED + info.client.len() + info.user.len() + info.info.as_ref().map_or(0, |i| i.get().len())
}

/// Who is subscribed to a channel, across nodes.
///
/// Entries expire `ttl` after their last [`PresenceStore::add`] or [`PresenceStore::touch`];
/// sessions refresh them periodically, so entries of a node that died disappear on their own.
pub trait PresenceStore: Send + Sync + fmt::Debug {
    /// Adds `info` to `channel`'s presence, or refreshes it (same `info.client`), for `ttl`.
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Refreshes, in one call, the entries in `entries` that `channel` holds with the same info
    /// (client, user and info), for `ttl`; returns the indices of the others (left, expired,
    /// info changed, or lost by the store), which the caller re-adds one by one. Never creates
    /// an entry, so a refresh that loses a race with a leave cannot bring the entry back. The
    /// default refreshes nothing and returns every index.
    fn touch<'a>(
        &'a self,
        channel: &'a str,
        entries: &'a [ClientInfo],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        let _ = (channel, ttl);
        Box::pin(async move { Ok((0..entries.len()).collect()) })
    }

    /// Removes the entry of connection `client`. Idempotent.
    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Every unexpired entry, in no particular order.
    fn list<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>>;

    /// Counts of unexpired entries.
    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<PresenceStats, EngineError>>;

    /// One page of `channel`'s unexpired entries, starting at `cursor` (`""`: the first page;
    /// otherwise a [`PresencePage::cursor`] this store returned): at most `limit` entries
    /// (at least 1) and, beyond the page's first entry, at most `max_bytes` of
    /// [`presence_entry_len`]. The Redis engine returns whole scan batches, so it may go over
    /// by one batch of a few entries, and a small channel stored compactly (at most 512
    /// entries of at most 64 bytes: 32 KiB) comes whole.
    ///
    /// Contract: paging from `""` until the cursor comes back `""` returns every entry present
    /// throughout the paging at least once, and exactly once while the channel's entries only
    /// grow or stay (concurrent joins); entries added or removed meanwhile may or may not
    /// appear. A cursor this store cannot have made is [`EngineError::BadCursor`].
    fn page<'a>(
        &'a self,
        channel: &'a str,
        cursor: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<PresencePage, EngineError>>;
}

// What a server needs from an engine shared by several nodes, beyond the hub's traits: which
// nodes are alive (for `info` across nodes) and a way to hand a message to one named node (for
// emulation POSTs that reach a node other than their session's, docs/protocol.md section 11). The
// hub itself never calls these; the server does, so it runs on any engine without naming it.
// The memory engine is one node by construction and implements both trivially
// (`memory::SingleNode`).

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

    /// Removes the presence entries of nodes that left the registry without deregistering
    /// (they died), publishing a leave for each entry so every node sends its subscribers the
    /// leave; `node_id` is the caller, never removed. Returns how many entries went. Called
    /// by every node with its heartbeat; one caller handles each dead node. The default, for
    /// engines with one node, removes nothing.
    fn reap_dead_nodes<'a>(
        &'a self,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, EngineError>> {
        let _ = node_id;
        Box::pin(async { Ok(0) })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_in_range() {
        for n in 1..8 {
            assert!(shard_of("a", n) < n);
        }
        assert_eq!(shard_of("a", 0), 0);
    }
}
