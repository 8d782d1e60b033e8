//! The Redis engine for kilat: several nodes share channels, history and presence through
//! one Redis.
//!
//! [`RedisEngine`] implements kilat-core's [`Broker`](kilat_core::engine::Broker) and
//! [`PresenceStore`](kilat_core::engine::PresenceStore) and passes the same conformance suite
//! as the memory engine (`kilat_core::testing`). For the server it also implements
//! [`NodeRegistry`](kilat_core::engine::NodeRegistry) and
//! [`NodeInbox`](kilat_core::engine::NodeInbox), so the server never names this crate's types
//! beyond constructing the engine.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kilat_engine_redis::RedisEngineError> {
//! use std::sync::Arc;
//! use kilat_engine_redis::{RedisConfig, RedisEngine};
//!
//! let engine = Arc::new(RedisEngine::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?);
//! let broker: Arc<dyn kilat_core::Broker> = engine.clone();
//! let presence: Arc<dyn kilat_core::PresenceStore> = engine;
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - `engine`: [`RedisEngine`], the trait implementations; `conn`: the command connection
//!   and the publish connection (a `ConnectionManager` each, or the cluster connection).
//! - `pubsub`: single Redis: the sharded pub/sub connections, delivery to the hub, reconnect
//!   and resubscribe. `cluster`: Redis Cluster: sharded pub/sub (`SSUBSCRIBE`).
//! - `scripts`: the Lua scripts (publish, history, presence, registry).
//! - `registry`: the node registry ([`RedisEngine::heartbeat_node`], [`RedisEngine::nodes`]).
//! - `inbox`: node inboxes ([`RedisEngine::send_to_node`], [`RedisEngine::node_inbox`]).
//! - `keys`: key and channel names; `codec`: the pub/sub message format.
//! - [`config`]: [`RedisConfig`]; [`error`]: [`RedisEngineError`].
//!
//! # Key layout
//!
//! Every key of kilat channel `C` starts with the hash tag `{<prefix>:ch:C}` (prefix `kilat` by
//! default), so a Redis Cluster keeps them in one slot and one script may use them all:
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `{kilat:ch:C}:meta` | hash | `e` epoch, `o` top offset | `meta_ttl` (at least the history TTL), refreshed per publish |
//! | `{kilat:ch:C}:stream` | stream | entry id `<offset>-0`, fields `d` publication JSON, `x` expiry ms | history TTL, refreshed per publish |
//! | `{kilat:ch:C}:presence` | hash | client id -> ClientInfo JSON | longest entry TTL |
//! | `{kilat:ch:C}:presence:exp` | zset | client id scored by expiry ms | same |
//! | `{kilat:ch:C}:presence:users` | hash | user id -> that user's entries (so `presence_stats` is two lengths) | same |
//! | `{kilat:ch:C}:pub` | pub/sub channel (sharded in a cluster) | see `codec` | - |
//! | `{kilat:nodes}` / `{kilat:nodes}:exp` | hash / zset | node id -> info JSON / expiry | longest heartbeat TTL |
//!
//! # Decisions
//!
//! - **History in a Stream, entry id = offset.** `XADD ... MAXLEN n <offset>-0` appends and
//!   trims exactly in one command, and because the id *is* the offset, "after offset N" and
//!   "the n newest before N" are plain `XRANGE`/`XREVRANGE` calls, O(log n) without scanning
//!   (a list would need the offset of its head to index into it). Entries expire one by one:
//!   each carries its expiry and a history read trims the expired head; the whole stream also
//!   expires with the history TTL when the channel goes quiet.
//! - **One Lua script per publish** reads or creates the epoch, increments the offset, appends,
//!   trims, sets both TTLs and `PUBLISH`es the publication with its offset and epoch. Redis runs
//!   a script atomically, so no two publishes of a channel interleave: offsets have no gaps or
//!   repeats, and the order of the `PUBLISH`es, hence the order in which every subscribed
//!   node receives them (one connection per channel, Redis keeps per-connection order), is
//!   the offset order. The epoch is a random string made by the caller and used only when the
//!   meta hash is missing; the script then drops any leftover stream, so a stream never mixes
//!   epochs. Scripts go out as `EVALSHA`, with `SCRIPT LOAD` on `NOSCRIPT`.
//! - **Redis time.** Expiry of history entries and presence is judged with Redis' `TIME` inside
//!   scripts, so nodes with skewed clocks agree.
//! - **Node subscriptions.** A node `SUBSCRIBE`s a channel only while it has local subscribers;
//!   `subscribe` returns after Redis confirmed, so every publication accepted afterwards
//!   reaches this node (docs/protocol.md section 8). Channels are spread by name hash over
//!   `pubsub_shards` dedicated connections.
//! - **Redis Cluster** (`RedisConfig::cluster_nodes`): one RESP3 cluster connection carries
//!   commands and sharded pub/sub. The publish script `SPUBLISH`es to the channel's sharded
//!   channel, which shares the slot of the channel's keys, so it runs on the master that owns
//!   both; the cluster client routes `SSUBSCRIBE` there and resubscribes after failovers and
//!   slot moves. Order per channel holds for the same reason as above.
//! - **Publications on their own connection** (single Redis). A multiplexed connection answers
//!   in order, so on one shared connection a publish waited behind every call queued before
//!   it; in a reconnect storm those are thousands of recovery reads, presence adds and joins,
//!   and publishes exceeded `command_timeout` (503 to the publisher) or, on time, were late by
//!   hundreds of milliseconds for every subscriber. The publish scripts and unstored
//!   `PUBLISH`es go on a second `ConnectionManager`, which Redis serves between the storm's
//!   commands (docs/reliability.md, the reconnect storm). Join/leave publishes stay with the
//!   handshake work they belong to. Order per channel is unchanged: one channel's publications
//!   all take the publish connection.
//! - **Failures are bounded.** Every command and confirmation is capped by `command_timeout`:
//!   with Redis down or stuck (SIGSTOP), `publish` fails fast with an engine error (the client
//!   gets 503) and nothing hangs. Commands reconnect through `ConnectionManager`; each pub/sub
//!   connection is watched by its task (end of stream, or a failed ping when idle), which
//!   reconnects with exponential backoff and resubscribes its channels in batches of
//!   `resubscribe_batch`.
//! - **Redis restarts** (without persistence) lose every meta hash: the next publish or history
//!   read of a channel creates a new epoch and offsets restart at 1, so recovering clients get
//!   `recovered: false`, never a silent gap.
//! - **Catch-up after a pub/sub reconnect** (single Redis): each connection's task remembers
//!   the last offset and epoch it delivered per channel. After reconnecting and resubscribing
//!   it reads each channel's history after that offset and delivers what was missed, then
//!   drops the duplicates queued on the new connection, so delivery stays gap-free and in
//!   offset order without waiting for a next publication. When history no longer reaches back
//!   (trimmed) the hub sees the offset jump; when the epoch changed, it sees the new epoch on
//!   the next publication. In cluster mode the cluster client resubscribes by itself and
//!   offers no hook, so missed publications are repaired only by the hub on the next one.
//! - **Timeouts are ambiguous**: a publish that timed out may still have been applied (Redis was
//!   only slow). The client sees an error for a publication others may receive.

#![warn(missing_docs)]

mod cluster;
mod codec;
pub mod config;
mod conn;
mod engine;
pub mod error;
mod inbox;
mod keys;
mod owners;
mod pubsub;
mod registry;
mod scripts;

pub use config::RedisConfig;
pub use engine::RedisEngine;
pub use error::RedisEngineError;
