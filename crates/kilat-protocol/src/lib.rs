//! kilat wire protocol, version 1: the types that cross the wire and nothing that does I/O.
//!
//! Modules:
//! - [`frame`]: [`SharedFrame`], one server frame encoded once and shared by every receiver.
//! - [`command`]: client frames (commands, `send`, ping) and the hostile-input-safe decoder.
//! - [`reply`]: command results and error replies.
//! - [`msgpack`]: the binary encoding (MessagePack), transcoded to and from the JSON frames.
//! - [`push`]: server-initiated pushes (`pub`, `join`, `leave`, `disconnect`, ...).
//! - [`server`]: decoding server frames (for clients and golden-frame tests).
//! - [`delta`]: the fossil delta codec behind `delta: "fossil"` subscriptions.
//! - [`codes`]: [`ErrorCode`], [`DisconnectCode`], [`ClientError`] and [`Disconnect`].
//! - [`channel`]: channel name validation, namespaces and user-limited channels.
//! - [`types`]: [`Publication`], [`ClientInfo`], [`StreamPosition`].
//!
//! Design decisions:
//! - No tokio and no sockets here: the protocol is pure data, so the hub, the transports, the
//!   client and the fuzzers can all depend on it cheaply.
//! - Application data (`data`, `info`) is kept as raw JSON ([`RawJson`]): the server never
//!   parses or re-encodes a payload, it copies the bytes once into the push frame.
//! - Frames are encoded by hand around serde (`{"id":n,` + the tagged result) instead of with
//!   `#[serde(flatten)]`, which cannot carry raw JSON and buffers every value.
//! - The decoder parses a frame once into raw values, validates `id` and the single method key,
//!   then parses only that method's params; errors are typed ([`DecodeError`]) and say whether an
//!   error reply is possible (a valid id was read) or the connection must close with 3500.
#![warn(missing_docs)]

pub mod channel;
pub mod codes;
pub mod command;
pub mod delta;
pub mod frame;
pub mod msgpack;
pub mod push;
pub mod reply;
pub mod server;
pub mod types;

pub use channel::{ChannelError, validate_channel};
pub use codes::{
    ClientError, Disconnect, DisconnectCode, ErrorCode, UNSUBSCRIBE_INSUFFICIENT_STATE,
    UNSUBSCRIBE_SERVER,
};
pub use command::{
    ClientFrame, Command, DecodeError, DecodeErrorKind, Method, decode_frame, decode_frames,
};
pub use command::{Payload, PayloadError};
pub use frame::{EncodingSlot, SharedFrame};
pub use msgpack::Encoding;
pub use push::{PresenceChange, PresenceCount, PresenceDiff, Push, PushBody};
pub use reply::Reply;
pub use server::ServerFrame;
pub use types::{ClientInfo, Publication, RawJson, StreamPosition};
