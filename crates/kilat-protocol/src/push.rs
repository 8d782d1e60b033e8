//! Server-initiated pushes: `{"push": {"channel"?, "<kind>": {...}}}`.

use serde::{Deserialize, Serialize};

use crate::codes::Disconnect;
use crate::reply::SubscribeResult;
use crate::types::{ClientInfo, Publication, RawJson};

/// `join` and `leave` body: `{"info": {"client", "user", "info"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinLeave {
    /// Who joined or left.
    pub info: ClientInfo,
}

/// One change in a [`PresenceDiff`]: `{"join": info}` or `{"leave": info}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChange {
    /// A client subscribed.
    Join(ClientInfo),
    /// A client unsubscribed or disconnected.
    Leave(ClientInfo),
}

/// `presence_diff` push body: a channel's joins and leaves of one batching window, in the
/// order the node received them (`{"changes": [{"join": info}, {"leave": info}, ...]}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The changes, oldest first.
    pub changes: Vec<PresenceChange>,
}

/// `presence_count` push body: how many are in the channel, sent once per batching window
/// instead of a `presence_diff` while the channel has more local subscribers than its
/// namespace's `presence_diff_max` (the changes are not listed then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCount {
    /// Connections present in the channel, on every node.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// `unsubscribe` push body: the server removed a subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnsubscribePush {
    /// Why: [`crate::UNSUBSCRIBE_SERVER`], [`crate::UNSUBSCRIBE_INSUFFICIENT_STATE`], or the
    /// error code of a refused subscription (see `docs/protocol.md`).
    pub code: u32,
    /// Human-readable reason.
    pub reason: String,
    /// Whether the client should subscribe again (e.g. after a lost stream, to reload state).
    #[serde(default)]
    pub resubscribe: bool,
}

/// `message` push body: data sent to one connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePush {
    /// The payload, kept raw.
    pub data: RawJson,
}

/// `refresh` push body: the server asks for a new token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshPush {
    /// Seconds left before the connection (or subscription) is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// A push body, tagged by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushBody {
    /// A publication in the channel.
    Pub(Publication),
    /// A client joined the channel.
    Join(JoinLeave),
    /// A client left the channel.
    Leave(JoinLeave),
    /// A window's joins and leaves, in order.
    PresenceDiff(PresenceDiff),
    /// The channel's counts, instead of diffs above `presence_diff_max`.
    PresenceCount(PresenceCount),
    /// A server-side subscription was added.
    Subscribe(SubscribeResult),
    /// A subscription was removed by the server.
    Unsubscribe(UnsubscribePush),
    /// Data for this connection only.
    Message(MessagePush),
    /// Token refresh requested.
    Refresh(RefreshPush),
    /// The connection is being closed (for transports without close frames).
    Disconnect(Disconnect),
}

/// A push with its optional channel.
#[derive(Debug, Clone)]
pub struct Push {
    /// The channel the push concerns, if any.
    pub channel: Option<String>,
    /// The body.
    pub body: PushBody,
}

impl Push {
    /// Serialises `{"push": {"channel"?, "<kind>": body}}`.
    pub fn encode(&self) -> Vec<u8> {
        let tagged = serde_json::to_vec(&self.body).unwrap_or_default();
        wrap_push(self.channel.as_deref(), &tagged)
    }
}

/// Serialises a `pub` push for `channel` (the fan-out hot path: called once per publication).
pub fn encode_publication(channel: &str, publication: &Publication) -> Vec<u8> {
    encode_push_kind(Some(channel), "pub", publication)
}

/// Serialises the `pub` push a `delta: "fossil"` subscriber gets: `data` is `text` as a JSON
/// string (the payload's JSON text, or with `delta` a fossil delta against the subscriber's
/// previous publication), then `offset`, `info` and `"delta": true|false`. Built at most twice
/// per publication (full and delta), shared by every delta subscriber.
pub fn encode_delta_publication(
    channel: &str,
    publication: &Publication,
    text: &str,
    delta: bool,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct DeltaPub<'a> {
        data: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a ClientInfo>,
        delta: bool,
    }
    encode_push_kind(
        Some(channel),
        "pub",
        &DeltaPub {
            data: text,
            offset: publication.offset,
            info: publication.info.as_ref(),
            delta,
        },
    )
}

/// The `data` and `delta` fields of a `pub` push body sent to a `delta: "fossil"` subscriber
/// (see [`encode_delta_publication`]); `None` for a body in the plain form (raw JSON `data`,
/// no `delta`), such as a publication repaired from history.
///
/// # Errors
/// When `body` (the raw `pub` object) is not JSON.
pub fn decode_delta_fields(body: &str) -> Result<Option<(String, bool)>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
        delta: Option<bool>,
    }
    let fields: Fields<'_> = serde_json::from_str(body)?;
    match fields.delta {
        None => Ok(None),
        Some(delta) => Ok(Some((serde_json::from_str(fields.data.get())?, delta))),
    }
}

