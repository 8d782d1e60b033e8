//! kilat-bench: `kilat bench`, load generation against kilat and, through protocol adapters,
//! other WebSocket servers (a raw broadcast server, Socket.IO), so the same scenario measures
//! each side by side. The `kilat` binary parses [`BenchArgs`] and calls [`run`]; nothing else
//! here is public.
//!
//! Scenarios:
//! - `connect`: ramp N connections; handshakes/s and connect latency.
//! - `idle`: hold N connections open and report the server's resident memory per connection.
//! - `fanout`: subscribers, channels and publishers; deliveries/s, publish-to-deliver latency,
//!   lost and duplicated messages, server CPU-seconds per million deliveries.
//! - `echo`: round-trip latency against an echo endpoint (`kilat echo`).
//! - `ticker`: subscribers of the ticker demo's feed; deliveries/s and feed-to-arrival latency.
//! - `soak`: a long run with churn on every axis; trends of the server's memory, files, tasks
//!   and hub sizes, and end-to-end checks of delivery and presence.
//!
//! Modules: `proto` (what each protocol sends and expects), `client` (the load clients:
//! WebSocket, SSE, HTTP), `stats` (histograms, /proc readings, tables), `workers` (spreading
//! clients over child processes).
//!
//! Design decisions:
//! - A crate of its own: it has its own dependencies (HDR histograms, progress bars, a TLS
//!   client) that the server never needs, and the CLI stays a thin argument parser.
//! - The WebSocket client frames and parses with kilat-transport's codec (`ws::frame`), the
//!   same code the server runs, rather than a second implementation.
//! - Errors are `anyhow`: this library is the body of a command-line tool whose errors are only
//!   printed, never matched on.
//! - Hand-written clients instead of a WebSocket library: the client must stay small per
//!   connection (hundreds of thousands per process) and cheap per message, or it would measure
//!   itself instead of the server.

#![warn(missing_docs)]

mod client;
mod connect;
mod echo;
mod fanout;
mod idle;
mod proto;
mod pusher;
mod reconnect;
mod soak;
mod stats;
mod ticker;
mod workers;

use clap::{Args, Subcommand};

use idle::IdleArgs;

