//! Integration tests of the WebSocket codec through real sockets (one test binary).
//!
//! - `interop`: an independent client (tokio-tungstenite) against the echo server.
//! - `raw`: hand-made bytes on a TCP socket for what a well-behaved client never sends.
//! - `deflate`: permessage-deflate on the wire, frames compressed by the test with flate2.
//! - `fanout`: `send_frames` with shared frames and the connection's memory footprint.

mod deflate;
mod fanout;
mod interop;
mod raw;
mod support;
