//! Client-to-server frames: commands (`{"id", "<method>": {params}}`), `send` and the empty ping.
//!
//! [`decode_frames`] splits one inbound message at `\n` and decodes each frame. The decoder is
//! written for hostile input: it parses each frame once into a map of raw values, checks the id
//! and the method key, then parses only the params of that method. Application data is kept as
//! raw JSON. Unknown top-level fields and unknown params fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::codes::{ClientError, Disconnect, DisconnectCode, ErrorCode};
use crate::types::{RawJson, StreamPosition, is_false};

/// A command method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `connect`
    Connect,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// `publish`
    Publish,
    /// `presence`
    Presence,
    /// `presence_stats`
    PresenceStats,
    /// `history`
    History,
    /// `rpc`
    Rpc,
    /// `refresh`
    Refresh,
    /// `sub_refresh`
    SubRefresh,
}

impl Method {
    /// Every method that carries an id.
    pub const ALL: [Method; 10] = [
        Method::Connect,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::Publish,
        Method::Presence,
        Method::PresenceStats,
        Method::History,
        Method::Rpc,
        Method::Refresh,
        Method::SubRefresh,
    ];

    /// The method's wire name (also the key of its reply).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Connect => "connect",
            Method::Subscribe => "subscribe",
            Method::Unsubscribe => "unsubscribe",
            Method::Publish => "publish",
            Method::Presence => "presence",
            Method::PresenceStats => "presence_stats",
            Method::History => "history",
            Method::Rpc => "rpc",
            Method::Refresh => "refresh",
            Method::SubRefresh => "sub_refresh",
        }
    }

    /// The method named `name`, if any.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// Recovery request for one channel in `connect.subs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubRecovery {
    /// Recover publications missed since `offset`/`epoch`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    /// Last offset the client saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Epoch of that offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `connect` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// Connection token (JWT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Client name (SDK name), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client version, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Custom data for a connect handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Channels to subscribe to as part of connecting, with recovery positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<BTreeMap<String, SubRecovery>>,
}

/// `subscribe` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// The channel.
    pub channel: String,
    /// Subscription token (JWT) for `allow_subscribe = "token"` namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Recover from `offset`/`epoch` (or position at the end when they are absent).
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    /// Last offset the client saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Epoch of that offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Whether to receive join/leave pushes (default: whatever the namespace enables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
    /// Custom data for a subscribe handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// `"fossil"`: receive publications as fossil deltas against the previous one when smaller
    /// (channels with history only; docs/protocol.md, "Delta compression").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
}

/// Params that only name a channel (`unsubscribe`, `presence`, `presence_stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelRequest {
    /// The channel.
    pub channel: String,
}

/// `publish` params: exactly one of `data` and `b64data` (a frame with neither or both does
/// not decode: 400).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PublishWire")]
pub struct PublishRequest {
    /// The channel.
    pub channel: String,
    /// The payload, kept raw (absent when `b64data` is given; `null` is a payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// A binary payload instead of `data`: standard base64 (a MessagePack client sends a `bin`
    /// `data`, which the transcoder turns into this). Decoded by [`PublishRequest::payload`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64data: Option<String>,
}

#[derive(Deserialize)]
struct PublishWire {
    channel: String,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<RawJson>,
    #[serde(default)]
    b64data: Option<String>,
}

impl TryFrom<PublishWire> for PublishRequest {
    type Error = PayloadError;

    fn try_from(wire: PublishWire) -> Result<Self, PayloadError> {
        match (&wire.data, &wire.b64data) {
            (None, None) => Err(PayloadError::Missing),
            (Some(_), Some(_)) => Err(PayloadError::Both),
            _ => Ok(PublishRequest {
                channel: wire.channel,
                data: wire.data,
                b64data: wire.b64data,
            }),
        }
    }
}

/// A present member is `Some`, even a JSON `null` (which `Option`'s own impl makes `None`).
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(d).map(Some)
}

