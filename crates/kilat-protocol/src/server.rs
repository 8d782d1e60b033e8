//! Decoding server frames, for clients and for the golden-frame tests.
//!
//! The server itself only encodes ([`crate::Reply::encode`], [`crate::Push::encode`]); this is
//! the other direction, so a Rust client (and the tests) can read what the server sends.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::codes::ClientError;
use crate::push::{Push, PushBody};
use crate::reply::{Reply, encode_error};

/// One frame sent by the server.
#[derive(Debug, Clone)]
pub enum ServerFrame {
    /// A successful reply.
    Reply {
        /// The command id.
        id: u32,
        /// The result.
        reply: Reply,
    },
    /// An error reply.
    Error {
        /// The command id.
        id: u32,
        /// The error.
        error: ClientError,
    },
    /// A push.
    Push(Push),
    /// `{}`: the server's ping (or its answer to a client ping).
    Ping,
}

impl ServerFrame {
    /// Serialises the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ServerFrame::Reply { id, reply } => reply.encode(*id),
            ServerFrame::Error { id, error } => encode_error(*id, error),
            ServerFrame::Push(push) => push.encode(),
            ServerFrame::Ping => b"{}".to_vec(),
        }
    }

    /// Decodes one server frame.
    ///
    /// # Errors
    /// When the frame is not JSON or not a frame the protocol defines.
    pub fn decode(frame: &[u8]) -> Result<ServerFrame, serde_json::Error> {
        let map: BTreeMap<String, &RawValue> = serde_json::from_slice(frame)?;
        if map.is_empty() {
            return Ok(ServerFrame::Ping);
        }
        if let Some(push) = map.get("push") {
            let inner: BTreeMap<String, &RawValue> = serde_json::from_str(push.get())?;
            let channel = match inner.get("channel") {
                Some(raw) => Some(serde_json::from_str::<String>(raw.get())?),
                None => None,
            };
            let body = one_tagged::<PushBody>(&inner, &["channel"])?;
            return Ok(ServerFrame::Push(Push { channel, body }));
        }
        let id: u32 = match map.get("id") {
            Some(raw) => serde_json::from_str(raw.get())?,
            None => return Err(serde::de::Error::custom("server frame without id or push")),
        };
        if let Some(error) = map.get("error") {
            return Ok(ServerFrame::Error {
                id,
                error: serde_json::from_str(error.get())?,
            });
        }
        let reply = one_tagged::<Reply>(&map, &["id"])?;
        Ok(ServerFrame::Reply { id, reply })
    }
}

/// Parses the single key of `map` not in `skip` as an externally tagged enum.
fn one_tagged<T: serde::de::DeserializeOwned>(
    map: &BTreeMap<String, &RawValue>,
    skip: &[&str],
) -> Result<T, serde_json::Error> {
    let mut keys = map.iter().filter(|(k, _)| !skip.contains(&k.as_str()));
    let (Some((key, value)), None) = (keys.next(), keys.next()) else {
        return Err(serde::de::Error::custom("expected exactly one kind key"));
    };
    let mut tagged = String::with_capacity(key.len() + value.get().len() + 8);
    tagged.push('{');
    tagged.push_str(&serde_json::to_string(key)?);
    tagged.push(':');
    tagged.push_str(value.get());
    tagged.push('}');
    serde_json::from_str(&tagged)
}