/// Load scenarios.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// Ramp N connections at a rate; report handshakes/s and connect latency percentiles.
    ///
    /// Each connect is timed from the TCP connect to the end of the protocol's connect step
    /// (kilat: the `connect` reply; Socket.IO: the `40` ack; broadcast: the HTTP 101). All
    /// connections stay open until the last one is, so the server holds N at the end.
    /// Set --rate high (e.g. 100000) to find the server's maximum handshake rate; --concurrency
    /// bounds the handshakes in flight. --workers K spreads the connections over K processes.
    Connect(connect::ConnectArgs),
    /// Hold N idle connections and report server RSS per connection (needs --server-pid).
    ///
    /// Opens connections at --rate per second with at most --concurrency handshakes in flight,
    /// performs the protocol's connect step on each, waits --settle seconds, then reads the
    /// server's VmRSS from /proc and divides the growth by the number of connections.
    /// Compare servers by running it against each in the same session. One process can hold
    /// about as many connections as its open-files limit (`ulimit -n`); use --workers K beyond.
    Idle(IdleArgs),
    /// Subscribers, channels, publishers: deliveries/s, latency, loss, server CPU per delivery.
    ///
    /// Connects --subscribers connections, subscriber i to channel PREFIX(i mod --channels),
    /// then --publishers publish --rate messages/s in total for --duration seconds, round-robin
    /// over the channels. Each payload carries the publisher, a per-channel sequence number and
    /// the send time (this process's clock, which is also the receiving clock), so the report
    /// has publish-to-deliver latency (HDR histogram: p50/p90/p99/p99.9/max), deliveries/s,
    /// lost (expected minus delivered) and duplicated messages. Latency is reported twice: from
    /// the actual send time, and from the time the publication was due by the schedule
    /// (--rate), so a stall that holds a publisher back shows instead of hiding (no coordinated
    /// omission). With --server-pid the server's
    /// CPU time (utime+stime) over the run is reported, also per million deliveries.
    ///
    /// Publishing goes over the publishers' own WebSocket connections (kilat `publish`, which
    /// `kilat serve --dev` allows) or, with --publish-via http, through `POST /api/publish`.
    /// Other servers: --protocol broadcast (every message goes to every client; one implicit
    /// channel) or --protocol socketio (`42["msg",...]` events re-emitted to everyone).
    ///
    /// kilat limits commands per connection (node.client_command_rate, 100/s by default); a
    /// refused publish counts as a publish error, not as published. For higher rates start the
    /// server with KILAT_NODE_CLIENT_COMMAND_RATE=0, or use more publishers (-p), or publish
    /// through the HTTP API (not limited).
    ///
    /// Example: kilat bench fanout -n 1000 -r 200 -d 10 --server-pid $(pgrep -n kilat)
    Fanout(fanout::FanoutArgs),
    /// Round-trip latency on an echo endpoint (`kilat echo`, default ws://127.0.0.1:9001/).
    ///
    /// Each of --connections keeps one message of --size bytes in flight, sending the next when
    /// the echo arrives, for --duration seconds; reports round trips/s and RTT percentiles.
    Echo(echo::EchoArgs),
    /// Subscribers of the ticker demo's channel: deliveries/s and feed-to-arrival latency.
    ///
    /// Connects --subscribers to --channel (ticker:all), lets the feed run for --warmup
    /// seconds, then counts the prices every subscriber receives for --duration seconds and
    /// times each from the feed's stamp (`t`, Unix ms) to its arrival. Run it with the feed
    /// (`kilat demo feed ticker`) against a server with and without per-key conflation on the
    /// namespace: bench/ticker.sh does both in one invocation.
    ///
    /// Example: kilat bench ticker -n 1000 -d 20 --server-pid $(pgrep -n kilat)
    Ticker(ticker::TickerArgs),
    /// A long run with churn on every axis at once; samples the server and checks that nothing
    /// grows, nothing is lost and presence stays true.
    ///
    /// Keeps --clients well-behaved clients connected: each subscribes to --subs of --channels
    /// channels, acts every --action-every seconds on average (moves a subscription, asks
    /// presence or presence_stats, reads history, refreshes its token) and leaves after about
    /// --life seconds, half with a close frame and half by dropping the TCP connection, when a
    /// new client takes its place. Meanwhile --rate publications/s go through the HTTP API,
    /// each carrying its channel's sequence number, and abusive clients flood commands, send
    /// oversized frames and ask for history they never read (--abusive of each kind).
    ///
    /// Every --sample seconds it reads the server's RSS and open file descriptors (/proc, with
    /// --pid or for a server it spawned), and from /metrics its connections, sessions,
    /// subscriptions, channels, runtime and background task counts and queued bytes, plus the
    /// presence entries on its channels. After --duration it reports each quantity's trend
    /// after the warm-up (least-squares slope as % per hour of the mean); with --assert-flat
    /// PERCENT a faster growth fails the run. It then stops the churn and checks that every
    /// well-behaved client got every publication on its channels once and in order, and that
    /// the server's presence equals the clients connected. Any loss, duplicate, error reply,
    /// disconnect of a well-behaved client or presence difference fails the run (exit 1).
    ///
    /// Without --url it starts `kilat serve --dev` itself on a free port (with a token secret,
    /// so half the clients use tokens) and stops it at the end.
    ///
    /// Examples:
    ///   kilat bench soak -d 120 --assert-flat 50
    ///   kilat bench soak --url ws://127.0.0.1:8000 --pid $(pgrep -n kilat) -d 3600 --samples soak.csv
    Soak(soak::SoakArgs),
    /// Clients that stay subscribed with recovery through connection losses (the client side
    /// of bench/storm.sh).
    ///
    /// Each client connects to --url, subscribes to PREFIX(i mod --channels) with recovery and
    /// checks every publication's offset. After a loss it reconnects to --reconnect-url (the
    /// load balancer) with jittered, growing backoff and resubscribes from its last offset and
    /// epoch. After --duration seconds it reports (JSON with --json): when the first client lost
    /// its connection and the last one recovered (Unix µs, so reports of several processes
    /// combine), failed reconnect attempts, losses and duplicates (each client's end offset is
    /// checked against its channel's top). Keep -n under `ulimit -n` and run several processes
    /// (--first numbers their clients apart) for more.
    ///
    /// Example: kilat bench reconnect --url ws://127.0.0.1:8001 --reconnect-url ws://127.0.0.1:8000 -n 5000 -c 300 -d 120
    Reconnect(reconnect::ReconnectArgs),
}

/// `kilat bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Runs the chosen scenario.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Connect(a) => connect::run(a).await,
        Scenario::Idle(a) => idle::run(a).await,
        Scenario::Fanout(a) => fanout::run(a).await,
        Scenario::Echo(a) => echo::run(a).await,
        Scenario::Ticker(a) => ticker::run(a).await,
        Scenario::Soak(a) => soak::run(a).await,
        Scenario::Reconnect(a) => reconnect::run(a).await,
    }
}
