//! The Socket.IO side of a connection for the shared [`driver`](crate::transport::driver): Engine.IO
//! packets in, kilat commands to the hub session; kilat replies and pushes out, Socket.IO
//! packets to the client, over long polling or WebSocket (switched in place on upgrade).
//!
//! The mapping (docs/socketio.md):
//! - the first Socket.IO CONNECT is the kilat `connect` (`auth.token` is the token, the rest of
//!   `auth` its `data`), subscribing the namespace's channel `sio:<namespace>` in the same round
//!   trip; later namespaces subscribe their channel;
//! - a client EVENT is a `publish` to the namespace's channel (`{"event", "args"}`) or an `rpc`
//!   (method = event name) answered by the backend, whose `data` becomes the ack's arguments;
//! - a `pub` push becomes an EVENT: `{"event": name, "args": [...]}` data is that event, any
//!   other data is the event `message` with the data as its one argument. Its packet bytes are
//!   computed once per publication and transport (encoding slots of the shared frame);
//! - the hub's `{}` ping is the Engine.IO ping, the client's pong the hub's `{}`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use kilat_protocol::{Disconnect, DisconnectCode, EncodingSlot, SharedFrame};
use kilat_transport::ws::{self, Message, WsConnection};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::packet::{self, EnginePacket, SocketKind};
use super::recovery::{self, Recovery};
use super::{EventMode, Registration, WsIo};
use crate::transport::driver::{Inbound, Wire};

/// Slot of a shared frame's Engine.IO packets as a long-polling payload part.
pub(crate) const SLOT_SIO_TEXT: EncodingSlot = EncodingSlot(8);
/// Slot of a shared frame's Engine.IO packets as WebSocket text frames.
pub(crate) const SLOT_SIO_WS: EncodingSlot = EncodingSlot(9);

/// The namespace channel prefix: Socket.IO namespace `/chat` is kilat channel `sio:/chat`.
pub(crate) const CHANNEL_PREFIX: &str = "sio:";

/// How the client is reached right now.
enum Mode {
    Polling,
    /// Boxed: a polling session does not carry a WebSocket's state.
    WebSocket(Box<WsConnection<WsIo>>),
}

/// What a command the wire sent to the session was for.
#[derive(Debug)]
enum Pending {
    /// The kilat connect, made for these namespaces' CONNECTs.
    Connect(Vec<String>),
    /// A later namespace's subscription.
    Namespace(String),
    /// A client EVENT published or sent to the backend; answered with ACK when it asked.
    Event { namespace: String, ack: Option<u64> },
}

/// Where the kilat connect stands.
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    None,
    Sent,
    Done,
}

/// The Socket.IO wire of one Engine.IO session.
pub(crate) struct SioWire {
    mode: Mode,
    pub(crate) registration: Registration,
    events: EventMode,
    /// Largest total size of one packet's binary attachments (`max_http_buffer_size`).
    max_attachment_bytes: usize,
    connect: Connect,
    next_id: u32,
    /// The Socket.IO state, boxed: an idle session's task stays small (the guard in `mod.rs`).
    sio: Box<SocketState>,
}

/// What the wire knows of the Socket.IO side of the session.
#[derive(Default)]
struct SocketState {
    /// The kilat client id once connected: each namespace socket's `sid`.
    client: Option<String>,
    /// Namespaces connected on this Engine.IO session.
    namespaces: Vec<String>,
    /// Commands sent to the session and what their replies answer.
    pending: HashMap<u32, Pending>,
    /// A BINARY_EVENT or BINARY_ACK waiting for its attachments.
    partial: Option<Box<Partial>>,
    /// Connection state recovery, when `[socketio] recovery` is on.
    recovery: Option<Recovery>,
}

/// A binary packet whose attachments are still arriving (the next Engine.IO messages).
struct Partial {
    kind: SocketKind,
    namespace: String,
    ack: Option<u64>,
    /// The event name (BINARY_EVENT).
    name: String,
    /// The arguments, with their placeholders.
    args: Box<RawValue>,
    expected: usize,
    /// The attachments so far, base64 (the form kept in publications, docs/socketio.md).
    attachments: Vec<String>,
    /// Their decoded size so far.
    bytes: usize,
}

impl SioWire {
    pub(crate) fn new(
        registration: Registration,
        events: EventMode,
        max_attachment_bytes: usize,
        recovery: Option<kilat_core::Node>,
        ws: Option<WsConnection<WsIo>>,
    ) -> Self {
        SioWire {
            mode: match ws {
                Some(ws) => Mode::WebSocket(Box::new(ws)),
                None => Mode::Polling,
            },
            registration,
            events,
            max_attachment_bytes,
            connect: Connect::None,
            next_id: 1,
            sio: Box::new(SocketState {
                recovery: recovery.map(Recovery::new),
                ..SocketState::default()
            }),
        }
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Takes a WebSocket that completed the upgrade, if one is waiting. A poll still open on
    /// the old transport is ended with a noop.
    fn take_upgrade(&mut self) {
        if matches!(self.mode, Mode::WebSocket(_)) {
            return;
        }
        let mut state = self.registration.shared.state.lock();
        if let Some(ws) = state.upgraded.take() {
            if let Some(poll) = state.poll.take() {
                let _ = poll.send(Bytes::from_static(b"6"));
            }
            drop(state);
            tracing::debug!("socket.io session upgraded to websocket");
            self.mode = Mode::WebSocket(Box::new(ws));
        }
    }

    /// Turns one Engine.IO packet into kilat command text (appended to `out`, `\n`-separated),
    /// or says why the session must close.
    fn translate(&mut self, packet: EnginePacket<'_>, out: &mut String) -> Result<(), Inbound> {
        match packet {
            EnginePacket::Close => return Err(Inbound::Gone),
            // The answer to the hub's ping (sent as an Engine.IO ping).
            EnginePacket::Pong(_) => push_line(out, "{}"),
            EnginePacket::Ping(_) | EnginePacket::Noop | EnginePacket::Upgrade => {}
            EnginePacket::Message(text) => {
                if self.sio.partial.is_some() {
                    // As Socket.IO's own decoder: no text packet while attachments are due.
                    return Err(parse_error(packet::Malformed(
                        "a packet arrived before the attachments of the one before",
                    )));
                }
                let packet = packet::decode_socket(text).map_err(parse_error)?;
                self.translate_socket(packet, out)?;
            }
            EnginePacket::Binary(encoded) => {
                use base64::Engine as _;
                // The size is bounded from the encoded length before anything is decoded.
                self.check_attachment(encoded.len() / 4 * 3)?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| parse_error(packet::Malformed("attachment is not base64")))?;
                self.attachment(encoded.to_owned(), decoded.len(), out)?;
            }
        }
        Ok(())
    }

