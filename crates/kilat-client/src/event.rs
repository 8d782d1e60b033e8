//! What the client reports to the application, in order, through [`Events`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use kilat_protocol::{ClientError, ClientInfo, Publication, RawJson};
use tokio::sync::mpsc;

/// One thing that happened on the connection.
///
/// Per channel, publications come in offset order with no duplicate: after a (re)subscribe,
/// [`Event::Subscribed`] comes first, then the recovered publications, then live ones.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection was established and `connect` succeeded (the first time and after each
    /// reconnect).
    Connected {
        /// The connection id the server chose.
        client: String,
        /// False for the first connection, true after a reconnect.
        reconnected: bool,
    },
    /// The connection was lost or closed.
    Disconnected {
        /// The server's disconnect code (3000-3999), or a WebSocket code for transport
        /// failures ([`CODE_TRANSPORT`]) and for [`crate::Client::close`] ([`CODE_CLOSED`]).
        code: u16,
        /// Human-readable reason.
        reason: String,
        /// Whether the client will reconnect (and recover its subscriptions).
        reconnect: bool,
    },
    /// A reconnect attempt will start after `delay`.
    Reconnecting {
        /// Attempts since the backoff last started over: 1 for the first attempt after a
        /// connection that stayed up for [`crate::ClientConfig::backoff_reset_after`]; it keeps
        /// counting across connections that end sooner.
        attempt: u32,
        /// The (jittered) wait before this attempt, the server's `delay_ms` hint included.
        delay: Duration,
    },
    /// A subscription became active: a [`crate::Client::subscribe`] reply, a resubscribe after a
    /// reconnect, or a server-side subscription.
    Subscribed {
        /// The channel.
        channel: String,
        /// True when recovery was asked for and every missed publication was recovered. False
        /// after a reconnect means a gap the client cannot fill: the application must reload
        /// the channel's state.
        recovered: bool,
        /// Whether the client asked for recovery (false on a first subscribe without `since`).
        recovering: bool,
        /// True when this is a resubscribe after a reconnect.
        resubscribed: bool,
        /// Whether the channel keeps history (so a later reconnect can recover).
        recoverable: bool,
        /// The stream position after the recovered publications.
        offset: u64,
        /// The stream's epoch.
        epoch: String,
        /// True for server-side subscriptions (token claims or the server API).
        server_side: bool,
    },
    /// The server removed a subscription (`unsubscribe` push), or a resubscribe after a
    /// reconnect failed.
    Unsubscribed {
        /// The channel.
        channel: String,
        /// The server's code (for a failed resubscribe: the error reply's code).
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// A publication in a subscribed channel.
    Publication {
        /// The channel.
        channel: String,
        /// The publication (`data`, `offset`, `info`).
        publication: Publication,
    },
    /// Someone joined a channel this client subscribed to with join/leave.
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        info: ClientInfo,
    },
    /// Someone left a channel this client subscribed to with join/leave.
    Leave {
        /// The channel.
        channel: String,
        /// Who left.
        info: ClientInfo,
    },
    /// The channel's counts, sent once per join/leave window instead of the changes while the
    /// channel has more subscribers than its namespace's `presence_diff_max`.
    PresenceCount {
        /// The channel.
        channel: String,
        /// Connections present, on every node.
        num_clients: u32,
        /// Distinct users among them.
        num_users: u32,
    },
    /// Data the server sent to this connection only.
    Message {
        /// The payload, raw JSON.
        data: RawJson,
    },
    /// The server asks for a fresh token: answer with [`crate::Client::refresh`] (no channel)
    /// or [`crate::Client::sub_refresh`] (for a channel).
    RefreshRequested {
        /// The channel for a subscription token, `None` for the connection token.
        channel: Option<String>,
        /// Seconds left before the server acts.
        ttl: Option<u32>,
    },
    /// A resubscribe after a reconnect was refused; the subscription is dropped.
    SubscribeFailed {
        /// The channel.
        channel: String,
        /// The server's error.
        error: ClientError,
    },
}

/// `Disconnected.code` for a transport failure (WebSocket "abnormal closure").
pub const CODE_TRANSPORT: u16 = 1006;
/// `Disconnected.code` after [`crate::Client::close`] (WebSocket "normal closure").
pub const CODE_CLOSED: u16 = 1000;

/// The ordered stream of [`Event`]s of one client.
///
/// It ends after the final [`Event::Disconnected`] (with `reconnect: false`). Events are buffered
/// without bound so a slow reader never stalls command replies; read them promptly. Dropping
/// `Events` is fine: events are then discarded.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event, or `None` once the client has stopped for good.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call loses no event.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is already buffered.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