/// Why a `publish` payload was refused (error 400 in the protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Neither `data` nor `b64data`.
    #[error("publish needs data (JSON) or b64data (base64 of binary data)")]
    Missing,
    /// Both `data` and `b64data`.
    #[error("publish takes data or b64data, not both")]
    Both,
    /// `b64data` is not standard base64.
    #[error(
        "b64data is not valid base64 ({0}); send standard base64 with padding (RFC 4648 section 4), or binary data as MessagePack bin"
    )]
    BadBase64(String),
}

/// A `publish` payload, checked.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Application JSON, kept raw.
    Json(RawJson),
    /// Raw bytes (decoded from `b64data`).
    Binary(bytes::Bytes),
}

impl Payload {
    /// The size the publication size limit counts: the JSON text or the decoded bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(data) => data.get().len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty (never true for JSON, which is at least one value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PublishRequest {
    /// A JSON publish of `data` in `channel`.
    pub fn json(channel: impl Into<String>, data: RawJson) -> Self {
        PublishRequest {
            channel: channel.into(),
            data: Some(data),
            b64data: None,
        }
    }

    /// A binary publish of `bytes` in `channel` (sent as `b64data`).
    pub fn binary(channel: impl Into<String>, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        PublishRequest {
            channel: channel.into(),
            data: None,
            b64data: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// Takes the payload out: exactly one of `data` and `b64data`, the latter decoded.
    ///
    /// # Errors
    /// See [`PayloadError`].
    pub fn payload(&mut self) -> Result<Payload, PayloadError> {
        match (self.data.take(), self.b64data.take()) {
            (Some(data), None) => Ok(Payload::Json(data)),
            (None, Some(b64)) => crate::types::decode_b64data(&b64)
                .map(Payload::Binary)
                .map_err(|e| PayloadError::BadBase64(e.to_string())),
            (None, None) => Err(PayloadError::Missing),
            (Some(_), Some(_)) => Err(PayloadError::Both),
        }
    }
}

/// `history` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The channel.
    pub channel: String,
    /// How many publications at most (absent: all kept, up to the server maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Return publications after (or with `reverse`, before) this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reverse: bool,
}

/// `presence` params: a channel and, for big channels, a page of its members.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceRequest {
    /// The channel.
    pub channel: String,
    /// Where this page starts: the `cursor` of the previous page's reply (absent: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Most members in this page (absent: the server's default page size; clamped to its
    /// maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `rpc` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Application-defined method name.
    #[serde(default)]
    pub method: String,
    /// Payload, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
}

/// `send` params (no id, never answered).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRequest {
    /// Payload, kept raw.
    pub data: RawJson,
}

/// `refresh` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The new connection token.
    pub token: String,
}

/// `sub_refresh` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubRefreshRequest {
    /// The channel whose subscription token is renewed.
    pub channel: String,
    /// The new subscription token.
    pub token: String,
}

/// A command that expects a reply (everything but `send` and the ping).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // decoded once per command and matched at once; not stored
pub enum Command {
    /// `connect`
    Connect(ConnectRequest),
    /// `subscribe`
    Subscribe(SubscribeRequest),
    /// `unsubscribe`
    Unsubscribe(ChannelRequest),
    /// `publish`
    Publish(PublishRequest),
    /// `presence`
    Presence(PresenceRequest),
    /// `presence_stats`
    PresenceStats(ChannelRequest),
    /// `history`
    History(HistoryRequest),
    /// `rpc`
    Rpc(RpcRequest),
    /// `refresh`
    Refresh(RefreshRequest),
    /// `sub_refresh`
    SubRefresh(SubRefreshRequest),
}

impl Command {
    /// The command's method.
    pub fn method(&self) -> Method {
        match self {
            Command::Connect(_) => Method::Connect,
            Command::Subscribe(_) => Method::Subscribe,
            Command::Unsubscribe(_) => Method::Unsubscribe,
            Command::Publish(_) => Method::Publish,
            Command::Presence(_) => Method::Presence,
            Command::PresenceStats(_) => Method::PresenceStats,
            Command::History(_) => Method::History,
            Command::Rpc(_) => Method::Rpc,
            Command::Refresh(_) => Method::Refresh,
            Command::SubRefresh(_) => Method::SubRefresh,
        }
    }
}

