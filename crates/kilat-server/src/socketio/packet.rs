//! Engine.IO v4 and Socket.IO v5 packet encoding and decoding (the public engine.io-protocol
//! and socket.io-protocol specifications), written here from the specifications.
//!
//! Every input is hostile: the decoders never panic, bound what they keep by the input they
//! were given (itself bounded by `max_http_buffer_size` or the WebSocket message limit), and
//! report anything outside the specification as [`Malformed`], which closes the Engine.IO
//! session the way the reference server does ("parse error").

use serde::Deserialize;
use serde_json::value::RawValue;

/// The separator of packets in a long-polling payload (ASCII record separator).
pub(crate) const RECORD_SEPARATOR: u8 = 0x1e;

/// Longest namespace name accepted, in bytes.
const MAX_NAMESPACE: usize = 128;
/// Most digits of an ack id (ids stay far below 2^53, JavaScript's safe integers).
const MAX_ACK_DIGITS: usize = 15;
/// Most binary attachments one BINARY_EVENT or BINARY_ACK may announce (checked before any
/// attachment is kept; their total size is bounded by the wire, docs/socketio.md).
pub(crate) const MAX_ATTACHMENTS: usize = 64;

/// An input the protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// One Engine.IO packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnginePacket<'a> {
    /// `1`: the client closes the session.
    Close,
    /// `2` with data: a ping (only `probe` during an upgrade is expected from clients).
    Ping(&'a str),
    /// `3`: the answer to the server's ping.
    Pong(&'a str),
    /// `4`: a Socket.IO packet.
    Message(&'a str),
    /// `5`: the client switches to the transport it probed.
    Upgrade,
    /// `6`: nothing (sent by clients to end a pending poll on upgrade).
    Noop,
    /// `b` with base64 data: a binary message (a Socket.IO attachment) on long polling, still
    /// encoded (the wire checks and keeps it as base64).
    Binary(&'a str),
}

/// Decodes one Engine.IO text packet.
pub(crate) fn decode_engine(text: &str) -> Result<EnginePacket<'_>, Malformed> {
    let mut chars = text.char_indices();
    let Some((_, kind)) = chars.next() else {
        return Err(Malformed("empty packet"));
    };
    let data = &text[kind.len_utf8()..];
    match kind {
        '1' => Ok(EnginePacket::Close),
        '2' => Ok(EnginePacket::Ping(data)),
        '3' => Ok(EnginePacket::Pong(data)),
        '4' => Ok(EnginePacket::Message(data)),
        '5' => Ok(EnginePacket::Upgrade),
        '6' => Ok(EnginePacket::Noop),
        'b' => Ok(EnginePacket::Binary(data)),
        // `0` (open) is only sent by servers.
        _ => Err(Malformed("unknown packet type")),
    }
}

/// Splits a long-polling payload into its packets, decoding each.
pub(crate) fn decode_payload(payload: &str) -> Result<Vec<EnginePacket<'_>>, Malformed> {
    payload
        .split(char::from(RECORD_SEPARATOR))
        .map(decode_engine)
        .collect()
}

/// The kind of a Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
}

/// One Socket.IO packet from a client, its JSON payload still raw.
#[derive(Debug, Clone)]
pub(crate) struct SocketPacket<'a> {
    pub(crate) kind: SocketKind,
    /// The namespace, `/` when the packet names none.
    pub(crate) namespace: &'a str,
    pub(crate) ack: Option<u64>,
    /// CONNECT: the `auth` object, if any. EVENT: the event name. ACK: unused.
    pub(crate) head: Option<String>,
    /// CONNECT: the `auth` object as JSON. EVENT and ACK: the arguments as a JSON array.
    pub(crate) data: Option<Box<RawValue>>,
    /// BINARY_EVENT and BINARY_ACK: how many binary attachments follow (each placeholder
    /// `{"_placeholder":true,"num":N}` in the arguments has `N` below it); 0 otherwise.
    pub(crate) attachments: usize,
}