    /// Whether an attachment of `len` bytes may join the packet waiting for it.
    fn check_attachment(&self, len: usize) -> Result<(), Inbound> {
        let Some(partial) = &self.sio.partial else {
            return Err(parse_error(packet::Malformed(
                "binary data outside a binary packet",
            )));
        };
        if partial.bytes.saturating_add(len) > self.max_attachment_bytes {
            return Err(parse_error(packet::Malformed(
                "attachments over max_http_buffer_size",
            )));
        }
        Ok(())
    }

    /// A binary WebSocket message: the next attachment of the packet waiting for it.
    fn binary_message(&mut self, bytes: &[u8], out: &mut String) -> Result<(), Inbound> {
        use base64::Engine as _;
        self.check_attachment(bytes.len())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.attachment(encoded, bytes.len(), out)
    }

    /// Adds one attachment (checked by [`Self::check_attachment`]); the last one completes
    /// its packet.
    fn attachment(&mut self, encoded: String, len: usize, out: &mut String) -> Result<(), Inbound> {
        let Some(partial) = self.sio.partial.as_mut() else {
            return Err(parse_error(packet::Malformed(
                "binary data outside a binary packet",
            )));
        };
        partial.bytes += len;
        partial.attachments.push(encoded);
        if partial.attachments.len() < partial.expected {
            return Ok(());
        }
        let Some(partial) = self.sio.partial.take() else {
            return Ok(());
        };
        let partial = *partial;
        if partial.kind == SocketKind::Ack {
            // The answer to a server `send` with an ack (`ack.rs`).
            self.answer(partial.ack, partial.args, partial.attachments);
        } else if partial.kind == SocketKind::Event {
            self.event(
                partial.namespace,
                &partial.name,
                &partial.args,
                &partial.attachments,
                partial.ack,
                out,
            );
        }
        Ok(())
    }

    /// A client EVENT (with its attachments, base64, if it was a BINARY_EVENT): a publication
    /// to the namespace's channel or an rpc.
    fn event(
        &mut self,
        namespace: String,
        name: &str,
        args: &RawValue,
        attachments: &[String],
        ack: Option<u64>,
        out: &mut String,
    ) {
        let name_json = serde_json::to_string(name).unwrap_or_default();
        let attachments = if attachments.is_empty() {
            String::new()
        } else {
            format!(
                ",\"attachments\":{}",
                serde_json::to_string(attachments).unwrap_or_default()
            )
        };
        let id = self.id();
        match self.events {
            EventMode::Publish => {
                let channel = channel_json(&namespace);
                push_line(
                    out,
                    &format!(
                        "{{\"id\":{id},\"publish\":{{\"channel\":{channel},\"data\":{{\"event\":{name_json},\"args\":{}{attachments}}}}}}}",
                        args.get()
                    ),
                );
            }
            EventMode::Rpc => {
                let ns_json = serde_json::to_string(&namespace).unwrap_or_default();
                push_line(
                    out,
                    &format!(
                        "{{\"id\":{id},\"rpc\":{{\"method\":{name_json},\"data\":{{\"namespace\":{ns_json},\"args\":{}{attachments}}}}}}}",
                        args.get()
                    ),
                );
            }
        }
        self.sio
            .pending
            .insert(id, Pending::Event { namespace, ack });
    }

