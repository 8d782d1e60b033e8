//! Integration tests of the kilat server over real sockets: one test binary, one module per area.

/// Starting servers, raw WebSocket frames and a tungstenite client.
mod support;

/// Abuse: floods, oversized frames, half-open handshakes, subscribe storms, per-user and
/// per-channel limits; a well-behaved client on the same server keeps receiving everything.
mod abuse;
/// The admin console: off without a password, session and CSRF checks, the live tail, and
/// disconnecting a client with a code.
mod admin;
/// The server HTTP API with and without its key, checked against its OpenAPI document.
mod api;
/// The binary (MessagePack) encoding: the protocol over both encodings, bad binary input.
mod binary;
/// Several nodes on one real redis-server (skips loudly without one; fails under CI=true).
mod cluster;
/// CORS on the emulation endpoints for allowed cross-origin pages.
mod cors;
/// The docs checked against the code: configuration keys, API methods, links.
mod docs;
/// SSE and HTTP streaming with the emulation endpoint.
mod emulation;
/// The bound on concurrent handshakes: 503 with Retry-After past it, permits back after connect.
mod handshakes;
/// Plain HTTP endpoints: health, readiness, metrics, the UI, unknown paths.
mod http;
/// Per-key conflation and latest values over a socket.
mod keyed;
/// Graceful shutdown and the session timers (handshake timeout, ping/pong).
mod lifecycle;
/// Transport limits and errors: each bad input gets its code and other connections keep working.
mod limits;
/// Detailed metrics: what `/metrics` reports after a known load, and with metrics off.
mod metrics;
/// Connection and handshake limits per client address, and trusted proxies' X-Forwarded-For.
mod per_ip;
/// A leave on the tick of the ping timer leaves no presence entry behind.
mod presence_race;
/// Backend proxy hooks: connect, subscribe, publish, rpc, send and refresh over HTTP.
mod proxy;
/// `https://` proxy hooks against a local TLS backend with a test CA.
mod proxy_tls;
/// The Pusher endpoint: malformed frames, refused keys, client-event rate (pusher-js itself is
/// tested in e2e/pusher).
mod pusher;
/// Token revocation by `jti` and by user, on one node and across nodes on Redis.
mod revoke;
/// Regression tests of issue 20's attacks: each fails, and nobody else loses anything.
mod security;
/// Engine.IO and Socket.IO: broken and hostile inputs get the reference server's answers.
mod socketio;
/// TLS (`wss://`), origin checks and half-open handshakes.
mod tls_origin;
/// Tokens: connection and subscription JWTs through a real socket.
mod tokens;
/// `node.write_delay_ms`: pushes held to share a write, replies at once.
mod write_delay;
