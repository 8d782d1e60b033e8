//! kilat wire protocol, version 1: the types that cross the wire and nothing that does I/O.
//!
//! - [`frame`]: [`SharedFrame`], one server frame encoded once and shared by every receiver.
//!
//! Design decisions:
//! - No tokio and no sockets here: the protocol is pure data, so the hub, the transports, the
//!   client and the fuzzers can all depend on it cheaply.
#![warn(missing_docs)]

pub mod frame;

pub use frame::{EncodingSlot, SharedFrame};
