//! Protocol adapters: how a bench client connects, subscribes, publishes and answers pings on
//! kilat, on a raw broadcast server, on Socket.IO (Engine.IO v4, websocket transport) and on
//! Pusher Channels servers (protocol 7; publishing through the signed HTTP API, `pusher.rs`).

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
    /// Pusher Channels protocol 7 (kilat's `/app/{key}`, Soketi, ...): `pusher:subscribe` to
    /// public channels, `pusher:ping` answered with `pusher:pong`; publishers trigger events
    /// through the Pusher HTTP API, signed (`--publish-via http`).
    Pusher,
}

impl Protocol {
    /// The URL path used when the given URL has none (or `/`).
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            Protocol::Kilat => "/connection/websocket",
            Protocol::Broadcast => "/",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
            Protocol::Pusher => "/app/app-key?protocol=7",
        }
    }

    /// Whether the server has channels (the others deliver everything to everyone).
    pub(crate) fn has_channels(self) -> bool {
        matches!(self, Protocol::Kilat | Protocol::Pusher)
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
        Protocol::Pusher => {
            let established = conn.read_text().await?;
            if !contains(&established, b"pusher:connection_established") {
                bail!(
                    "expected pusher:connection_established, got {}",
                    String::from_utf8_lossy(&established)
                );
            }
            Ok(())
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

/// Subscribes to `channel` (kilat and Pusher; the others deliver everything to every
/// connection). `delta` asks a kilat subscription for fossil deltas.
pub(crate) async fn subscribe(
    conn: &mut Conn,
    protocol: Protocol,
    channel: &str,
    delta: bool,
) -> Result<()> {
    if protocol == Protocol::Pusher {
        let cmd = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#);
        conn.send_text(cmd.as_bytes()).await?;
        loop {
            let reply = conn.read_text().await?;
            if contains(&reply, b"pusher_internal:subscription_succeeded") {
                return Ok(());
            }
            if contains(&reply, b"pusher:error") || contains(&reply, b"subscription_error") {
                bail!("subscribe refused: {}", String::from_utf8_lossy(&reply));
            }
            if let Some(pong) = answer_ping(protocol, OP_TEXT, &reply) {
                conn.send_text(pong).await?;
            }
        }
    }
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
        Protocol::Pusher => contains(payload, b"\"pusher:ping\"")
            .then_some(br#"{"event":"pusher:pong","data":{}}"#.as_slice()),
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
        // Pusher publishers use the HTTP API (`pusher::event_body`), never the socket.
        Protocol::Pusher => String::new(),
    }
}

/// A bench payload: `{"kb":[publisher,seq,send_time_us,intended_us],"x":"..."}` padded to
/// about `size` bytes. `intended_us` is when the publication was due by the schedule (equal to
/// the send time when the publisher keeps up; earlier when it stalled).
pub(crate) fn payload(
    publisher: u32,
    seq: u64,
    sent_us: u64,
    intended_us: u64,
    size: usize,
) -> String {
    let mut s = format!(r#"{{"kb":[{publisher},{seq},{sent_us},{intended_us}],"x":""#);
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('a', pad));
    s.push_str("\"}");
    s
}

/// Every `(publisher, seq, sent_us, intended_us)` marker in a received message (batches carry
/// several), also inside a JSON string (Pusher event data is a string: `"{\"kb\":[...]...}"`).
/// A marker without the intended time (three numbers) reports its send time for it.
pub(crate) fn markers(payload: &[u8], mut f: impl FnMut(u32, u64, u64, u64)) {
    const TAG: &[u8] = b"\"kb";
    let mut rest = payload;
    while let Some(i) = find(rest, TAG) {
        rest = &rest[i + TAG.len()..];
        let skip = if rest.starts_with(b"\":[") {
            3
        } else if rest.starts_with(b"\\\":[") {
            4
        } else {
            continue;
        };
        rest = &rest[skip..];
        let mut nums = [0u64; 4];
        let mut k = 0;
        let mut at = 0;
        while k < 4 && at < rest.len() {
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
            let sep = rest.get(at).copied();
            at += 1; // the ',' or ']'
            if sep != Some(b',') {
                break;
            }
        }
        match k {
            3 => f(nums[0] as u32, nums[1], nums[2], nums[2]),
            4 => f(nums[0] as u32, nums[1], nums[2], nums[3]),
            _ => {}
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
        let p = payload(3, 17, 123_456, 120_000, 100);
        assert_eq!(p.len(), 100);
        let push = format!(r#"{{"push":{{"channel":"c","pub":{{"data":{p},"offset":4}}}}}}"#);
        let batch = format!("{push}\n{push}");
        let mut seen = Vec::new();
        markers(batch.as_bytes(), |a, b, c, d| seen.push((a, b, c, d)));
        assert_eq!(
            seen,
            vec![(3, 17, 123_456, 120_000), (3, 17, 123_456, 120_000)]
        );
        // A three-number marker (an older bench) has its send time as the intended time.
        let mut old = Vec::new();
        markers(br#"{"kb":[1,2,30],"x":""}"#, |a, b, c, d| {
            old.push((a, b, c, d))
        });
        assert_eq!(old, vec![(1, 2, 30, 30)]);
    }

    #[test]
    fn markers_are_found_inside_pusher_string_data() {
        let p = payload(2, 9, 77, 70, 60);
        let event = format!(
            r#"{{"event":"bench","channel":"bench0","data":{}}}"#,
            serde_json::to_string(&p).unwrap()
        );
        let mut seen = Vec::new();
        markers(event.as_bytes(), |a, b, c, d| seen.push((a, b, c, d)));
        assert_eq!(seen, vec![(2, 9, 77, 70)]);
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
        assert_eq!(
            answer_ping(
                Protocol::Pusher,
                OP_TEXT,
                br#"{"event":"pusher:ping","data":{}}"#
            ),
            Some(&br#"{"event":"pusher:pong","data":{}}"#[..])
        );
        assert!(answer_ping(Protocol::Pusher, OP_TEXT, br#"{"event":"x","data":"{}"}"#).is_none());
    }
}