/// Decodes a Socket.IO packet (the data of an Engine.IO message packet).
pub(crate) fn decode_socket(text: &str) -> Result<SocketPacket<'_>, Malformed> {
    let bytes = text.as_bytes();
    let (kind, binary) = match bytes.first() {
        Some(b'0') => (SocketKind::Connect, false),
        Some(b'1') => (SocketKind::Disconnect, false),
        Some(b'2') => (SocketKind::Event, false),
        Some(b'3') => (SocketKind::Ack, false),
        Some(b'5') => (SocketKind::Event, true),
        Some(b'6') => (SocketKind::Ack, true),
        Some(_) => return Err(Malformed("unknown or server-only packet type")),
        None => return Err(Malformed("empty packet")),
    };
    let mut rest = &text[1..];
    let mut attachments = 0;
    if binary {
        // `<count>-` before the namespace; the count is bounded before anything is kept.
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || rest.as_bytes().get(digits) != Some(&b'-') {
            return Err(Malformed("binary packet without its attachment count"));
        }
        if digits > 3 {
            return Err(Malformed("too many attachments"));
        }
        attachments = rest[..digits]
            .parse::<usize>()
            .map_err(|_| Malformed("bad attachment count"))?;
        if attachments == 0 || attachments > MAX_ATTACHMENTS {
            return Err(Malformed("attachment count out of range"));
        }
        rest = &rest[digits + 1..];
    }
    let mut namespace = "/";
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        namespace = &rest[..end];
        if namespace.len() > MAX_NAMESPACE {
            return Err(Malformed("namespace too long"));
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits == 0 {
        None
    } else if digits > MAX_ACK_DIGITS {
        return Err(Malformed("ack id too large"));
    } else {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| Malformed("bad ack id"))?;
        rest = &rest[digits..];
        Some(id)
    };
    let data: Option<Box<RawValue>> = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|_| Malformed("payload is not JSON"))?)
    };
    let mut packet = SocketPacket {
        kind,
        namespace,
        ack,
        head: None,
        data: None,
        attachments,
    };
    match kind {
        SocketKind::Connect => {
            if let Some(auth) = data {
                if !auth.get().trim_start().starts_with('{') {
                    return Err(Malformed("CONNECT payload must be an object"));
                }
                packet.data = Some(auth);
            }
            if packet.ack.is_some() {
                return Err(Malformed("CONNECT carries no ack id"));
            }
        }
        SocketKind::Disconnect => {
            if data.is_some() || packet.ack.is_some() {
                return Err(Malformed("DISCONNECT carries no payload"));
            }
        }
        SocketKind::Event => {
            let data = data.ok_or(Malformed("EVENT needs a payload"))?;
            let mut items: Vec<Box<RawValue>> = serde_json::from_str(data.get())
                .map_err(|_| Malformed("EVENT payload must be an array"))?;
            if items.is_empty() {
                return Err(Malformed("EVENT payload must name the event"));
            }
            let name: String = serde_json::from_str(items[0].get())
                .map_err(|_| Malformed("event name must be a string"))?;
            items.remove(0);
            packet.head = Some(name);
            packet.data = Some(to_raw_array(&items));
        }
        SocketKind::Ack => {
            let data = data.ok_or(Malformed("ACK needs a payload"))?;
            if !data.get().trim_start().starts_with('[') {
                return Err(Malformed("ACK payload must be an array"));
            }
            if packet.ack.is_none() {
                return Err(Malformed("ACK needs an id"));
            }
            packet.data = Some(data);
        }
    }
    if attachments > 0 {
        let args = packet.data.as_deref().map(RawValue::get).unwrap_or("[]");
        check_placeholders(args, attachments)?;
    }
    Ok(packet)
}

/// Checks that every placeholder in `args` (`{"_placeholder":true,"num":N}`) names one of
/// `count` attachments: a Socket.IO client given a placeholder past its attachments drops the
/// whole connection ("illegal attachments"), so such a packet is refused before anyone gets it.
pub(crate) fn check_placeholders(args: &str, count: usize) -> Result<(), Malformed> {
    fn walk(value: &serde_json::Value, count: usize) -> Result<(), Malformed> {
        match value {
            serde_json::Value::Array(items) => items.iter().try_for_each(|v| walk(v, count)),
            serde_json::Value::Object(map) => {
                if map.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                    let num = map.get("num").and_then(serde_json::Value::as_f64);
                    return match num {
                        Some(n) if n >= 0.0 && n < count as f64 => Ok(()),
                        _ => Err(Malformed("placeholder names no attachment")),
                    };
                }
                map.values().try_for_each(|v| walk(v, count))
            }
            _ => Ok(()),
        }
    }
    let value: serde_json::Value =
        serde_json::from_str(args).map_err(|_| Malformed("payload is not JSON"))?;
    walk(&value, count)
}