    fn translate_socket(
        &mut self,
        packet: packet::SocketPacket<'_>,
        out: &mut String,
    ) -> Result<(), Inbound> {
        let namespace = packet.namespace.to_owned();
        let connected = self.sio.namespaces.contains(&namespace);
        if packet.attachments > 0 {
            if !connected {
                return Err(parse_error(packet::Malformed("event before CONNECT")));
            }
            // Nothing is kept per attachment yet: they are counted and sized as they come.
            self.sio.partial = Some(Box::new(Partial {
                kind: packet.kind,
                namespace,
                ack: packet.ack,
                name: packet.head.unwrap_or_default(),
                args: packet.data.unwrap_or_else(packet::empty_array),
                expected: packet.attachments,
                attachments: Vec::new(),
                bytes: 0,
            }));
            return Ok(());
        }
        match packet.kind {
            SocketKind::Connect => {
                if connected {
                    return Err(parse_error(packet::Malformed(
                        "namespace already connected",
                    )));
                }
                match self.connect {
                    Connect::None => {
                        self.connect = Connect::Sent;
                        let id = self.id();
                        self.sio
                            .pending
                            .insert(id, Pending::Connect(vec![namespace.clone()]));
                        let pid = packet.data.as_deref().and_then(auth_pid);
                        match (&mut self.sio.recovery, pid) {
                            (Some(recovery), Some(pid)) => {
                                // A reconnection: its positions are read first (in `recv`).
                                let read = recovery.load(
                                    &pid,
                                    &self.registration.sessions,
                                    &self.registration.shared,
                                );
                                recovery.lookup = Some(recovery::Lookup {
                                    id,
                                    auth: packet.data,
                                    namespace,
                                    pid,
                                    read,
                                });
                            }
                            (recovery, _) => {
                                if let Some(recovery) = recovery {
                                    recovery.recovering = false;
                                    recovery.positions.clear();
                                }
                                let params = connect_params(
                                    packet.data.as_deref(),
                                    &namespace,
                                    self.sio.recovery.is_some(),
                                    &[],
                                );
                                push_line(out, &format!("{{\"id\":{id},\"connect\":{params}}}"));
                            }
                        }
                    }
                    Connect::Sent => {
                        // Answered with the connect that is under way.
                        if let Some(Pending::Connect(waiting)) = self
                            .sio
                            .pending
                            .values_mut()
                            .find(|p| matches!(p, Pending::Connect(_)))
                        {
                            waiting.push(namespace);
                        }
                    }
                    Connect::Done => {
                        let id = self.id();
                        let channel = channel_json(&namespace);
                        // Positioned when recovery follows it.
                        let recover = if self.sio.recovery.is_some() {
                            ",\"recover\":true"
                        } else {
                            ""
                        };
                        push_line(
                            out,
                            &format!(
                                "{{\"id\":{id},\"subscribe\":{{\"channel\":{channel}{recover}}}}}"
                            ),
                        );
                        self.sio.pending.insert(id, Pending::Namespace(namespace));
                    }
                }
            }
            SocketKind::Disconnect => {
                if connected {
                    self.sio.namespaces.retain(|n| *n != namespace);
                    if let Some(recovery) = &mut self.sio.recovery {
                        let channel = format!("{CHANNEL_PREFIX}{namespace}");
                        recovery.positions.retain(|p| p.channel != channel);
                        // The client left: its state is not kept.
                        recovery.ended = self.sio.namespaces.is_empty();
                    }
                    let id = self.id();
                    let channel = channel_json(&namespace);
                    push_line(
                        out,
                        &format!("{{\"id\":{id},\"unsubscribe\":{{\"channel\":{channel}}}}}"),
                    );
                }
            }
            SocketKind::Event => {
                if !connected {
                    // The reference server closes a client that talks in a namespace it has
                    // not joined.
                    return Err(parse_error(packet::Malformed("event before CONNECT")));
                }
                let name = packet.head.unwrap_or_default();
                let args = packet.data.unwrap_or_else(packet::empty_array);
                self.event(namespace, &name, &args, &[], packet.ack, out);
            }
            // The answer to a server `send` with an ack (`ack.rs`); an ACK answering nothing
            // this connection was asked is dropped.
            SocketKind::Ack => {
                let args = packet.data.unwrap_or_else(packet::empty_array);
                self.answer(packet.ack, args, Vec::new());
            }
        }
        Ok(())
    }

    /// A client's ACK or BINARY_ACK: the answer to the server's ack `id`, if it asked one.
    fn answer(&self, id: Option<u64>, args: Box<RawValue>, attachments: Vec<String>) {
        if let (Some(id), Some(client)) = (id, &self.sio.client) {
            self.registration.sessions.acks.answer(
                client,
                id,
                Ok(super::ack::AckArgs { args, attachments }),
            );
        }
    }

    /// The Engine.IO packets for the frames (replies translated here, per client; pushes from
    /// the shared frame's cached encoding).
    fn outgoing(&mut self, frames: &[SharedFrame], websocket: bool) -> Vec<Bytes> {
        // Every Socket.IO session of a node has the same setting, so the cached encodings agree.
        let offsets = self.sio.recovery.is_some();
        let mut chunks = Vec::with_capacity(frames.len());
        for frame in frames {
            if frame.is_reply() {
                for line in frame.json().split(|b| *b == b'\n') {
                    if let Some(text) = self.reply(line) {
                        if websocket {
                            // One Engine.IO packet per WebSocket message.
                            for packet in text.split('\u{1e}') {
                                chunks.push(ws::frame::encode_frame(
                                    ws::frame::OP_TEXT,
                                    false,
                                    packet.as_bytes(),
                                ));
                            }
                        } else {
                            chunks.push(Bytes::from(text));
                        }
                    }
                }
            } else {
                let encoded = if websocket {
                    frame.encoded(SLOT_SIO_WS, |json| shared_packets_with(json, true, offsets))
                } else {
                    frame.encoded(SLOT_SIO_TEXT, |json| {
                        shared_packets_with(json, false, offsets)
                    })
                };
                if !encoded.is_empty() {
                    chunks.push(encoded);
                }
            }
        }
        chunks
    }