/// One decoded client frame.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    /// A command with its id.
    Command {
        /// The command id (> 0), echoed in the reply.
        id: u32,
        /// The command.
        command: Command,
    },
    /// `{"send": {"data"}}`: fire-and-forget, never answered.
    Send(SendRequest),
    /// `{}`: a pong to the server's ping, or a ping from the client.
    Ping,
}

impl ClientFrame {
    /// Serialises the frame (used by clients and by the golden-frame tests).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientFrame::Command { id, command } => {
                crate::reply::with_id(*id, &serde_json::to_vec(command).unwrap_or_default())
            }
            ClientFrame::Send(send) => {
                let mut out = b"{\"send\":".to_vec();
                out.extend_from_slice(&serde_json::to_vec(send).unwrap_or_default());
                out.push(b'}');
                out
            }
            ClientFrame::Ping => b"{}".to_vec(),
        }
    }
}

/// What is wrong with a client frame.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not JSON at all (or not UTF-8).
    #[error("frame is not valid JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("frame is not a JSON object")]
    NotObject,
    /// A command without `id`.
    #[error("command has no id")]
    MissingId,
    /// `id` is not an integer in 1..=4294967295.
    #[error("id must be an integer in 1..=4294967295")]
    BadId,
    /// An id but no method key.
    #[error("command has no method")]
    MissingMethod,
    /// More than one method key.
    #[error("command has more than one method")]
    SeveralMethods,
    /// A key that looks like a method (its value is an object) but is not one.
    #[error("unknown method")]
    UnknownMethod,
    /// The params do not have the expected shape or types.
    #[error("bad params: {0}")]
    BadParams(#[source] serde_json::Error),
    /// A top-level key given twice (two `id`s, two method keys): refused rather than letting the
    /// last one win, as the params already are.
    #[error("duplicate key in command")]
    DuplicateKey,
}

/// A client frame that cannot be decoded, with the command id when it was readable.
#[derive(Debug, Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The command id, when the frame had a valid one (the error can then be answered).
    pub id: Option<u32>,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The error code for an error reply: 404 for an unknown method, 400 otherwise.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::UnknownMethod => ErrorCode::NOT_FOUND,
            _ => ErrorCode::BAD_REQUEST,
        }
    }

    /// The error reply to send when the frame had an id.
    pub fn to_client_error(&self) -> ClientError {
        ClientError::new(self.code(), self.kind.to_string())
    }

    /// The disconnect to apply: `Some(3500)` when the frame cannot be answered (no valid id:
    /// not JSON, not an object, no or bad id), `None` when an error reply is enough.
    pub fn disconnect(&self) -> Option<Disconnect> {
        match self.id {
            Some(_) => None,
            None => Some(Disconnect::new(
                DisconnectCode::BAD_REQUEST,
                match self.kind {
                    DecodeErrorKind::NotJson => "frame is not valid JSON",
                    DecodeErrorKind::NotObject => "frame is not a JSON object",
                    DecodeErrorKind::BadId => "bad command id",
                    DecodeErrorKind::DuplicateKey => "duplicate key in command",
                    _ => "command has no id",
                },
            )),
        }
    }
}

/// Splits one inbound message at `\n` and decodes each non-blank frame in order.
pub fn decode_frames(
    message: &[u8],
) -> impl Iterator<Item = Result<ClientFrame, DecodeError>> + '_ {
    message
        .split(|&b| b == b'\n')
        .filter(|frame| !frame.iter().all(u8::is_ascii_whitespace))
        .map(decode_frame)
}

fn err(id: Option<u32>, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { id, kind }
}