/// The JSON array of `items`, re-joined without re-encoding them.
fn to_raw_array(items: &[Box<RawValue>]) -> Box<RawValue> {
    let mut out = String::with_capacity(items.iter().map(|i| i.get().len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push(']');
    RawValue::from_string(out).unwrap_or_else(|_| empty_array())
}

/// `[]` as a raw value.
pub(crate) fn empty_array() -> Box<RawValue> {
    RawValue::from_string("[]".to_owned()).expect("[] is JSON")
}

/// Appends the namespace prefix of a server packet (`/chat,`; nothing for `/`).
pub(crate) fn push_namespace(out: &mut String, namespace: &str) {
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
}

/// An Engine.IO message carrying a Socket.IO packet of `kind` (a digit) in `namespace`, with an
/// optional ack id and JSON body.
pub(crate) fn socket_message(kind: char, namespace: &str, ack: Option<u64>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + namespace.len() + 24);
    out.push('4');
    out.push(kind);
    push_namespace(&mut out, namespace);
    if let Some(ack) = ack {
        out.push_str(&ack.to_string());
    }
    out.push_str(body);
    out
}

/// An Engine.IO message carrying a BINARY_EVENT (`5`) or BINARY_ACK (`6`) with `count`
/// attachments, which the caller sends right after it.
pub(crate) fn binary_message(
    kind: char,
    namespace: &str,
    ack: Option<u64>,
    count: usize,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + namespace.len() + 28);
    out.push('4');
    out.push(kind);
    out.push_str(&count.to_string());
    out.push('-');
    push_namespace(&mut out, namespace);
    if let Some(ack) = ack {
        out.push_str(&ack.to_string());
    }
    out.push_str(body);
    out
}

/// Decodes the base64 attachments of a publication or rpc reply whose arguments (`body`, a JSON
/// array) carry their placeholders; `None` when they are too many, not base64, or do not match
/// the placeholders (then they are not sent as attachments at all).
pub(crate) fn decode_attachments(attachments: &[String], body: &str) -> Option<Vec<Vec<u8>>> {
    use base64::Engine as _;
    if attachments.is_empty() || attachments.len() > MAX_ATTACHMENTS {
        return None;
    }
    check_placeholders(body, attachments.len()).ok()?;
    attachments
        .iter()
        .map(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .collect()
}

/// Data naming a Socket.IO event, in a publication or a server API `send`:
/// `{"event", "args"?, "namespace"?, "attachments"?}` (docs/socketio.md). Any other data is
/// the event `message` with the data as its one argument.
#[derive(Deserialize)]
pub(crate) struct EventData<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
    /// Where a `send` goes (publications take theirs from the channel).
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    /// Binary arguments, base64, for the placeholders in `args` (docs/socketio.md).
    #[serde(default)]
    pub(crate) attachments: Option<Vec<String>>,
}

impl<'a> EventData<'a> {
    /// `data` as an event, or `None` when it names none.
    pub(crate) fn parse(data: &'a RawValue) -> Option<Self> {
        serde_json::from_str(data.get()).ok()
    }