    /// One reply of the session, as Engine.IO packets (`\x1e`-joined), or nothing to send.
    fn reply(&mut self, line: &[u8]) -> Option<String> {
        let Ok(reply) = serde_json::from_slice::<Reply<'_>>(line) else {
            // A server API `send` to this connection (`ack.rs`), queued as a reply frame.
            if let Some(packets) = super::ack::message_packets(
                line,
                &self.sio.namespaces,
                self.sio.client.as_deref(),
                &self.registration.sessions.acks,
            ) {
                return (!packets.is_empty()).then_some(packets);
            }
            // A push or a pong batched with a reply: shared translation works per line too.
            let packets = shared_packets_with(line, false, self.sio.recovery.is_some());
            return (!packets.is_empty()).then(|| String::from_utf8_lossy(&packets).into_owned());
        };
        let pending = self.sio.pending.remove(&reply.id)?;
        let error = reply.error.map(|e| e.message.into_owned());
        match pending {
            Pending::Connect(namespaces) => match error {
                None => {
                    self.connect = Connect::Done;
                    let (client, subs) = match reply.connect {
                        Some(c) => (Some(c.client.into_owned()), c.subs.unwrap_or_default()),
                        None => (None, Default::default()),
                    };
                    self.sio.client = client;
                    let recovered = self.recovered(&subs);
                    let mut out = Vec::new();
                    for namespace in namespaces {
                        out.push(self.connected(namespace));
                    }
                    if recovered {
                        // The missed publications, each channel's in order, after the CONNECT.
                        let mut events = Packets {
                            websocket: false,
                            offsets: true,
                            bytes: Vec::new(),
                        };
                        for (channel, result) in &subs {
                            for publication in &result.publications {
                                match (&publication.data, &publication.b64data) {
                                    (_, Some(b64)) => binary_event_packets(
                                        channel,
                                        b64,
                                        publication.offset,
                                        &mut events,
                                    ),
                                    (Some(data), None) => event_packets(
                                        channel,
                                        data,
                                        publication.offset,
                                        &mut events,
                                    ),
                                    (None, None) => {}
                                }
                            }
                        }
                        if !events.bytes.is_empty() {
                            out.push(String::from_utf8_lossy(&events.bytes).into_owned());
                        }
                    }
                    Some(out.join("\u{1e}"))
                }
                Some(message) => {
                    self.connect = Connect::None;
                    let body = serde_json::json!({ "message": message }).to_string();
                    let out: Vec<String> = namespaces
                        .iter()
                        .map(|ns| packet::socket_message('4', ns, None, &body))
                        .collect();
                    Some(out.join("\u{1e}"))
                }
            },
            Pending::Namespace(namespace) => {
                if let (Some(recovery), Some(result)) = (&mut self.sio.recovery, &reply.subscribe) {
                    recovery.follow(&format!("{CHANNEL_PREFIX}{namespace}"), result);
                }
                // Like the first namespace's (a `connect.subs` entry that fails does not fail
                // the connect), the channel is best effort: where the kilat namespace `sio`
                // does not allow it, the socket connects without the namespace's broadcasts.
                if let Some(message) = &error {
                    tracing::debug!(%namespace, %message, "socket.io namespace channel not subscribed");
                }
                Some(self.connected(namespace))
            }
            Pending::Event { namespace, ack } => {
                if let Some(message) = &error {
                    tracing::debug!(%namespace, %message, "socket.io event refused");
                }
                let ack = ack?;
                if error.is_none()
                    && let Some(packets) = reply
                        .rpc
                        .as_ref()
                        .and_then(|rpc| rpc.data)
                        .and_then(|data| binary_ack(&namespace, ack, data))
                {
                    return Some(packets);
                }
                let args = match (&error, reply.rpc) {
                    (Some(message), _) => serde_json::json!([{ "error": message }]).to_string(),
                    (None, Some(rpc)) => match rpc.data {
                        Some(data) if data.get().trim_start().starts_with('[') => {
                            data.get().to_owned()
                        }
                        Some(data) => format!("[{}]", data.get()),
                        None => "[]".to_owned(),
                    },
                    (None, None) => "[]".to_owned(),
                };
                Some(packet::socket_message('3', &namespace, Some(ack), &args))
            }
        }
    }

    /// After a successful kilat connect: whether it recovered every position asked for (then
    /// the session keeps its `pid`; otherwise it gets a new one), and the positions followed
    /// from now on.
    fn recovered(
        &mut self,
        subs: &std::collections::BTreeMap<String, recovery::SubResult>,
    ) -> bool {
        let Some(recovery) = &mut self.sio.recovery else {
            return false;
        };
        let recovered = recovery.recovering
            && recovery
                .positions
                .iter()
                .all(|p| subs.get(&p.channel).is_some_and(|r| r.recovered));
        if recovered {
            tracing::debug!("socket.io connection state recovered");
        } else {
            recovery.pid = super::session_id();
        }
        self.registration
            .sessions
            .pids
            .lock()
            .insert(recovery.pid.clone(), self.registration.shared.clone());
        recovery.recovering = false;
        recovery.ended = false;
        recovery.positions.clear();
        for (channel, result) in subs {
            recovery.follow(channel, result);
        }
        recovered
    }

    fn connected(&mut self, namespace: String) -> String {
        let sid = self.sio.client.clone().unwrap_or_default();
        let body = match &self.sio.recovery {
            Some(recovery) => serde_json::json!({ "sid": sid, "pid": recovery.pid }).to_string(),
            None => serde_json::json!({ "sid": sid }).to_string(),
        };
        let packet = packet::socket_message('0', &namespace, None, &body);
        self.sio.namespaces.push(namespace);
        packet
    }

    /// Writes `chunks` on the current transport; on polling, waits for the client's next poll
    /// (or an upgrade to WebSocket, then writes there).
    async fn deliver(
        &mut self,
        mut chunks: Vec<Bytes>,
        websocket_form: bool,
    ) -> std::io::Result<()> {
        // A signal taken here may also be for `recv` (packets posted): it is set again at the
        // end, so the next `recv` looks at the state.
        let mut took = false;
        let result = loop {
            if let Mode::WebSocket(conn) = &mut self.mode {
                if !websocket_form {
                    // Encoded for polling before the switch: re-frame each packet.
                    chunks = chunks
                        .iter()
                        .flat_map(|c| c.split(|b| *b == packet::RECORD_SEPARATOR))
                        .map(|p| ws::frame::encode_frame(ws::frame::OP_TEXT, false, p))
                        .collect();
                }
                break conn.send_encoded(&chunks).await;
            }
            let shared = self.registration.shared.clone();
            // Taken before the look: a change after it sets the signal again.
            took |= shared.changed.take();
            {
                let mut state = shared.state.lock();
                if state.upgraded.is_none() {
                    if state.closed {
                        break Err(std::io::ErrorKind::BrokenPipe.into());
                    }
                    if let Some(poll) = state.poll.take() {
                        drop(state);
                        let payload = join_payload(&chunks);
                        match poll.send(payload) {
                            Ok(()) => break Ok(()),
                            // That poll's client went away; wait for the next one.
                            Err(_) => continue,
                        }
                    }
                }
            }
            self.take_upgrade();
            if matches!(self.mode, Mode::WebSocket(_)) {
                continue;
            }
            shared.changed.wait().await;
        };
        if took {
            self.registration.shared.changed.keep();
        }
        result
    }
}

