//! Connection and subscription settings.

use std::time::Duration;

use kilat_protocol::{RawJson, StreamPosition};

/// How to reach the server and how to behave when the connection breaks.
///
/// Build one with [`ClientConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// WebSocket endpoint, e.g. `ws://127.0.0.1:8000/connection/websocket`.
    pub url: String,
    /// Connection token (JWT), sent in `connect`.
    pub token: Option<String>,
    /// Client name sent in `connect` (informational, shows up in server logs).
    pub name: String,
    /// Client version sent in `connect`.
    pub version: String,
    /// Custom data for the server's connect handler.
    pub data: Option<RawJson>,
    /// Reconnect after transport failures and 3000-3499 disconnects. When false the client
    /// stops (and [`crate::Event::Disconnected`] says `reconnect: false`) on the first loss.
    pub reconnect: bool,
    /// Floor and base of the reconnect backoff: attempt `n` waits a random time in
    /// `[min_reconnect_delay, min(max_reconnect_delay, min_reconnect_delay * 2^n)]`. After a
    /// disconnect with a `delay_ms` hint, at least this plus a random share of the hint. After
    /// an upgrade refused with 503 or 429 and `Retry-After` (a node at its handshake bound), at
    /// least the `Retry-After` plus the window's jitter.
    pub min_reconnect_delay: Duration,
    /// Upper bound of the reconnect backoff, the server's hint and `Retry-After` included.
    pub max_reconnect_delay: Duration,
    /// How long a connection must stay up before the backoff starts over from
    /// `min_reconnect_delay`. Connections that end sooner (a server that disconnects every
    /// session right away, say with 3001 for a reply too large) keep the attempt count, so the
    /// waits grow instead of looping at the floor.
    pub backoff_reset_after: Duration,
    /// How long to wait for the WebSocket handshake plus the `connect` reply.
    pub handshake_timeout: Duration,
    /// How long a command waits for its reply (including time spent reconnecting).
    pub request_timeout: Duration,
    /// Extra time, beyond the server's announced ping interval, to wait for any frame before the
    /// connection is considered dead and a reconnect starts.
    pub ping_grace: Duration,
}

impl ClientConfig {
    /// Defaults for `url`: anonymous, reconnecting with 200 ms .. 20 s backoff (reset after 10 s
    /// of healthy connection), 10 s timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: None,
            name: "kilat-rust".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data: None,
            reconnect: true,
            min_reconnect_delay: Duration::from_millis(200),
            max_reconnect_delay: Duration::from_secs(20),
            backoff_reset_after: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_grace: Duration::from_secs(10),
        }
    }

    /// Sets the connection token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl Default for ClientConfig {
    /// The local development server: `ws://127.0.0.1:8000/connection/websocket`.
    fn default() -> Self {
        ClientConfig::new("ws://127.0.0.1:8000/connection/websocket")
    }
}

/// Options of one subscription. They are kept and reused when the client resubscribes after a
/// reconnect.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Ask for a recoverable subscription. With `since` the server also returns what was
    /// published after that position; without it the subscription is positioned at the current
    /// end, so a later reconnect can recover. Subscriptions to channels that keep history are
    /// recovered on reconnect whatever this says.
    pub recover: bool,
    /// Recover from this position (the last offset and epoch the application saw).
    pub since: Option<StreamPosition>,
    /// Receive join/leave events (default: whatever the namespace enables).
    pub join_leave: Option<bool>,
    /// Subscription token for `allow_subscribe = "token"` namespaces.
    pub token: Option<String>,
    /// Custom data for the server's subscribe handler.
    pub data: Option<RawJson>,
    /// Receive publications as fossil deltas against the previous one (`delta: "fossil"`,
    /// channels with history only). The client applies them: events carry full payloads.
    pub delta: bool,
}

impl SubscribeOptions {
    /// Options asking for recovery from the current end of the stream.
    pub fn recoverable() -> Self {
        SubscribeOptions {
            recover: true,
            ..SubscribeOptions::default()
        }
    }
}