/// Decodes one client frame.
///
/// # Errors
/// See [`DecodeErrorKind`]; `id` is set on the error when the frame had a valid one.
pub fn decode_frame(frame: &[u8]) -> Result<ClientFrame, DecodeError> {
    let TopLevel { map, duplicate } = serde_json::from_slice(frame).map_err(|e| {
        let kind = if e.is_data() {
            DecodeErrorKind::NotObject
        } else {
            DecodeErrorKind::NotJson
        };
        err(None, kind)
    })?;
    if duplicate.as_deref() == Some("id") {
        return Err(err(None, DecodeErrorKind::DuplicateKey));
    }
    let id = match map.get("id") {
        None => None,
        Some(raw) => match serde_json::from_str::<u32>(raw.get()) {
            Ok(0) | Err(_) => return Err(err(None, DecodeErrorKind::BadId)),
            Ok(id) => Some(id),
        },
    };
    if duplicate.is_some() {
        return Err(err(id, DecodeErrorKind::DuplicateKey));
    }
    let Some(id) = id else {
        if map.is_empty() {
            return Ok(ClientFrame::Ping);
        }
        if let Some(send) = map.get("send") {
            return serde_json::from_str(send.get())
                .map(ClientFrame::Send)
                .map_err(|e| err(None, DecodeErrorKind::BadParams(e)));
        }
        return Err(err(None, DecodeErrorKind::MissingId));
    };
    let mut found = None;
    for (key, raw) in map.iter() {
        if let Some(method) = Method::from_name(key) {
            if found.is_some() {
                return Err(err(Some(id), DecodeErrorKind::SeveralMethods));
            }
            found = Some((method, raw));
        }
    }
    let Some((method, params)) = found else {
        let looks_like_method = map
            .iter()
            .any(|(k, v)| k != "id" && v.get().trim_start().starts_with('{'));
        let kind = if looks_like_method {
            DecodeErrorKind::UnknownMethod
        } else {
            DecodeErrorKind::MissingMethod
        };
        return Err(err(Some(id), kind));
    };
    let command = parse_params(method, params.get())
        .map_err(|e| err(Some(id), DecodeErrorKind::BadParams(e)))?;
    Ok(ClientFrame::Command { id, command })
}

/// A client frame's top-level object: its keys (borrowed from the frame where they have no
/// escapes) with their raw values, in order, and the first key seen twice.
struct TopLevel<'a> {
    map: Keys<'a>,
    duplicate: Option<String>,
}

