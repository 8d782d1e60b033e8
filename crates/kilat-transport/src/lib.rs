//! kilat transports: the WebSocket codec (RFC 6455 + RFC 7692) the server speaks to clients.
//!
//! Modules:
//! - [`ws`]: handshake and extension negotiation, [`ws::WsConnection`] (read messages, write
//!   shared frames, close), [`ws::frame`] (the pure frame parser/encoder) and [`ws::echo`] (an
//!   echo server for conformance runs).
//! - [`binary`]: the MessagePack encoding of a shared frame and its encoding slots.
//! - [`text`]: the SSE event and NDJSON line encodings of the HTTP transports.
//!
//! Design decisions:
//! - **Our own codec on hyper's upgrade** instead of a WebSocket crate. No maintained crate
//!   lets the server compress a publication once and send the same bytes to every subscriber
//!   (docs/architecture.md, "Why kilat has its own WebSocket codec", compares them). Server frames are unmasked, and RFC 7692 7.1.1.1 lets a server
//!   compress its own messages without context takeover whatever the client asked, so a
//!   frame's wire bytes depend only on the message and the window bits: they are cached in the
//!   [`kilat_protocol::SharedFrame`] encoding slots ([`ws::SLOT_PLAIN`], [`ws::SLOT_DEFLATE_15`],
//!   [`ws::SLOT_DEFLATE_9`]) and computed once per publication.
//! - **Tiny idle connections.** No read buffer is held between messages (reads go through a
//!   stack buffer; a heap buffer exists only while a frame is in flight), compressors are
//!   thread-local, decompressors are allocated on the first compressed message and, by default,
//!   returned to a per-thread pool after each message. `WsConnection<TcpStream>` is 240 bytes;
//!   the release echo server measured about 2.0 KiB RSS per idle upgraded connection in total
//!   (5000 connections, deflate agreed), 2.2 KiB after each had sent a compressed message.
//! - **Cancel-safe reads.** All read state lives in the connection and is advanced in `poll`
//!   functions, so the session can race `read_message` against its write queue in `select!`.
//! - **Fail fast.** Sizes are checked from frame headers before payloads are read, UTF-8 is
//!   checked as bytes arrive, and deflate output is capped while inflating (deflate bombs stop
//!   at the limit).
#![warn(missing_docs)]

pub mod binary;
pub mod text;
pub mod ws;
