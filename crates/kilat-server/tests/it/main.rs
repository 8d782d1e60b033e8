//! Integration tests of the kilat server over real sockets: one test binary, one module per area.

/// Starting servers, raw WebSocket frames and a tungstenite client.
mod support;

/// Abuse: floods, oversized frames, half-open handshakes, subscribe storms, per-user and
/// per-channel limits; a well-behaved client on the same server keeps receiving everything.
mod abuse;
/// The server HTTP API with and without its key, checked against its OpenAPI document.
mod api;
/// Several nodes on one real redis-server (skips loudly without one; fails under CI=true).
mod cluster;
/// The docs checked against the code: configuration keys, API methods, links.
mod docs;
/// SSE and HTTP streaming with the emulation endpoint.
mod emulation;
/// Plain HTTP endpoints: health, readiness, metrics, the UI, unknown paths.
mod http;
/// Graceful shutdown and the session timers (handshake timeout, ping/pong).
mod lifecycle;
/// Transport limits and errors: each bad input gets its code and other connections keep working.
mod limits;
/// Backend proxy hooks: connect, subscribe, publish, rpc, send and refresh over HTTP.
mod proxy;
/// Regression tests of issue 20's attacks: each fails, and nobody else loses anything.
mod security;
/// Engine.IO and Socket.IO: broken and hostile inputs get the reference server's answers.
mod socketio;
/// TLS (`wss://`), origin checks and half-open handshakes.
mod tls_origin;
/// Tokens: connection and subscription JWTs through a real socket.
mod tokens;