/// Serialises `{"push": {"channel"?, kind: value}}` for any serialisable body.
pub fn encode_push_kind(channel: Option<&str>, kind: &str, value: &impl Serialize) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(64);
    tagged.extend_from_slice(b"{\"");
    tagged.extend_from_slice(kind.as_bytes());
    tagged.extend_from_slice(b"\":");
    let _ = serde_json::to_writer(&mut tagged, value);
    tagged.push(b'}');
    wrap_push(channel, &tagged)
}

/// Serialises a `presence_diff` push of `changes` (`true`: join) in `channel`: built once per
/// batching window and shared by every subscriber.
pub fn encode_presence_diff<'a>(
    channel: &str,
    changes: impl IntoIterator<Item = (&'a ClientInfo, bool)>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum ChangeRef<'a> {
        Join(&'a ClientInfo),
        Leave(&'a ClientInfo),
    }
    #[derive(Serialize)]
    struct DiffRef<'a> {
        changes: Vec<ChangeRef<'a>>,
    }
    let changes = changes
        .into_iter()
        .map(|(info, join)| {
            if join {
                ChangeRef::Join(info)
            } else {
                ChangeRef::Leave(info)
            }
        })
        .collect();
    encode_push_kind(Some(channel), "presence_diff", &DiffRef { changes })
}

/// Serialises `{"push": {"disconnect": {...}}}`, for transports that have no close frame.
pub fn encode_disconnect(disconnect: &Disconnect) -> Vec<u8> {
    encode_push_kind(None, "disconnect", disconnect)
}

fn wrap_push(channel: Option<&str>, tagged: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tagged.len() + 32);
    out.extend_from_slice(b"{\"push\":{");
    if let Some(channel) = channel {
        out.extend_from_slice(b"\"channel\":");
        let _ = serde_json::to_writer(&mut out, channel);
        out.push(b',');
    }
    match tagged {
        [b'{', rest @ ..] => out.extend_from_slice(rest),
        _ => out.push(b'}'),
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_wrapped_with_their_channel() {
        let publication = Publication {
            binary: None,
            data: crate::types::raw_json("{\"a\" : 1}").expect("json"),
            offset: Some(3),
            info: None,
        };
        assert_eq!(
            String::from_utf8(encode_publication("c", &publication)).expect("utf8"),
            r#"{"push":{"channel":"c","pub":{"data":{"a" : 1},"offset":3}}}"#
        );
        assert_eq!(
            String::from_utf8(encode_disconnect(&Disconnect::SHUTDOWN)).expect("utf8"),
            r#"{"push":{"disconnect":{"code":3000,"reason":"shutdown","reconnect":true}}}"#
        );
    }

    #[test]
    fn delta_publications_carry_their_data_as_a_string() {
        let publication = Publication {
            binary: None,
            data: crate::types::raw_json("{\"a\":1}").expect("json"),
            offset: Some(3),
            info: None,
        };
        let full = encode_delta_publication("c", &publication, publication.data.get(), false);
        assert_eq!(
            String::from_utf8(full.clone()).expect("utf8"),
            r#"{"push":{"channel":"c","pub":{"data":"{\"a\":1}","offset":3,"delta":false}}}"#
        );
        let body = r#"{"data":"{\"a\":1}","offset":3,"delta":true}"#;
        assert_eq!(
            decode_delta_fields(body).expect("json"),
            Some(("{\"a\":1}".to_owned(), true))
        );
        assert_eq!(
            decode_delta_fields(r#"{"data":{"a":1},"offset":3}"#).expect("json"),
            None
        );
    }

    #[test]
    fn a_presence_diff_lists_changes_in_order_and_decodes_back() {
        let info = |client: &str| ClientInfo {
            client: client.into(),
            user: "u".into(),
            info: None,
        };
        let (a, b) = (info("a"), info("b"));
        let text = encode_presence_diff("c", [(&a, true), (&b, true), (&a, false)]);
        assert_eq!(
            String::from_utf8(text.clone()).expect("utf8"),
            r#"{"push":{"channel":"c","presence_diff":{"changes":[{"join":{"client":"a","user":"u"}},{"join":{"client":"b","user":"u"}},{"leave":{"client":"a","user":"u"}}]}}}"#
        );
        let frame = crate::ServerFrame::decode(&text).expect("decodes");
        let crate::ServerFrame::Push(push) = frame else {
            panic!("not a push: {frame:?}");
        };
        let PushBody::PresenceDiff(diff) = push.body else {
            panic!("not a diff: {:?}", push.body);
        };
        let seen: Vec<_> = diff
            .changes
            .iter()
            .map(|change| match change {
                PresenceChange::Join(info) => (info.client.as_str(), true),
                PresenceChange::Leave(info) => (info.client.as_str(), false),
            })
            .collect();
        assert_eq!(seen, [("a", true), ("b", true), ("a", false)]);
    }
}
