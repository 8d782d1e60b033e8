//! The Pusher Channels wire protocol (version 7): what a client sends, what the server sends,
//! and the translation of kilat's own server frames (publications, join/leave, pings) into
//! Pusher events, computed once per frame and shared by every Pusher subscriber.
//!
//! Every client message is hostile: the decoder takes at most what the WebSocket codec let
//! through (`websocket.max_message_size`), parses it once, and returns a [`Decoded`] error
//! that becomes a `pusher:error` for that client alone.

use bytes::Bytes;
use kilat_protocol::{EncodingSlot, SharedFrame};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The encoding slot of a shared frame translated for Pusher clients: see [`translate`].
/// Slots 0-2 are the WebSocket encodings, 8-9 Socket.IO's, 10-11 the SSE/NDJSON ones.
pub(crate) const SLOT_PUSHER: EncodingSlot = EncodingSlot(7);

/// Longest channel name Pusher allows.
pub(crate) const MAX_CHANNEL_LEN: usize = 164;

/// The prefix of the channel pusher-js subscribes to after `pusher:signin`.
pub(crate) const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// One client message, decoded.
#[derive(Debug)]
pub(crate) enum ClientMessage {
    Ping,
    Pong,
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    ClientEvent {
        event: String,
        channel: String,
        data: Box<RawValue>,
    },
    /// A `pusher:` or `pusher_internal:` event this server does not act on.
    Ignored(String),
}

/// Why a message was not understood (sent back as `pusher:error`, no code).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded(pub(crate) String);

#[derive(Deserialize)]
struct Envelope<'a> {
    event: Option<String>,
    channel: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    auth: Option<String>,
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct ChannelData {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

/// `data` of a `pusher:` event: an object, or (as some clients send) a JSON string holding one.
fn event_data<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    owned: &'de mut String,
) -> Result<T, Decoded> {
    let raw = raw.ok_or_else(|| Decoded("missing data".into()))?;
    let text = raw.get();
    if text.starts_with('"') {
        *owned = serde_json::from_str::<String>(text)
            .map_err(|e| Decoded(format!("invalid data: {e}")))?;
        serde_json::from_str(owned).map_err(|e| Decoded(format!("invalid data: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| Decoded(format!("invalid data: {e}")))
    }
}

/// Decodes one client message.
///
/// # Errors
/// Not JSON, not an object with a string `event`, or a known event with the wrong `data`.
pub(crate) fn decode(text: &[u8]) -> Result<ClientMessage, Decoded> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(text).map_err(|e| Decoded(format!("invalid JSON: {e}")))?;
    let event = envelope
        .event
        .ok_or_else(|| Decoded("missing event".into()))?;
    let mut owned = String::new();
    Ok(match event.as_str() {
        "pusher:ping" => ClientMessage::Ping,
        "pusher:pong" => ClientMessage::Pong,
        "pusher:subscribe" => {
            let data: SubscribeData = event_data(envelope.data, &mut owned)?;
            ClientMessage::Subscribe {
                channel: data.channel,
                auth: data.auth,
                channel_data: data.channel_data,
            }
        }
        "pusher:unsubscribe" => {
            let data: ChannelData = event_data(envelope.data, &mut owned)?;
            ClientMessage::Unsubscribe {
                channel: data.channel,
            }
        }
        "pusher:signin" => {
            let data: SigninData = event_data(envelope.data, &mut owned)?;
            ClientMessage::Signin {
                auth: data.auth,
                user_data: data.user_data,
            }
        }
        name if name.starts_with("client-") => {
            if name.len() > 200 {
                return Err(Decoded("event name longer than 200 bytes".into()));
            }
            let channel = envelope
                .channel
                .ok_or_else(|| Decoded("client event without a channel".into()))?;
            let data = envelope
                .data
                .map(RawValue::to_owned)
                .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON"));
            ClientMessage::ClientEvent {
                event: event.clone(),
                channel,
                data,
            }
        }
        _ => ClientMessage::Ignored(event),
    })
}

/// What kind of channel a name is, by Pusher's prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Public,
    Private,
    Encrypted,
    Presence,
    /// `#server-to-user-<id>`: the signed-in user's own channel.
    User,
}

/// Checks a channel name (Pusher's characters and length) and says what kind it is.
///
/// # Errors
/// A message for `pusher:error`.
pub(crate) fn channel_kind(name: &str) -> Result<ChannelKind, Decoded> {
    if let Some(user) = name.strip_prefix(USER_CHANNEL_PREFIX) {
        return if valid_user_id(user) {
            Ok(ChannelKind::User)
        } else {
            Err(Decoded("invalid user channel".into()))
        };
    }
    let valid = !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b));
    if !valid {
        return Err(Decoded(format!(
            "invalid channel name: use 1 to {MAX_CHANNEL_LEN} of A-Z a-z 0-9 _ - = @ , . ;"
        )));
    }
    Ok(if name.starts_with("private-encrypted-") {
        ChannelKind::Encrypted
    } else if name.starts_with("private-") {
        ChannelKind::Private
    } else if name.starts_with("presence-") {
        ChannelKind::Presence
    } else {
        ChannelKind::Public
    })
}

