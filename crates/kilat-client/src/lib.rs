//! A Rust client of the kilat protocol (docs/protocol.md): used by `kilat pub` / `kilat sub`, the
//! tests and the benches, and by any Rust application that talks to a kilat server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kilat_client::Error> {
//! use kilat_client::{Client, ClientConfig, Event, SubscribeOptions};
//!
//! let (client, mut events) = Client::connect(ClientConfig::default()).await?;
//! client.subscribe("chat:lobby", SubscribeOptions::recoverable()).await?;
//! client.publish("chat:lobby", &serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Publication { channel, publication } = event {
//!         println!("{channel}: {}", publication.data);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Modules:
//! - `client`: [`Client`], the cheap-to-clone handle with one async method per command.
//! - `task`: the connection task that owns the socket, matches replies to command ids and
//!   reconnects.
//! - [`commands`]: commands with acknowledgement, the device side ([`commands::CommandReceiver`]).
//! - `tracker`: subscriptions, their last positions, recovery requests and de-duplication.
//! - `transport`: the WebSocket, the `connect` handshake and `\n`-batched frame splitting.
//! - `backoff`: exponential backoff with jitter above a floor, and the server's spread hint.
//! - `event`, `config`, `error`: [`Event`] / [`Events`], [`ClientConfig`] /
//!   [`SubscribeOptions`], [`Error`].
//!
//! Design decisions:
//! - One task per client owns all connection state; handles send it requests and get answers
//!   on oneshot channels. No locks, and events come out in exactly the order frames came in.
//! - Events go through an unbounded channel: a bounded one would let an application that does
//!   not read events block the task, and with it the replies the application awaits.
//! - Recovery on reconnect uses one `subscribe` per channel with `recover, offset, epoch` (not
//!   `connect.subs`): each channel keeps its own options (token, join/leave, data) and gets its
//!   own error. `connect.subs` carries the positions of server-side subscriptions only, which the
//!   server restores by itself and which the client could not subscribe to anyway.
//! - Publications of a channel being (re)subscribed are buffered until the subscribe reply, then
//!   emitted after the recovered ones; anything at or below the last delivered offset is
//!   dropped. So per channel the application sees offsets in order, without duplicates, and a
//!   gap only ever shows up as `Subscribed { recovered: false }`, reported honestly.
//! - Reconnects happen after transport failures and 3000-3499 disconnects, never after
//!   3500-3999, with exponential backoff and full jitter (no `rand` dependency: see `backoff`).
//!   The backoff starts over only after a connection stayed up for `backoff_reset_after`, so a
//!   server that ends every session at once sees the waits grow; a disconnect's `delay_ms`
//!   hint (a draining server) spreads the next attempt over that window.
//! - WebSocket is the only transport, so there is nothing to fall back to: a reconnect that
//!   fails during a drain or after a node died is retried on WebSocket with backoff.
//! - The first connect is not retried, so a wrong URL or token fails fast and visibly.
//! - `ws://` only for now; TLS (`wss://`) is a feature switch away in `transport`.
#![warn(missing_docs)]

mod backoff;
mod client;
pub mod commands;
mod config;
mod delta;
mod error;
mod event;
mod task;
mod tracker;
mod transport;

pub use client::{Client, HistoryOptions};
pub use config::{ClientConfig, SubscribeOptions};
pub use error::{Error, ProtocolError, Result};
pub use event::{CODE_CLOSED, CODE_TRANSPORT, Event, Events};
pub use kilat_protocol::reply::{
    HistoryResult, PresenceEntry, PresenceResult, PresenceStatsResult, PublishResult,
    RefreshResult, SubscribeResult,
};
pub use kilat_protocol::{
    ClientError, ClientInfo, Disconnect, Publication, RawJson, StreamPosition,
};
