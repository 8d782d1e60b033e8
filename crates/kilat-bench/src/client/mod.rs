//! The load clients: deliberately small, one socket per connection and a read buffer that is
//! empty (no capacity) while the connection is idle, so one process can hold tens of thousands
//! of connections. Hand-written rather than a WebSocket crate: the bench needs to hold tens of
//! thousands of connections with no per-connection buffers and to parse every delivery cheaply.
//!
//! - `net.rs`: options, TLS, targets, the socket.
//! - `conn.rs`: [`Conn`] and its transport-neutral reading.
//! - `ws.rs`: WebSocket (optionally with permessage-deflate), framed with kilat-transport's
//!   codec.
//! - `sse.rs`: kilat's SSE transport, commands POSTed to the emulation endpoint.
//! - `http.rs`: a minimal HTTP/1.1 keep-alive client for publishing through an HTTP API.

mod conn;
mod http;
mod net;
mod sse;
mod ws;

pub(crate) use conn::Conn;
pub(crate) use http::HttpConn;
pub(crate) use kilat_transport::ws::frame::{OP_BINARY, OP_TEXT};
pub(crate) use net::{ClientOpts, Target, Transport, WireEncoding, configure};
pub(crate) use sse::open_sse;
pub(crate) use ws::{encode_text, open};
