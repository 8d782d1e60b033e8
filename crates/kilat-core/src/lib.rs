//! kilat-core: the hub. Channels, subscriptions, presence, history and recovery, permissions,
//! the per-connection [`Session`] state machine, the engine traits and the in-memory engine.
//! It knows no socket, no HTTP and no Redis: transports feed it decoded messages and drain an
//! [`Outbox`]; engines implement [`Broker`] and [`PresenceStore`].
//!
//! Modules:
//! - [`node`]: [`Node`], the cheap-clone hub handle, one file per role: plugin slots, the
//!   session registry, the broker handler (fan-out, gap repair, conflation timers), the
//!   subscription lifecycle and the server-side API.
//! - [`session`] (+ `commands`): [`Session`], one connection: connect, commands, ping/pong, timers.
//! - `subscriptions`: a session's subscription list and `SubState`, what the node keeps about
//!   each subscription.
//! - `time`: token expiry (Unix seconds) as TTLs and tokio instants.
//! - [`outbox`]: [`Outbox`], the per-connection queue bounded in bytes.
//! - `keys`: a publication's key (`conflate_key`), read from its data without building it.
//! - `hub`: the sharded channel -> subscribers index and the encode-once fan-out.
//! - `server_subs`: server-side subscribe/unsubscribe of a user's connections.
//! - [`recovery`]: the recovery decision as a pure function.
//! - [`revoke`]: revoked token ids and users (the server API's `revoke`).
//! - [`permissions`]: namespace permission checks as pure functions.
//! - `coalesce`: single-flight for history reads (a burst of identical recovery reads reaches
//!   the engine about once per engine round trip).
//! - [`engine`]: the [`Broker`] and [`PresenceStore`] contracts, and the server's [`NodeRegistry`]
//!   and [`NodeInbox`]; [`engine::memory`] implements them for one node.
//! - [`config`]: [`NodeConfig`] and [`NamespaceOptions`].
//! - [`auth`]: the [`Authenticator`] seam for token verification.
//! - [`observe`]: the [`Observer`] seam through which the server counts what the hub does.
//! - [`proxy`]: the [`Backend`] seam for the application's backend hooks (connect without a
//!   token, subscribe, publish, rpc, send, connection refresh).
//! - [`error`]: [`CoreError`] and its single mapping to client error codes.
//! - `limits`: token buckets for command and publication rates, connections per user.
//! - `testing` (feature `testing`): the engine conformance suite.
//!
//! Design decisions:
//! - Encode once: the broker hands each publication to the hub once; the hub serialises its push
//!   frame once into a [`kilat_protocol::SharedFrame`] and pushes clones (an `Arc` bump) into
//!   every subscriber's outbox, under one shard lock, with no global lock.
//! - Producers never wait: outboxes are bounded in bytes and close with 3001 instead of applying
//!   back-pressure to publishers.
//! - Recovery without gaps: a subscriber joins the live stream first (holding what arrives),
//!   then reads history, then the reply, the held publications newer than the position and the
//!   live stream follow in that order under the shard lock. Duplicates are dropped by offset; a
//!   gap is repaired from history or the subscription is dropped with an `unsubscribe` push
//!   asking the client to resubscribe (it then gets `recovered: false`).
//! - The memory engine calls the hub from inside `publish`, under the channel's lock, so offset
//!   order is delivery order and the property tests are deterministic.
//! - Engine traits return boxed futures so they work as `Arc<dyn Broker>` without a macro crate.
//! - The files import each other without cycles (`scripts/module-graph.py crates/kilat-core`
//!   checks it): the node's parts sit below [`Node`], sessions above it, and the data both
//!   share (`SubState`, expiry times) in leaf files.
#![warn(missing_docs)]

mod adapter;
pub mod auth;
mod coalesce;
mod commands;
pub mod config;
pub mod engine;
pub mod error;
mod hub;
mod keys;
mod limits;
pub mod node;
pub mod observe;
pub mod outbox;
pub mod permissions;
pub mod proxy;
pub mod recovery;
pub mod revoke;
mod server_subs;
pub mod session;
mod subscriptions;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod util;

pub use adapter::GrantedJoin;
pub use auth::{Authenticator, Credentials};
pub use config::{AllowPublish, AllowSubscribe, NamespaceOptions, NodeConfig};
pub use engine::{Broker, NodeInbox, NodeRegistry, PresenceStore};
pub use error::CoreError;
/// The `unsubscribe` push codes, defined in kilat-protocol; re-exported where they were first.
pub use kilat_protocol::{UNSUBSCRIBE_INSUFFICIENT_STATE, UNSUBSCRIBE_SERVER};
pub use node::inspect::{ConnectionSummary, Watch};
pub use node::{HistoryOptions, Node, NodeStats};
pub use observe::Observer;
pub use outbox::Outbox;
pub use proxy::{Backend, Hook, RequestHeaders};
pub use session::{Session, TransportInfo};
pub use util::new_epoch;

/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    /// The conflation key of `data` (raw JSON) under `field`, or why there is none: `NotObject`,
    /// `Missing`, `BadType` or `TooLong`.
    ///
    /// # Errors
    /// When `data` has no usable key, as above.
    pub fn publication_key(data: &str, field: &str) -> Result<Box<str>, String> {
        crate::keys::publication_key(data, field).map_err(|e| format!("{e:?}"))
    }
}