impl SioWire {
    /// Finishes a reconnecting CONNECT's read of its stored positions (resumed where a
    /// cancelled `recv` left it): the kilat connect command, recovering them if found.
    async fn finish_lookup(&mut self) -> Option<String> {
        let lookup = self.sio.recovery.as_mut()?.lookup.as_mut()?;
        let positions = lookup.read.as_mut().await;
        let recovery = self.sio.recovery.as_mut()?;
        let lookup = recovery.lookup.take()?;
        let mut positions = positions.unwrap_or_default();
        // The server knows what it sent; the client says what it got (the last event of the
        // namespace that reconnects): that channel recovers from the client's word.
        if let Some((channel, offset)) = lookup.auth.as_deref().and_then(auth_offset)
            && let Some(position) = positions.iter_mut().find(|p| p.channel == channel)
        {
            position.offset = position.offset.min(offset);
        }
        recovery.recovering = !positions.is_empty();
        if recovery.recovering {
            recovery.pid = lookup.pid;
        }
        recovery.positions = positions;
        let params = connect_params(
            lookup.auth.as_deref(),
            &lookup.namespace,
            true,
            &recovery.positions,
        );
        Some(format!("{{\"id\":{},\"connect\":{params}}}", lookup.id))
    }
}

impl Drop for SioWire {
    fn drop(&mut self) {
        if let Some(client) = &self.sio.client {
            // Whoever waits for this connection's acks hears at once that none will come.
            self.registration.sessions.acks.forget(client);
        }
        let Some(recovery) = &mut self.sio.recovery else {
            return;
        };
        let shared = self.registration.shared.clone();
        {
            let mut pids = self.registration.sessions.pids.lock();
            if pids
                .get(&recovery.pid)
                .is_some_and(|s| Arc::ptr_eq(s, &shared))
            {
                pids.remove(&recovery.pid);
            }
        }
        if self.connect != Connect::Done {
            recovery.positions.clear();
        }
        recovery.store(shared);
    }
}

impl Wire for SioWire {
    async fn recv(&mut self) -> Inbound {
        loop {
            if let Some(line) = self.finish_lookup().await {
                return Inbound::Message(Bytes::from(line));
            }
            // The shared state is looked at only after a signal (see `signal`): this runs once
            // per delivery, as the driver starts a new `recv` after every write. Taken before
            // the look, so a change made after it sets the signal again.
            let signalled = self.registration.shared.changed.take();
            self.take_upgrade();
            let posted = if signalled {
                let mut state = self.registration.shared.state.lock();
                if let Some(refusal) = state.refused.take() {
                    return Inbound::Refused(refusal);
                }
                if state.closed {
                    return Inbound::Gone;
                }
                std::mem::take(&mut state.inbound)
            } else {
                Vec::new()
            };
            if !posted.is_empty() {
                let mut out = String::new();
                for text in &posted {
                    let packet = match packet::decode_engine(text) {
                        Ok(packet) => packet,
                        Err(malformed) => return parse_error(malformed),
                    };
                    if let Err(end) = self.translate(packet, &mut out) {
                        return end;
                    }
                }
                if !out.is_empty() {
                    return Inbound::Message(Bytes::from(out));
                }
                continue;
            }
            let changed = &self.registration.shared.changed;
            match &mut self.mode {
                Mode::Polling => changed.wait().await,
                Mode::WebSocket(conn) => {
                    tokio::select! {
                        message = conn.read_message() => {
                            let text = match message {
                                Ok(Message::Text(text)) => text,
                                Ok(Message::Binary(bytes)) => {
                                    let mut out = String::new();
                                    if let Err(end) = self.binary_message(&bytes, &mut out) {
                                        return end;
                                    }
                                    if !out.is_empty() {
                                        return Inbound::Message(Bytes::from(out));
                                    }
                                    continue;
                                }
                                Ok(Message::Close { .. }) | Err(_) => return Inbound::Gone,
                            };
                            let Ok(text) = std::str::from_utf8(&text) else {
                                return parse_error(packet::Malformed("not UTF-8"));
                            };
                            let packet = match packet::decode_engine(text) {
                                Ok(packet) => packet,
                                Err(malformed) => return parse_error(malformed),
                            };
                            // In Engine.IO v4 the server pings; a client ping outside the upgrade
                            // probe (answered in `probe`) is ignored, as by `translate`.
                            let mut out = String::new();
                            if let Err(end) = self.translate(packet, &mut out) {
                                return end;
                            }
                            if !out.is_empty() {
                                return Inbound::Message(Bytes::from(out));
                            }
                        }
                        () = changed.wait() => {}
                    }
                }
            }
        }
    }

    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()> {
        self.take_upgrade();
        let websocket = matches!(self.mode, Mode::WebSocket(_));
        let chunks = self.outgoing(frames, websocket);
        if chunks.is_empty() {
            return Ok(());
        }
        self.deliver(chunks, websocket).await?;
        // Recovery follows what was handed to the client (one parse of each push's channel and
        // offset per delivery, only with `[socketio] recovery` on).
        if let Some(recovery) = &mut self.sio.recovery {
            for frame in frames.iter().filter(|f| !f.is_reply()) {
                recovery.advance(frame.json());
            }
        }
        Ok(())
    }

