//! The fanout scenario's options.

use clap::{Args, ValueEnum};

use crate::client::ClientOpts;
use crate::proto::Protocol;
use crate::workers::WorkerOpts;

/// How publishers publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// Over their own WebSocket connections (kilat `publish` command, or a plain message).
    Ws,
    /// Through an HTTP API: kilat's `POST /api/publish`, or with `--protocol pusher` the
    /// Pusher HTTP API's `POST /apps/{id}/events`, signed.
    Http,
}

/// What publishers publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Feed {
    /// The bench marker padded with filler to --size.
    Padded,
    /// A ticker snapshot of --size bytes (quotes) of which each publication changes one quote:
    /// the kind of feed `--delta` is for.
    Ticker,
}

/// Options of the fanout scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// WebSocket URL of the server (the protocol's default path is used when it has none).
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    pub(super) url: String,
    /// Server protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Kilat)]
    pub(super) protocol: Protocol,
    /// Subscriber connections.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(super) subscribers: usize,
    /// Channels; subscriber i joins channel i mod C (kilat and Pusher; other servers have one).
    #[arg(long, short = 'c', default_value_t = 1)]
    pub(super) channels: usize,
    /// Publishers; each publishes R/P messages/s, round-robin over the channels.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub(super) publishers: usize,
    /// Messages per second published in total (not deliveries).
    #[arg(long, short = 'r', default_value_t = 200.0)]
    pub(super) rate: f64,
    /// Payload size in bytes (JSON carrying the publisher, a sequence number and a timestamp).
    #[arg(long, short = 's', default_value_t = 100)]
    pub(super) size: usize,
    /// What each publication carries.
    #[arg(long, value_enum, default_value_t = Feed::Padded)]
    pub(super) feed: Feed,
    /// Subscribe with `delta: "fossil"` (kilat over WebSocket): publications arrive as deltas
    /// against the previous one, and subscribers apply them before checking what they got.
    #[arg(long)]
    pub(super) delta: bool,
    /// Seconds of publishing.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub(super) duration: f64,
    /// Publish over WebSocket connections or through the HTTP API.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    pub(super) publish_via: Via,
    /// HTTP API publish URL [default: http://<host of --url>/api/publish, or with --protocol
    /// pusher http://<host of --url>/apps/<--pusher-app-id>/events].
    #[arg(long)]
    pub(super) api_url: Option<String>,
    #[command(flatten)]
    pub(super) pusher: crate::pusher::PusherOpts,
    /// API key for --publish-via http (not needed with `kilat serve --dev`).
    #[arg(long)]
    pub(super) api_key: Option<String>,
    /// Channel name prefix (channels are PREFIX0, PREFIX1, ...).
    #[arg(long, default_value = "bench")]
    pub(super) channel_prefix: String,
    /// PID of the server, whose CPU time (utime+stime from /proc) is read before and after.
    #[arg(long)]
    pub(super) server_pid: Option<u32>,
    /// New subscriber connections per second while setting up.
    #[arg(long, default_value_t = 5000)]
    pub(super) connect_rate: u32,
    /// Handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 256)]
    pub(super) concurrency: usize,
    /// Seconds to wait for in-flight deliveries after publishing stops (ends earlier when quiet).
    #[arg(long, default_value_t = 3.0)]
    pub(super) drain: f64,
    #[command(flatten)]
    pub(super) client: ClientOpts,
    #[command(flatten)]
    pub(super) workers: WorkerOpts,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

/// Channels in use: `--channels` for protocols with channels, else the one implicit channel.
pub(super) fn channels(args: &FanoutArgs) -> usize {
    if args.protocol.has_channels() {
        args.channels.max(1)
    } else {
        1
    }
}