/// Whether `name` is a cache channel (the last event is kept and sent on subscribe).
pub(crate) fn is_cache(name: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// Whether `id` can be a user id here: 1 to 128 bytes of the characters kilat channel names
/// allow (it becomes part of the user's kilat channel).
pub(crate) fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

/// A user id from `channel_data`/`user_data`: a string, or a number as Pusher's SDKs allow.
pub(crate) fn user_id_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A server event `{"event", "channel"?, "data"}` as JSON text; `data` is raw JSON.
pub(crate) fn event(name: &str, channel: Option<&str>, data: &RawValue) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        data: &'a RawValue,
    }
    serde_json::to_vec(&Out {
        event: name,
        channel,
        data,
    })
    .unwrap_or_default()
}

/// A server event whose `data` is `value` serialised into a JSON string (Pusher's own events
/// carry their data that way).
pub(crate) fn event_with_string_data(
    name: &str,
    channel: Option<&str>,
    value: &impl Serialize,
) -> Vec<u8> {
    let inner = serde_json::to_string(value).unwrap_or_default();
    let as_string = serde_json::to_string(&inner).unwrap_or_default();
    let raw = RawValue::from_string(as_string).expect("a JSON string is valid JSON");
    event(name, channel, &raw)
}

/// `pusher:error` with an optional code.
pub(crate) fn error(code: Option<u16>, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Data<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    let data = serde_json::to_string(&Data { code, message }).unwrap_or_default();
    event(
        "pusher:error",
        None,
        &RawValue::from_string(data).expect("serialised JSON"),
    )
}

/// A frame this adapter built itself (already Pusher JSON), for the outbox.
pub(crate) fn own_frame(json: Vec<u8>) -> SharedFrame {
    SharedFrame::reply(json)
}

/// What kilat publishes for a Pusher event: `{"event", "data", "socket_id"?, "user_id"?}`.
/// `socket_id` is left out of the delivery to that socket (Pusher's exclusion); `user_id` is
/// the sender of a client event on a presence channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Published<'a> {
    pub(crate) event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) data: &'a RawValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) socket_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user_id: Option<std::borrow::Cow<'a, str>>,
    /// A kilat user left out of the delivery (presence member events about that user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exclude_user: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct NativeFrame<'a> {
    #[serde(borrow)]
    push: Option<NativePush<'a>>,
}

#[derive(Deserialize)]
struct NativePush<'a> {
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "pub", borrow)]
    publication: Option<NativePub<'a>>,
}

#[derive(Deserialize)]
struct NativePub<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Splits a kilat channel `pusher.<app>:<name>` (or a user `pusher.<app>:<id>`) into the
/// namespace prefix length and the Pusher name.
fn strip_namespace(native: &str) -> Option<(&str, &str)> {
    let (ns, name) = native.split_once(':')?;
    ns.starts_with("pusher.").then_some((ns, name))
}

/// The Pusher name of a kilat channel (the user channel `#<id>` back to `#server-to-user-<id>`).
pub(crate) fn pusher_channel(native_name: &str) -> std::borrow::Cow<'_, str> {
    match native_name.strip_prefix('#') {
        Some(user) => format!("{USER_CHANNEL_PREFIX}{user}").into(),
        None => native_name.into(),
    }
}