    async fn close(&mut self, disconnect: &Disconnect) {
        if !disconnect.reconnect
            && let Some(recovery) = &mut self.sio.recovery
        {
            // A final close (kicked, token expired): the client does not come back for it.
            recovery.ended = true;
        }
        tracing::debug!(code = disconnect.code, reason = %disconnect.reason, "closing socket.io session");
        // A reconnectable close (drain, slow consumer, no pong) ends only the Engine.IO
        // session, so the client reconnects; a final one first disconnects every namespace,
        // which Socket.IO clients take as "do not reconnect".
        let mut packets: Vec<Bytes> = Vec::new();
        // Namespaces still waiting for their CONNECT hear why (a connect hook's disconnect
        // answers with no error reply first): a Socket.IO client reports it as connect_error.
        let error = serde_json::json!({ "message": disconnect.reason }).to_string();
        for pending in self.sio.pending.values() {
            if let Pending::Connect(namespaces) = pending {
                for namespace in namespaces {
                    packets.push(Bytes::from(packet::socket_message(
                        '4', namespace, None, &error,
                    )));
                }
            }
        }
        if !disconnect.reconnect {
            for namespace in &self.sio.namespaces {
                packets.push(Bytes::from(packet::socket_message(
                    '1', namespace, None, "",
                )));
            }
        }
        packets.push(Bytes::from_static(b"1"));
        let websocket = matches!(self.mode, Mode::WebSocket(_));
        if websocket {
            packets = packets
                .iter()
                .map(|p| ws::frame::encode_frame(ws::frame::OP_TEXT, false, p))
                .collect();
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.deliver(packets, websocket)).await;
        if let Mode::WebSocket(conn) = &mut self.mode {
            let _ = conn.close(ws::CLOSE_NORMAL, "").await;
        }
    }
}

/// How long a closing polling session waits for a poll to take its last packets.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A decoding failure: the session closes, as the reference server's "parse error" does.
fn parse_error(malformed: packet::Malformed) -> Inbound {
    tracing::debug!(
        reason = malformed.0,
        "malformed socket.io packet; closing the session"
    );
    Inbound::Refused(Disconnect::new(DisconnectCode::BAD_REQUEST, malformed.0))
}

fn push_line(out: &mut String, line: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(line);
}

/// The kilat channel of a Socket.IO namespace, as a JSON string.
fn channel_json(namespace: &str) -> String {
    serde_json::to_string(&format!("{CHANNEL_PREFIX}{namespace}")).unwrap_or_default()
}

/// The kilat connect params for a CONNECT with `auth`: `auth.token` is the token, the whole
/// `auth` object the connect hook's `data`, and the namespace's channel is subscribed at once.
fn connect_params(
    auth: Option<&RawValue>,
    namespace: &str,
    recover: bool,
    positions: &[recovery::Position],
) -> String {
    #[derive(Deserialize)]
    struct Auth<'a> {
        #[serde(borrow, default)]
        token: Option<std::borrow::Cow<'a, str>>,
    }
    let token = auth
        .and_then(|a| serde_json::from_str::<Auth<'_>>(a.get()).ok())
        .and_then(|a| a.token.map(|t| t.into_owned()));
    let mut params = serde_json::Map::new();
    params.insert("name".into(), "socket.io".into());
    if let Some(token) = token {
        params.insert("token".into(), token.into());
    }
    let mut json = serde_json::Value::Object(params).to_string();
    json.pop();
    if let Some(auth) = auth {
        json.push_str(",\"data\":");
        json.push_str(auth.get());
    }
    // The namespace's channel, positioned when recovery follows it, and the channels a
    // reconnecting session recovers.
    let mut subs = serde_json::Map::new();
    let namespace_sub = if recover {
        serde_json::json!({ "recover": true })
    } else {
        serde_json::json!({})
    };
    subs.insert(format!("{CHANNEL_PREFIX}{namespace}"), namespace_sub);
    for position in positions {
        subs.insert(
            position.channel.clone(),
            serde_json::json!({ "recover": true, "offset": position.offset, "epoch": position.epoch }),
        );
    }
    json.push_str(",\"subs\":");
    json.push_str(&serde_json::Value::Object(subs).to_string());
    json.push('}');
    json
}

/// The `pid` of a reconnecting client's CONNECT (`auth.pid`), if it has kilat's form.
fn auth_pid(auth: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Pid {
        #[serde(default)]
        pid: Option<String>,
    }
    let pid = serde_json::from_str::<Pid>(auth.get()).ok()?.pid?;
    recovery::valid_pid(&pid).then_some(pid)
}

/// The last position a reconnecting client saw (`auth.offset`, `"<offset>:<channel>"` as the
/// events carried it).
fn auth_offset(auth: &RawValue) -> Option<(String, u64)> {
    #[derive(Deserialize)]
    struct Offset {
        #[serde(default)]
        offset: Option<String>,
    }
    let offset = serde_json::from_str::<Offset>(auth.get()).ok()?.offset?;
    let (offset, channel) = offset.split_once(':')?;
    Some((channel.to_owned(), offset.parse().ok()?))
}

/// A reply of the session, as much as the wire reads of it.
#[derive(Deserialize)]
struct Reply<'a> {
    id: u32,
    #[serde(borrow, default)]
    error: Option<ReplyError<'a>>,
    #[serde(borrow, default)]
    connect: Option<ConnectResult<'a>>,
    #[serde(borrow, default)]
    rpc: Option<RpcResult<'a>>,
    #[serde(default)]
    subscribe: Option<recovery::SubResult>,
}

#[derive(Deserialize)]
struct ReplyError<'a> {
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct ConnectResult<'a> {
    #[serde(borrow)]
    client: std::borrow::Cow<'a, str>,
    #[serde(default)]
    subs: Option<std::collections::BTreeMap<String, recovery::SubResult>>,
}

#[derive(Deserialize)]
struct RpcResult<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A push as the wire reads it.
#[derive(Deserialize)]
struct PushFrame<'a> {
    #[serde(borrow)]
    push: Push<'a>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow, default)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    r#pub: Option<Publication<'a>>,
}

#[derive(Deserialize)]
struct Publication<'a> {
    /// Absent for a binary publication.
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    /// A binary publication's bytes, base64 (no escapes, so borrowed).
    #[serde(borrow, default)]
    b64data: Option<&'a str>,
    #[serde(default)]
    offset: Option<u64>,
}

