//! Protocol adapters: how a bench client connects, subscribes, publishes and answers pings on
//! kilat, on a raw broadcast server and on Socket.IO (Engine.IO v4, websocket transport).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::client::{self, Conn, OP_TEXT, Target, Transport};

/// Which server protocol the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Protocol {
    /// kilat protocol v1: `connect`, `subscribe`, `publish` commands; `{}` pings answered.
    Kilat,
    /// A raw broadcast server: every text message a client sends goes to all clients.
    Broadcast,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket): `40` connect, `42["msg",...]` events,
    /// `2` pings answered with `3`; the server is expected to re-emit `msg` to everyone.
    Socketio,
}

impl Protocol {
    /// The URL path used when the given URL has none (or `/`).
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            Protocol::Kilat => "/connection/websocket",
            Protocol::Broadcast => "/",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Whether the server has channels (the others deliver everything to everyone).
    pub(crate) fn has_channels(self) -> bool {
        self == Protocol::Kilat
    }
}

/// Builds the target, filling in the protocol's default path when the URL has none. For SSE,
/// the WebSocket endpoint's path (given or default) becomes kilat's SSE endpoint.
pub(crate) fn target(url: &str, protocol: Protocol, transport: Transport) -> Result<Target> {
    let mut t = Target::parse(url)?;
    if t.path == "/" {
        protocol.default_path().clone_into(&mut t.path);
    }
    if transport == Transport::Sse {
        if protocol != Protocol::Kilat {
            bail!("--transport sse is kilat's SSE endpoint; use --protocol kilat");
        }
        if t.path == Protocol::Kilat.default_path() {
            "/connection/sse".clone_into(&mut t.path);
        }
    }
    Ok(t)
}

/// Opens a connection over `transport`, performs the protocol's connect step and, with a
/// channel, subscribes to it (for SSE, within the connect command, as the stream has no other
/// way in before the session exists).
pub(crate) async fn open_subscribed(
    target: &Target,
    protocol: Protocol,
    transport: Transport,
    channel: Option<&str>,
    timeout: Duration,
) -> Result<Conn> {
    open_subscribed_with(target, protocol, transport, channel, false, timeout).await
}

/// [`open_subscribed`], with `delta` asking for `delta: "fossil"` (kilat over WebSocket only).
pub(crate) async fn open_subscribed_with(
    target: &Target,
    protocol: Protocol,
    transport: Transport,
    channel: Option<&str>,
    delta: bool,
    timeout: Duration,
) -> Result<Conn> {
    if delta && (protocol != Protocol::Kilat || transport != Transport::Ws) {
        bail!("delta subscriptions need the kilat protocol over WebSocket");
    }
    if transport == Transport::Ws {
        let mut conn = open(target, protocol, timeout).await?;
        if let Some(channel) = channel {
            tokio::time::timeout(timeout, subscribe(&mut conn, protocol, channel, delta))
                .await
                .map_err(|_| anyhow::anyhow!("subscribe timed out"))??;
        }
        return Ok(conn);
    }
    let mut connect = serde_json::json!({"id": 1, "connect": {}});
    if let Some(channel) = channel {
        connect["connect"]["subs"] = serde_json::json!({ channel: {} });
    }
    let (conn, reply) = client::open_sse(target, &connect.to_string(), timeout).await?;
    if let Some(channel) = channel {
        let sub = &reply["connect"]["subs"][channel];
        if sub.is_null() || sub.get("error").is_some() {
            bail!("subscribing {channel} at connect failed: {reply}");
        }
    }
    Ok(conn)
}

/// Opens a WebSocket and performs the protocol's connect step.
pub(crate) async fn open(target: &Target, protocol: Protocol, timeout: Duration) -> Result<Conn> {
    let mut conn = client::open(target, timeout).await?;
    tokio::time::timeout(timeout, handshake(&mut conn, protocol))
        .await
        .map_err(|_| anyhow::anyhow!("protocol handshake timed out"))??;
    Ok(conn)
}