    /// The packet's JSON array: the event name, its arguments (an array is spread, anything
    /// else is the one argument), then `position` (`,"<offset>:<channel>"` or empty).
    pub(crate) fn body(&self, position: &str) -> String {
        let name = serde_json::to_string(&self.event).unwrap_or_default();
        match self.args {
            Some(args) if args.get().trim_start().starts_with('[') => {
                let inner = args.get().trim();
                let inner = &inner[1..inner.len() - 1];
                if inner.trim().is_empty() {
                    format!("[{name}{position}]")
                } else {
                    format!("[{name},{inner}{position}]")
                }
            }
            Some(arg) => format!("[{name},{}{position}]", arg.get()),
            None => format!("[{name}{position}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets_decode_by_their_type_digit() {
        assert_eq!(decode_engine("2probe"), Ok(EnginePacket::Ping("probe")));
        assert_eq!(decode_engine("3"), Ok(EnginePacket::Pong("")));
        assert_eq!(decode_engine("40"), Ok(EnginePacket::Message("0")));
        assert_eq!(decode_engine("5"), Ok(EnginePacket::Upgrade));
        assert!(decode_engine("").is_err());
        assert!(decode_engine("0").is_err());
        assert!(decode_engine("9x").is_err());
        assert!(decode_engine("é").is_err());
        assert_eq!(decode_engine("bAQID"), Ok(EnginePacket::Binary("AQID")));
        let payload = decode_payload("3\u{1e}42[\"a\"]\u{1e}1").expect("payload");
        assert_eq!(payload.len(), 3);
        assert!(decode_payload("3\u{1e}\u{1e}3").is_err());
    }

    #[test]
    fn socket_packets_decode_namespace_ack_and_payload() {
        let p = decode_socket("2/chat,12[\"msg\",1,{\"a\":2}]").expect("event");
        assert_eq!(p.kind, SocketKind::Event);
        assert_eq!(p.namespace, "/chat");
        assert_eq!(p.ack, Some(12));
        assert_eq!(p.head.as_deref(), Some("msg"));
        assert_eq!(p.data.expect("args").get(), "[1,{\"a\":2}]");
        let p = decode_socket("0{\"token\":\"t\"}").expect("connect");
        assert_eq!(p.namespace, "/");
        assert_eq!(p.data.expect("auth").get(), "{\"token\":\"t\"}");
        let p = decode_socket("0/admin,").expect("connect");
        assert_eq!(p.namespace, "/admin");
        assert!(p.data.is_none());
        let p = decode_socket("3/chat,7[\"ok\"]").expect("ack");
        assert_eq!(p.ack, Some(7));
        assert_eq!(
            decode_socket("1/chat,").expect("disconnect").kind,
            SocketKind::Disconnect
        );
    }

    #[test]
    fn malformed_socket_packets_are_refused() {
        for bad in [
            "",
            "4{}",
            "7",
            "2",
            "2[]",
            "2{}",
            "2[1]",
            "2[\"a\"",
            "0[1]",
            "01",
            "3[]",
            "31{}",
            "1[1]",
            "5-[\"a\"]",
            "50-[\"a\"]",
            "565-[\"a\"]",
            "51[\"a\"]",
            "51-[\"a\",{\"_placeholder\":true,\"num\":1}]",
            "51-[\"a\",{\"_placeholder\":true,\"num\":-1}]",
            "51-[\"a\",{\"_placeholder\":true}]",
            "62-/x,1[{\"k\":[{\"_placeholder\":true,\"num\":2}]}]",
            "2999999999999999999[\"a\"]",
        ] {
            assert!(decode_socket(bad).is_err(), "{bad:?} was accepted");
        }
        let p = decode_socket("52-/chat,3[\"up\",{\"_placeholder\":true,\"num\":1},[{\"_placeholder\":true,\"num\":0}]]")
            .expect("binary event");
        assert_eq!(
            (p.kind, p.attachments, p.ack),
            (SocketKind::Event, 2, Some(3))
        );
        assert_eq!(p.namespace, "/chat");
        let p = decode_socket("61-4[{\"_placeholder\":true,\"num\":0}]").expect("binary ack");
        assert_eq!(
            (p.kind, p.attachments, p.ack),
            (SocketKind::Ack, 1, Some(4))
        );
        let long = format!("0/{},", "a".repeat(200));
        assert!(decode_socket(&long).is_err());
    }

    #[test]
    fn server_messages_carry_namespace_and_ack() {
        assert_eq!(
            socket_message('0', "/", None, "{\"sid\":\"x\"}"),
            "40{\"sid\":\"x\"}"
        );
        assert_eq!(socket_message('3', "/chat", Some(4), "[]"), "43/chat,4[]");
    }
}