/// The Engine.IO packets of a shared frame (pushes and pings; one or more `\n`-separated), as
/// one polling payload part (`\x1e`-joined) or as WebSocket frames: computed once per frame
/// and transport, whoever receives it.
pub(crate) fn shared_packets(json: &[u8], websocket: bool) -> Bytes {
    shared_packets_with(json, websocket, false)
}

/// [`shared_packets`], with each event's stream position as its last argument when `offsets`
/// (connection state recovery on, as Socket.IO servers do it).
pub(crate) fn shared_packets_with(json: &[u8], websocket: bool, offsets: bool) -> Bytes {
    let mut out = Packets {
        websocket,
        offsets,
        bytes: Vec::new(),
    };
    for line in json.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line == b"{}" {
            out.text("2");
            continue;
        }
        let Ok(frame) = serde_json::from_slice::<PushFrame<'_>>(line) else {
            continue;
        };
        let (Some(channel), Some(publication)) = (frame.push.channel, frame.push.r#pub) else {
            continue;
        };
        match (publication.data, publication.b64data) {
            (_, Some(b64)) => binary_event_packets(&channel, b64, publication.offset, &mut out),
            (Some(data), None) => event_packets(&channel, data, publication.offset, &mut out),
            (None, None) => {}
        }
    }
    Bytes::from(out.bytes)
}

/// Engine.IO packets being encoded for one transport: WebSocket frames (text, or binary for
/// attachments), or one long-polling payload part (`\x1e`-joined, attachments as `b` + base64).
struct Packets {
    websocket: bool,
    /// Events end with their position (`"<offset>:<channel>"`), which a Socket.IO client with
    /// a `pid` keeps as its last offset and sends back when it reconnects.
    offsets: bool,
    bytes: Vec<u8>,
}

impl Packets {
    fn separate(&mut self) {
        if !self.bytes.is_empty() {
            self.bytes.push(packet::RECORD_SEPARATOR);
        }
    }

    fn text(&mut self, packet: &str) {
        if self.websocket {
            self.bytes.extend_from_slice(&ws::frame::encode_frame(
                ws::frame::OP_TEXT,
                false,
                packet.as_bytes(),
            ));
        } else {
            self.separate();
            self.bytes.extend_from_slice(packet.as_bytes());
        }
    }

    /// An attachment: `encoded` is its base64, `raw` its bytes.
    fn binary(&mut self, encoded: &str, raw: &[u8]) {
        if self.websocket {
            self.bytes.extend_from_slice(&ws::frame::encode_frame(
                ws::frame::OP_BINARY,
                false,
                raw,
            ));
        } else {
            self.separate();
            self.bytes.push(b'b');
            self.bytes.extend_from_slice(encoded.as_bytes());
        }
    }
}

/// The namespace a channel's publications are delivered in: `sio:/chat` and its rooms
/// (`sio:/chat@room`) in `/chat`; every other channel (token channels, server subscriptions)
/// in `/`.
fn namespace_of(channel: &str) -> &str {
    match channel.strip_prefix(CHANNEL_PREFIX) {
        Some(rest) if rest.starts_with('/') => rest.split('@').next().unwrap_or("/"),
        _ => "/",
    }
}

/// The EVENT packet of one publication, or its BINARY_EVENT and attachments when its data
/// carries `attachments` (base64) matching the placeholders in its `args`.
fn event_packets(channel: &str, data: &RawValue, offset: Option<u64>, out: &mut Packets) {
    let namespace = namespace_of(channel);
    // Channel names need no JSON escaping (docs/protocol.md: [A-Za-z0-9_@.,=;/:#-]).
    let position = match offset {
        Some(offset) if out.offsets => format!(",\"{offset}:{channel}\""),
        _ => String::new(),
    };
    let Some(event) = packet::EventData::parse(data) else {
        let body = format!("[\"message\",{}{position}]", data.get());
        out.text(&packet::socket_message('2', namespace, None, &body));
        return;
    };
    let body = event.body(&position);
    if let Some(attachments) = event.attachments.filter(|a| !a.is_empty()) {
        if let Some(raw) = packet::decode_attachments(&attachments, &body) {
            out.text(&packet::binary_message(
                '5',
                namespace,
                None,
                raw.len(),
                &body,
            ));
            for (encoded, raw) in attachments.iter().zip(&raw) {
                out.binary(encoded, raw);
            }
            return;
        }
        tracing::debug!(
            channel,
            "publication's attachments are not base64 or do not match its placeholders; sent without them"
        );
    }
    out.text(&packet::socket_message('2', namespace, None, &body));
}

/// A binary publication (`b64data`): the event `message` whose one argument is the bytes, as a
/// BINARY_EVENT and its attachment (a `Buffer`/`ArrayBuffer` in the client), encoded once per
/// publication and transport like any event.
fn binary_event_packets(channel: &str, b64: &str, offset: Option<u64>, out: &mut Packets) {
    use base64::Engine as _;
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        tracing::debug!(channel, "binary publication is not base64; not sent");
        return;
    };
    let position = match offset {
        Some(offset) if out.offsets => format!(",\"{offset}:{channel}\""),
        _ => String::new(),
    };
    let body = format!("[\"message\",{{\"_placeholder\":true,\"num\":0}}{position}]");
    out.text(&packet::binary_message(
        '5',
        namespace_of(channel),
        None,
        1,
        &body,
    ));
    out.binary(b64, &raw);
}