/// Top-level keys and raw values; a frame has a handful, so a scan beats a map.
struct Keys<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), *v))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevel<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut map = Vec::new();
                let mut duplicate = None;
                while let Some(Key(key)) = access.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = access.next_value()?;
                    if duplicate.is_none() && map.iter().any(|(k, _)| *k == key) {
                        duplicate = Some(key.clone().into_owned());
                    }
                    map.push((key, value));
                }
                Ok(TopLevel {
                    map: Keys(map),
                    duplicate,
                })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn parse_params(method: Method, params: &str) -> Result<Command, serde_json::Error> {
    use serde_json::from_str as p;
    Ok(match method {
        Method::Connect => Command::Connect(p(params)?),
        Method::Subscribe => Command::Subscribe(p(params)?),
        Method::Unsubscribe => Command::Unsubscribe(p(params)?),
        Method::Publish => Command::Publish(p(params)?),
        Method::Presence => Command::Presence(p(params)?),
        Method::PresenceStats => Command::PresenceStats(p(params)?),
        Method::History => Command::History(p(params)?),
        Method::Rpc => Command::Rpc(p(params)?),
        Method::Refresh => Command::Refresh(p(params)?),
        Method::SubRefresh => Command::SubRefresh(p(params)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<ClientFrame, DecodeError> {
        decode_frame(text.as_bytes())
    }

    fn publish_of(text: &str) -> PublishRequest {
        match one(text) {
            Ok(ClientFrame::Command {
                command: Command::Publish(p),
                ..
            }) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn publish_payload_is_data_or_b64data() {
        let mut p = publish_of(r#"{"id":1,"publish":{"channel":"c","b64data":"AAEC/w=="}}"#);
        match p.payload() {
            Ok(Payload::Binary(bytes)) => assert_eq!(&bytes[..], &[0, 1, 2, 255]),
            other => panic!("{other:?}"),
        }
        let mut p = publish_of(r#"{"id":1,"publish":{"channel":"c","data":null}}"#);
        assert!(matches!(p.payload(), Ok(Payload::Json(d)) if d.get() == "null"));
        let mut p = publish_of(r#"{"id":1,"publish":{"channel":"c","b64data":"AAE*"}}"#);
        let err = p.payload().expect_err("not base64");
        assert!(matches!(err, PayloadError::BadBase64(_)), "{err:?}");
        assert!(err.to_string().contains("standard base64"), "a hint: {err}");
        let mut p = PublishRequest::binary("c", b"");
        p.data = Some(crate::types::null_json());
        assert_eq!(p.payload().expect_err("both"), PayloadError::Both);
        assert_eq!(p.payload().expect_err("none"), PayloadError::Missing);
        let mut p = PublishRequest::binary("c", &[7; 5]);
        assert!(matches!(p.payload(), Ok(Payload::Binary(b)) if b[..] == [7; 5]));
    }

    #[test]
    fn decodes_a_publish_keeping_data_raw() {
        let frame = one(r#"{"id":7,"publish":{"channel":"chat:a","data":{"b": [1, 2]}},"x":1}"#)
            .expect("valid");
        let ClientFrame::Command {
            id: 7,
            command: Command::Publish(p),
        } = frame
        else {
            panic!("not a publish: {frame:?}");
        };
        assert_eq!(p.channel, "chat:a");
        assert_eq!(
            p.data.as_deref().map(RawValue::get),
            Some(r#"{"b": [1, 2]}"#)
        );
    }

    #[test]
    fn ping_and_send_have_no_id() {
        assert!(matches!(one("{}"), Ok(ClientFrame::Ping)));
        assert!(matches!(
            one(r#"{"send":{"data":1}}"#),
            Ok(ClientFrame::Send(_))
        ));
    }

    #[test]
    fn rejects_bad_frames_with_typed_errors() {
        let cases: &[(&str, Option<u32>, u32)] = &[
            ("nope", None, 400),
            ("[1]", None, 400),
            (r#"{"id":0,"connect":{}}"#, None, 400),
            (r#"{"id":-1,"connect":{}}"#, None, 400),
            (r#"{"id":"1","connect":{}}"#, None, 400),
            (r#"{"id":4294967296,"connect":{}}"#, None, 400),
            (r#"{"connect":{}}"#, None, 400),
            (r#"{"id":1}"#, Some(1), 400),
            (r#"{"id":1,"frob":{}}"#, Some(1), 404),
            (r#"{"id":1,"connect":{},"publish":{}}"#, Some(1), 400),
            (r#"{"id":1,"subscribe":{"channel":5}}"#, Some(1), 400),
            (r#"{"id":1,"subscribe":{}}"#, Some(1), 400),
            (r#"{"id":1,"publish":{"channel":"a"}}"#, Some(1), 400),
            (
                r#"{"id":1,"publish":{"channel":"a","data":1,"b64data":"AA=="}}"#,
                Some(1),
                400,
            ),
            (
                r#"{"id":1,"history":{"channel":"a","limit":-1}}"#,
                Some(1),
                400,
            ),
        ];
        for (text, id, code) in cases {
            let e = one(text).expect_err(text);
            assert_eq!(e.id, *id, "{text}");
            assert_eq!(e.code().0, *code, "{text}");
            assert_eq!(e.disconnect().is_some(), id.is_none(), "{text}");
        }
    }

    #[test]
    fn splits_batches_and_skips_blank_lines() {
        let frames: Vec<_> = decode_frames(
            b"{\"id\":1,\"connect\":{}}\n\n{}\r\n{\"id\":2,\"presence\":{\"channel\":\"a\"}}\n",
        )
        .collect();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(Result::is_ok));
    }
}
