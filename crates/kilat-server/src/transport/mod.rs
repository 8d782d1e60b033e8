//! Every client transport, side by side: each turns its bytes into protocol frames and back
//! and hands the connection to the one loop in [`driver`], which joins the transport's
//! [`driver::Wire`] to a hub [`kilat_core::Session`].
//!
//! - `admission`: the checks every transport makes before a connection starts (draining,
//!   origin, per-address limits, connection slot, forwarded headers) and the creation of its
//!   session and outbox.
//! - `handshakes`: the bound on connections between admission and connect reply
//!   (`server.max_handshakes`).
//! - `peer`: the peer address on each request, the client address behind trusted proxies
//!   (`X-Forwarded-For`) and the per-address connection and handshake limits.
//! - [`driver`]: the `Wire` trait and the connection loop every transport rides.
//! - [`websocket`]: `GET /connection/websocket`, the upgrade and the WebSocket `Wire`.
//! - [`emulation`]: SSE (`GET /connection/sse`) and HTTP streaming (`POST /connection/stream`),
//!   which share their session registry and differ only in the output format, and
//!   `POST /connection/emulation`, which carries their clients' commands.
//! - [`front`]: reads the first request of a connection before hyper, so a stream request is
//!   served on the socket itself.
//!
//! A new transport (long polling, Socket.IO, Pusher) is one more file here: its route or
//! upgrade, a call to `admission::admit`, and a `Wire` for the driver.

pub(crate) mod admission;
pub(crate) mod driver;
pub(crate) mod emulation;
pub(crate) mod front;
pub(crate) mod handshakes;
pub(crate) mod peer;
pub(crate) mod websocket;