async fn handshake(conn: &mut Conn, protocol: Protocol) -> Result<()> {
    match protocol {
        Protocol::Broadcast => Ok(()),
        Protocol::Kilat => {
            conn.send_text(br#"{"id":1,"connect":{}}"#).await?;
            loop {
                let reply = conn.read_text().await?;
                if contains(&reply, b"\"id\":1") {
                    if contains(&reply, b"\"error\"") {
                        bail!("connect refused: {}", String::from_utf8_lossy(&reply));
                    }
                    return Ok(());
                }
            }
        }
        Protocol::Socketio => {
            let open = conn.read_text().await?;
            if !open.starts_with(b"0") {
                bail!(
                    "expected an Engine.IO open packet, got {}",
                    String::from_utf8_lossy(&open)
                );
            }
            conn.send_text(b"40").await?;
            loop {
                let reply = conn.read_text().await?;
                if reply.starts_with(b"40") {
                    return Ok(());
                }
                if reply.starts_with(b"44") {
                    bail!("namespace refused: {}", String::from_utf8_lossy(&reply));
                }
                if reply == b"2" {
                    conn.send_text(b"3").await?;
                }
            }
        }
    }
}

/// Subscribes to `channel` (kilat only; the others deliver everything to every connection).
pub(crate) async fn subscribe(
    conn: &mut Conn,
    protocol: Protocol,
    channel: &str,
    delta: bool,
) -> Result<()> {
    if protocol != Protocol::Kilat {
        return Ok(());
    }
    let delta = if delta { r#","delta":"fossil""# } else { "" };
    let cmd = format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"{delta}}}}}"#);
    conn.send_text(cmd.as_bytes()).await?;
    loop {
        let reply = conn.read_text().await?;
        if contains(&reply, b"\"id\":2") {
            if contains(&reply, b"\"error\"") {
                bail!("subscribe refused: {}", String::from_utf8_lossy(&reply));
            }
            return Ok(());
        }
        if answer_ping(protocol, OP_TEXT, &reply).is_some() {
            conn.send_text(b"{}").await?;
        }
    }
}

/// The reply to a server's application-level ping, if `payload` is one.
pub(crate) fn answer_ping(protocol: Protocol, opcode: u8, payload: &[u8]) -> Option<&'static [u8]> {
    if opcode != OP_TEXT {
        return None;
    }
    match protocol {
        Protocol::Kilat => payload
            .split(|b| *b == b'\n')
            .any(|l| l == b"{}")
            .then_some(b"{}".as_slice()),
        Protocol::Socketio => (payload == b"2").then_some(b"3".as_slice()),
        Protocol::Broadcast => None,
    }
}

/// The text a publisher connection sends to publish `data` (a JSON value) on `channel`.
pub(crate) fn publish_text(protocol: Protocol, id: u32, channel: &str, data: &str) -> String {
    match protocol {
        Protocol::Kilat => {
            format!(r#"{{"id":{id},"publish":{{"channel":"{channel}","data":{data}}}}}"#)
        }
        Protocol::Broadcast => data.to_owned(),
        Protocol::Socketio => format!(r#"42["msg",{data}]"#),
    }
}

/// A bench payload: `{"kb":[publisher,seq,send_time_us],"x":"..."}` padded to about `size` bytes.
pub(crate) fn payload(publisher: u32, seq: u64, sent_us: u64, size: usize) -> String {
    let mut s = format!(r#"{{"kb":[{publisher},{seq},{sent_us}],"x":""#);
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('a', pad));
    s.push_str("\"}");
    s
}

/// Every `(publisher, seq, sent_us)` marker in a received message (batches carry several).
pub(crate) fn markers(payload: &[u8], mut f: impl FnMut(u32, u64, u64)) {
    const TAG: &[u8] = b"\"kb\":[";
    let mut rest = payload;
    while let Some(i) = find(rest, TAG) {
        rest = &rest[i + TAG.len()..];
        let mut nums = [0u64; 3];
        let mut k = 0;
        let mut at = 0;
        while k < 3 && at < rest.len() {
            let mut v = 0u64;
            let begin = at;
            while at < rest.len() && rest[at].is_ascii_digit() {
                v = v * 10 + u64::from(rest[at] - b'0');
                at += 1;
            }
            if at == begin {
                break;
            }
            nums[k] = v;
            k += 1;
            at += 1; // the ',' or ']'
        }
        if k == 3 {
            f(nums[0] as u32, nums[1], nums[2]);
        }
    }
}

/// Microseconds since the Unix epoch (one clock for every bench process on the machine).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_markers() {
        let p = payload(3, 17, 123_456, 100);
        assert_eq!(p.len(), 100);
        let push = format!(r#"{{"push":{{"channel":"c","pub":{{"data":{p},"offset":4}}}}}}"#);
        let batch = format!("{push}\n{push}");
        let mut seen = Vec::new();
        markers(batch.as_bytes(), |a, b, c| seen.push((a, b, c)));
        assert_eq!(seen, vec![(3, 17, 123_456), (3, 17, 123_456)]);
    }

    #[test]
    fn pings_are_recognised() {
        assert!(answer_ping(Protocol::Kilat, OP_TEXT, b"{}").is_some());
        assert!(answer_ping(Protocol::Kilat, OP_TEXT, b"{\"push\":{}}").is_none());
        assert_eq!(
            answer_ping(Protocol::Socketio, OP_TEXT, b"2"),
            Some(&b"3"[..])
        );
        assert!(answer_ping(Protocol::Broadcast, OP_TEXT, b"{}").is_none());
    }
}