/// The translation of one shared frame for Pusher clients, cached in [`SLOT_PUSHER`]:
/// `[n][n bytes: who must not receive it][a complete WebSocket text frame]`, or empty when
/// Pusher clients get nothing for it. The exclusion is `s:<socket id>` (the sender of a client
/// event or the `socket_id` of an API trigger) or `u:<kilat user>` (a member event about the
/// receiver's own user).
pub(crate) fn translate(json: &[u8]) -> Bytes {
    let (exclude, text) = translate_json(json);
    let Some(text) = text else {
        return Bytes::new();
    };
    let frame =
        kilat_transport::ws::frame::encode_frame(kilat_transport::ws::frame::OP_TEXT, false, &text);
    let exclude = &exclude.as_bytes()[..exclude.len().min(255)];
    let mut out = Vec::with_capacity(1 + exclude.len() + frame.len());
    out.push(u8::try_from(exclude.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(exclude);
    out.extend_from_slice(&frame);
    Bytes::from(out)
}

/// The Pusher JSON for a kilat frame, with its exclusion key (empty: none).
pub(crate) fn translate_json(json: &[u8]) -> (String, Option<Vec<u8>>) {
    if json.starts_with(b"{\"event\"") {
        return (String::new(), Some(json.to_vec()));
    }
    if json == b"{}" {
        return (
            String::new(),
            Some(br#"{"event":"pusher:ping","data":{}}"#.to_vec()),
        );
    }
    let Ok(NativeFrame { push: Some(push) }) = serde_json::from_slice::<NativeFrame<'_>>(json)
    else {
        return (String::new(), None);
    };
    let Some((_, name)) = push.channel.as_deref().and_then(strip_namespace) else {
        return (String::new(), None);
    };
    let channel = pusher_channel(name);
    if let Some(publication) = push.publication {
        return match serde_json::from_str::<Published<'_>>(publication.data.get()) {
            Ok(published) => {
                let exclude = match (&published.socket_id, &published.exclude_user) {
                    (Some(socket), _) => format!("s:{socket}"),
                    (None, Some(user)) => format!("u:{user}"),
                    (None, None) => String::new(),
                };
                let text = match published.user_id.as_deref() {
                    Some(user) => {
                        #[derive(Serialize)]
                        struct WithUser<'a> {
                            event: &'a str,
                            channel: &'a str,
                            data: &'a RawValue,
                            user_id: &'a str,
                        }
                        serde_json::to_vec(&WithUser {
                            event: &published.event,
                            channel: &channel,
                            data: published.data,
                            user_id: user,
                        })
                        .unwrap_or_default()
                    }
                    None => event(&published.event, Some(&channel), published.data),
                };
                (exclude, Some(text))
            }
            // Published by a kilat client or the kilat API, not by Pusher's: event `message`.
            Err(_) => (
                String::new(),
                Some(event("message", Some(&channel), publication.data)),
            ),
        };
    }
    // kilat's own join/leave pushes are not Pusher's member events (those are published by
    // the Pusher endpoint itself, once per user): Pusher clients get nothing for them.
    (String::new(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{",
            b"{\"event\":1}",
            b"{\"data\":{}}",
            b"{\"event\":\"pusher:subscribe\"}",
            b"{\"event\":\"pusher:subscribe\",\"data\":{}}",
            b"{\"event\":\"pusher:subscribe\",\"data\":\"not json\"}",
            b"{\"event\":\"pusher:unsubscribe\",\"data\":[]}",
            b"{\"event\":\"pusher:signin\",\"data\":{\"auth\":1}}",
            b"{\"event\":\"client-x\",\"data\":{}}",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            decode(br#"{"event":"pusher:subscribe","data":{"channel":"a"}}"#),
            Ok(ClientMessage::Subscribe { .. })
        ));
        assert!(matches!(
            decode(br#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#),
            Ok(ClientMessage::Subscribe { .. })
        ));
    }

    #[test]
    fn channel_names_follow_pusher_rules() {
        assert_eq!(channel_kind("chat"), Ok(ChannelKind::Public));
        assert_eq!(channel_kind("private-a"), Ok(ChannelKind::Private));
        assert_eq!(
            channel_kind("private-encrypted-a"),
            Ok(ChannelKind::Encrypted)
        );
        assert_eq!(channel_kind("presence-a"), Ok(ChannelKind::Presence));
        assert_eq!(channel_kind("#server-to-user-7"), Ok(ChannelKind::User));
        for bad in ["", "a:b", "a b", "#x", &"a".repeat(165)] {
            assert!(channel_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn publications_translate_once_with_their_exclusion() {
        let native = br#"{"push":{"channel":"pusher.app:private-a","pub":{"data":{"event":"client-x","data":{"a":1},"socket_id":"1.2"},"offset":3}}}"#;
        let (exclude, text) = translate_json(native);
        assert_eq!(exclude, "s:1.2");
        assert_eq!(
            String::from_utf8(text.expect("translated")).expect("utf-8"),
            r#"{"event":"client-x","channel":"private-a","data":{"a":1}}"#
        );
        let member = br#"{"push":{"channel":"pusher.app:presence-a","pub":{"data":{"event":"pusher_internal:member_added","data":"{\"user_id\":\"7\"}","exclude_user":"pusher.app:7"}}}}"#;
        let (exclude, text) = translate_json(member);
        assert_eq!(exclude, "u:pusher.app:7");
        assert_eq!(
            String::from_utf8(text.expect("translated")).expect("utf-8"),
            r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"7\"}"}"#
        );
        let join = br#"{"push":{"channel":"pusher.app:presence-a","join":{"info":{"client":"c","user":"pusher.app:7"}}}}"#;
        assert!(
            translate(join).is_empty(),
            "kilat's join push is not a Pusher event"
        );
        assert_eq!(
            translate_json(b"{}").1.as_deref(),
            Some(&br#"{"event":"pusher:ping","data":{}}"#[..])
        );
        assert!(translate(br#"{"id":1,"subscribe":{}}"#).is_empty());
    }
}