/// The BINARY_ACK for an rpc reply whose data is exactly `{"args": [...], "attachments":
/// [base64, ...]}` with matching placeholders; `None` for any other data (a plain ACK).
/// Attachments go as `b` + base64 packets, which Engine.IO clients read on both transports.
pub(crate) fn binary_ack(namespace: &str, ack: u64, data: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BinaryAck<'a> {
        #[serde(borrow)]
        args: &'a RawValue,
        attachments: Vec<String>,
    }
    let reply = serde_json::from_str::<BinaryAck<'_>>(data.get()).ok()?;
    if !reply.args.get().trim_start().starts_with('[') {
        return None;
    }
    let raw = packet::decode_attachments(&reply.attachments, reply.args.get())?;
    let mut out = packet::binary_message('6', namespace, Some(ack), raw.len(), reply.args.get());
    for encoded in &reply.attachments {
        out.push('\u{1e}');
        out.push('b');
        out.push_str(encoded);
    }
    Some(out)
}

/// One polling payload from packet groups.
fn join_payload(chunks: &[Bytes]) -> Bytes {
    if chunks.len() == 1 {
        return chunks[0].clone();
    }
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len() + 1).sum());
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            out.push(packet::RECORD_SEPARATOR);
        }
        out.extend_from_slice(chunk);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_become_events_in_their_namespace() {
        let push = br#"{"push":{"channel":"sio:/","pub":{"data":{"event":"chat message","args":["hi",1]},"offset":3}}}"#;
        assert_eq!(
            &shared_packets(push, false)[..],
            b"42[\"chat message\",\"hi\",1]"
        );
        let push =
            br#"{"push":{"channel":"sio:/chat@lobby","pub":{"data":{"event":"x","args":[]}}}}"#;
        assert_eq!(&shared_packets(push, false)[..], b"42/chat,[\"x\"]");
        let push = br#"{"push":{"channel":"room:1","pub":{"data":{"text":"yo"}}}}"#;
        assert_eq!(
            &shared_packets(push, false)[..],
            b"42[\"message\",{\"text\":\"yo\"}]"
        );
        assert_eq!(&shared_packets(b"{}", false)[..], b"2");
        let join = br#"{"push":{"channel":"sio:/","join":{"info":{"client":"c","user":""}}}}"#;
        assert!(shared_packets(join, false).is_empty());
    }

    #[test]
    fn publications_with_attachments_become_binary_events() {
        let push = br#"{"push":{"channel":"sio:/chat","pub":{"data":{"event":"f","args":[{"_placeholder":true,"num":0},"x"],"attachments":["AQID"]}}}}"#;
        assert_eq!(
            &shared_packets(push, false)[..],
            b"451-/chat,[\"f\",{\"_placeholder\":true,\"num\":0},\"x\"]\x1ebAQID"
        );
        let frames = shared_packets(push, true);
        let text = ws::frame::encode_frame(
            ws::frame::OP_TEXT,
            false,
            b"451-/chat,[\"f\",{\"_placeholder\":true,\"num\":0},\"x\"]",
        );
        let binary = ws::frame::encode_frame(ws::frame::OP_BINARY, false, &[1, 2, 3]);
        assert_eq!(&frames[..], [&text[..], &binary[..]].concat());
        // Not base64, or a placeholder past the attachments: a plain event, never binary.
        for data in [
            r#"{"event":"f","args":[{"_placeholder":true,"num":0}],"attachments":["@@"]}"#,
            r#"{"event":"f","args":[{"_placeholder":true,"num":1}],"attachments":["AQID"]}"#,
        ] {
            let push = format!(r#"{{"push":{{"channel":"sio:/","pub":{{"data":{data}}}}}}}"#);
            let packets = shared_packets(push.as_bytes(), false);
            assert!(packets.starts_with(b"42[\"f\""), "{data}");
        }
    }

    #[test]
    fn binary_publications_become_binary_message_events() {
        let push =
            br#"{"push":{"channel":"sio:/chat@room","pub":{"b64data":"AAEC/w==","offset":4}}}"#;
        assert_eq!(
            &shared_packets(push, false)[..],
            b"451-/chat,[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAAEC/w=="
        );
        assert_eq!(
            &shared_packets_with(push, false, true)[..],
            &b"451-/chat,[\"message\",{\"_placeholder\":true,\"num\":0},\"4:sio:/chat@room\"]\x1ebAAEC/w=="[..]
        );
        let frames = shared_packets(push, true);
        let text = ws::frame::encode_frame(
            ws::frame::OP_TEXT,
            false,
            b"451-/chat,[\"message\",{\"_placeholder\":true,\"num\":0}]",
        );
        let binary = ws::frame::encode_frame(ws::frame::OP_BINARY, false, &[0, 1, 2, 255]);
        assert_eq!(&frames[..], [&text[..], &binary[..]].concat());
    }

    #[test]
    fn an_rpc_reply_with_attachments_is_a_binary_ack() {
        let data = RawValue::from_string(
            r#"{"args":["ok",{"_placeholder":true,"num":0}],"attachments":["BAMCAQ=="]}"#
                .to_owned(),
        )
        .expect("json");
        assert_eq!(
            binary_ack("/", 7, &data).as_deref(),
            Some("461-7[\"ok\",{\"_placeholder\":true,\"num\":0}]\u{1e}bBAMCAQ==")
        );
        let other = RawValue::from_string(r#"{"args":[1],"extra":2}"#.to_owned()).expect("json");
        assert!(binary_ack("/", 7, &other).is_none());
    }

    #[test]
    fn connect_params_take_the_token_from_auth() {
        let auth = RawValue::from_string(r#"{"token":"abc","x":1}"#.to_owned()).expect("json");
        let params = connect_params(Some(&auth), "/", false, &[]);
        let value: serde_json::Value = serde_json::from_str(&params).expect("params are JSON");
        assert_eq!(value["token"], "abc");
        assert_eq!(value["data"]["x"], 1);
        assert!(value["subs"]["sio:/"].is_object());
        let value: serde_json::Value =
            serde_json::from_str(&connect_params(None, "/chat", false, &[]))
                .expect("params are JSON");
        assert!(value.get("token").is_none());
        assert!(value["subs"]["sio:/chat"].is_object());
    }
}
