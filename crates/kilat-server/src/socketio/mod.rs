//! Socket.IO clients on kilat (docs/socketio.md): Engine.IO v4 at `[socketio] path`
//! (`/socket.io/` by default) with its long-polling and WebSocket transports and the upgrade
//! between them, and Socket.IO v5 packets mapped onto a hub [`Session`] by [`wire::SioWire`],
//! which runs in the shared [`driver`] loop like every other transport.
//!
//! - `packet`: the Engine.IO and Socket.IO packet codecs (hostile input, fuzzed).
//! - `wire`: the translation between Socket.IO packets and kilat commands, replies and pushes.
//! - here: the HTTP handlers (handshake, poll, post, WebSocket) and the sessions by id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use kilat_core::TransportInfo;
use kilat_protocol::Disconnect;
use kilat_transport::ws::{self, Message, WsConnection};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::AppState;
use crate::transport::{admission, driver};

pub(crate) mod ack;
pub(crate) mod cluster;
pub(crate) mod packet;
pub(crate) mod recovery;
pub(crate) mod signal;
pub(crate) mod wire;

/// The socket of an Engine.IO WebSocket (hyper's upgraded connection).
pub(crate) type WsIo = TokioIo<Upgraded>;

/// Packets waiting for a session task, at most; a client posting faster is closed.
const INBOUND_MAX: usize = 1024;
/// How long an upgrading WebSocket may take to send its probe and its upgrade packet.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client EVENT becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventMode {
    /// A publication to the namespace's channel `sio:<namespace>`: every socket of the
    /// namespace gets it, the sender included (the tutorial's `io.emit`).
    Publish,
    /// An `rpc` answered by the backend's rpc hook; its `data` is the ack's arguments.
    Rpc,
}

/// `[socketio]`: Socket.IO clients (docs/socketio.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Whether the Engine.IO endpoint is served.
    pub enabled: bool,
    /// Its path (`path` of the client's options), with the trailing `/`.
    pub path: String,
    /// Largest polling POST body or WebSocket message, in bytes (`maxHttpBufferSize`).
    pub max_http_buffer_size: usize,
    /// What a client EVENT becomes: `publish` or `rpc`. Absent: `rpc` when `[proxy] rpc_url`
    /// is set, else `publish`.
    pub events: Option<EventMode>,
    /// Connection state recovery (Socket.IO 4.6+'s `connectionStateRecovery`): a client that
    /// reconnects within `history_ttl` gets what it missed and `socket.recovered`. Needs
    /// history in the kilat namespace `sio` (where the state is kept) and on the rooms.
    pub recovery: bool,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            enabled: true,
            path: "/socket.io/".to_owned(),
            max_http_buffer_size: 1_000_000,
            events: None,
            recovery: false,
        }
    }
}

/// What the handlers need from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_http_buffer_size: usize,
    pub(crate) events: EventMode,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) recovery: bool,
}

impl Settings {
    pub(crate) fn new(config: &crate::Config) -> Self {
        let events = config
            .socketio
            .events
            .unwrap_or(if config.proxy.rpc_url.is_some() {
                EventMode::Rpc
            } else {
                EventMode::Publish
            });
        Settings {
            max_http_buffer_size: config.socketio.max_http_buffer_size,
            events,
            ping_interval: config.node.ping_interval,
            ping_timeout: config.node.pong_timeout,
            recovery: config.socketio.recovery,
        }
    }
}

/// Engine.IO sessions of this node by id.
#[derive(Debug, Default, Clone)]
pub(crate) struct SioSessions {
    inner: Arc<Mutex<HashMap<String, Arc<Shared>>>>,
    /// Live sessions by their recovery `pid` (`[socketio] recovery`), so a reconnection that
    /// arrives before this node noticed the old connection is gone can take its place.
    pub(crate) pids: Arc<Mutex<HashMap<String, Arc<Shared>>>>,
    /// Polls forwarded to the nodes owning their sessions, waiting for the answer.
    pub(crate) forwarded: Arc<cluster::Forwarded>,
    /// Acks this node's Socket.IO connections owe the server API's `send` (`ack.rs`).
    pub(crate) acks: Arc<ack::Acks>,
    /// `send` calls waiting for other nodes' answers (`crate::send`).
    pub(crate) sends: Arc<crate::send::Sends>,
}

/// What the HTTP handlers and a session's task share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<SharedState>,
    /// Wakes the session task: packets posted, a poll arrived, an upgrade completed, closed.
    pub(crate) changed: signal::Signal,
    /// Wakes whoever waits for the ended session's recovery state to be kept.
    pub(crate) stored: Notify,
}

#[derive(Debug, Default)]
pub(crate) struct SharedState {
    /// Engine.IO packets posted and not yet read by the task.
    pub(crate) inbound: Vec<String>,
    /// The open poll, waiting for packets.
    pub(crate) poll: Option<oneshot::Sender<Bytes>>,
    /// A WebSocket that completed the upgrade, for the task to switch to.
    pub(crate) upgraded: Option<WsConnection<WsIo>>,
    /// A WebSocket probe is under way (a second one is refused).
    pub(crate) probing: bool,
    /// The probe was answered (`3probe`): the client pauses polling before it sends `5`, so a
    /// poll arriving now is answered with a noop at once (not held until the next packet).
    pub(crate) probed: bool,
    /// The session runs on WebSocket (opened there or upgraded): polls, posts and further
    /// upgrades are refused.
    pub(crate) on_websocket: bool,
    /// The client broke the protocol over HTTP: the task closes with this.
    pub(crate) refused: Option<Disconnect>,
    /// The session is over.
    pub(crate) closed: bool,
    /// The session is over and its recovery state (if any) is kept.
    pub(crate) stored: bool,
}

impl Shared {
    fn refuse(&self, disconnect: Disconnect) {
        let mut state = self.state.lock();
        if state.refused.is_none() {
            state.refused = Some(disconnect);
        }
        drop(state);
        self.changed.notify_one();
    }
}

/// A session's entry in [`SioSessions`] and its connection slot, given up with the wire.
pub(crate) struct Registration {
    pub(crate) shared: Arc<Shared>,
    sessions: SioSessions,
    id: String,
    _permit: admission::ConnectionSlot,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        state.inbound = Vec::new();
        // An open poll ends with the close packet.
        if let Some(poll) = state.poll.take() {
            let _ = poll.send(Bytes::from_static(b"1"));
        }
        drop(state);
        self.sessions.inner.lock().remove(&self.id);
    }
}

/// The query of an Engine.IO request.
#[derive(Debug, Default, Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// An Engine.IO error answer: HTTP 400 (403 for origins) with the reference server's codes.
fn engine_error(status: StatusCode, code: u8, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unknown_sid() -> Response {
    engine_error(StatusCode::BAD_REQUEST, 1, "Session ID unknown")
}

/// Every request to the Engine.IO path.
pub(crate) async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    if origin.is_some() && !state.origins.allows(request.headers()) {
        tracing::info!(origin = ?origin, "socket.io request from a refused origin");
        return engine_error(StatusCode::FORBIDDEN, 4, "Forbidden");
    }
    let mut response = route(&state, request).await;
    // The CORS headers the emulation endpoints send too (`cors.rs`), with credentials: the
    // Socket.IO client's `withCredentials` sends cookies.
    if let Some(origin) = origin {
        crate::cors::add(response.headers_mut(), origin, true);
    }
    response
}

async fn route(state: &AppState, request: Request) -> Response {
    if request.method() == Method::OPTIONS {
        // The origin was checked above; `handle` adds the Allow-Origin headers.
        return crate::cors::preflight_response("GET, POST");
    }
    let query: EngineQuery = request.uri().query().map(parse_query).unwrap_or_default();
    if query.eio.as_deref() != Some("4") {
        return engine_error(StatusCode::BAD_REQUEST, 5, "Unsupported protocol version");
    }
    match (query.transport.as_deref(), query.sid) {
        (Some("polling"), None) => {
            if request.method() != Method::GET {
                return engine_error(StatusCode::BAD_REQUEST, 2, "Bad handshake method");
            }
            let peer = crate::transport::peer::peer_of(request.extensions());
            handshake(state, request.headers(), peer, None).await
        }
        (Some("polling"), Some(sid)) => {
            let shared = state.sio_sessions.inner.lock().get(&sid).cloned();
            let Some(shared) = shared else {
                // Another node's session (no sticky sessions), or none.
                let method = request.method().clone();
                return cluster::forward(state, sid, &method, request.into_body()).await;
            };
            match *request.method() {
                Method::GET => poll(shared).await,
                Method::POST => post(state, shared, request.into_body()).await,
                _ => engine_error(StatusCode::BAD_REQUEST, 2, "Bad request"),
            }
        }
        (Some("websocket"), sid) => websocket(state, request, sid).await,
        _ => engine_error(StatusCode::BAD_REQUEST, 0, "Transport unknown"),
    }
}

/// The fields of the query string Engine.IO uses (none of their valid values needs
/// percent-decoding; anything else is refused as unknown).
fn parse_query(query: &str) -> EngineQuery {
    let mut out = EngineQuery::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.to_owned();
        match key {
            "EIO" => out.eio = Some(value),
            "transport" => out.transport = Some(value),
            "sid" => out.sid = Some(value),
            _ => {}
        }
    }
    out
}

/// Opens a session: a hub session on a fresh id, its task, and the `open` packet.
/// `ws`: the session starts on WebSocket (no polling first).
async fn handshake(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    ws: Option<WsConnection<WsIo>>,
) -> Response {
    match open(state, headers, peer, ws).await {
        Ok((open_packet, _)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            open_packet,
        )
            .into_response(),
        Err(response) => response,
    }
}

/// Starts a session; returns its `open` packet.
async fn open(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    ws: Option<WsConnection<WsIo>>,
) -> Result<(String, String), Response> {
    // The admission step every transport takes (draining, origin, limits, connection slot).
    let admission = admission::admit(state, headers, peer).map_err(admission::refusal_response)?;
    // The owner node's id first, so another node can forward polls to it (`cluster`).
    let id = format!("{}{}", state.node.id(), session_id());
    let shared = Arc::new(Shared::default());
    shared.state.lock().on_websocket = ws.is_some();
    state
        .sio_sessions
        .inner
        .lock()
        .insert(id.clone(), shared.clone());
    let (session, outbox, permit) = admission.open(
        &state.node,
        TransportInfo {
            name: "socketio",
            emulated: ws.is_none(),
        },
    );
    let settings = &state.sio;
    let open_packet = format!(
        "0{}",
        serde_json::json!({
            "sid": id,
            "upgrades": if ws.is_some() { vec![] } else { vec!["websocket"] },
            "pingInterval": settings.ping_interval.as_millis() as u64,
            "pingTimeout": settings.ping_timeout.as_millis() as u64,
            "maxPayload": settings.max_http_buffer_size,
        })
    );
    let mut ws = ws;
    if let Some(conn) = &mut ws
        && conn.send_text(open_packet.as_bytes()).await.is_err()
    {
        state.sio_sessions.inner.lock().remove(&id);
        return Err(StatusCode::BAD_REQUEST.into_response());
    }
    let registration = Registration {
        shared,
        sessions: state.sio_sessions.clone(),
        id: id.clone(),
        _permit: permit,
    };
    let wire = wire::SioWire::new(
        registration,
        settings.events,
        settings.max_http_buffer_size,
        settings.recovery.then(|| state.node.clone()),
        ws,
    );
    tracing::debug!("socket.io session opened");
    state.tasks.spawn(driver::drive(wire, session, outbox));
    Ok((open_packet, id))
}

/// A new Engine.IO session id: 128 bits from the operating system's CSPRNG (whoever knows it
/// can read and write as the session), as 32 hex digits.
pub(crate) fn session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET` with a sid: waits for the session's next packets.
async fn poll(shared: Arc<Shared>) -> Response {
    let (tx, rx) = oneshot::channel();
    {
        let mut state = shared.state.lock();
        if state.closed {
            return unknown_sid();
        }
        if state.upgraded.is_some() || state.on_websocket {
            return engine_error(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        if state.probed {
            return ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], "6").into_response();
        }
        if state.poll.as_ref().is_some_and(|p| !p.is_closed()) {
            // Two polls at once: the reference server closes the session ("overlap from
            // client") and answers the second with 400.
            drop(state);
            shared.refuse(Disconnect::new(
                kilat_protocol::DisconnectCode::BAD_REQUEST,
                "overlap from client",
            ));
            return StatusCode::BAD_REQUEST.into_response();
        }
        state.poll = Some(tx);
    }
    shared.changed.notify_one();
    let payload = rx.await.unwrap_or(Bytes::from_static(b"1"));
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        payload,
    )
        .into_response()
}

/// `POST` with a sid: packets from the client.
async fn post(state: &AppState, shared: Arc<Shared>, body: Body) -> Response {
    if shared.state.lock().on_websocket {
        return engine_error(StatusCode::BAD_REQUEST, 3, "Bad request");
    }
    let limit = state.sio.max_http_buffer_size;
    let body = match crate::body::read(body, limit, state.body_timeout).await {
        Ok(body) => body,
        Err(refused) => {
            if refused.status == StatusCode::PAYLOAD_TOO_LARGE {
                // The reference server answers 413 and ends the session.
                shared.refuse(Disconnect::new(
                    kilat_protocol::DisconnectCode::BAD_REQUEST,
                    "payload too large",
                ));
            }
            return (refused.status, format!("{}\n", refused.reason)).into_response();
        }
    };
    posted(&shared, &body)
}

/// Packets posted for a session (here or on another node, `cluster`): queued for its task, or
/// the session refused on a malformed payload; the answer to the `POST`.
fn posted(shared: &Shared, body: &[u8]) -> Response {
    let refusal = match std::str::from_utf8(body) {
        Err(_) => Some("payload is not UTF-8"),
        Ok(text) => match packet::decode_payload(text) {
            Err(malformed) => Some(malformed.0),
            Ok(packets) => {
                let mut guard = shared.state.lock();
                if guard.closed {
                    return unknown_sid();
                }
                if guard.inbound.len() + packets.len() > INBOUND_MAX {
                    Some("too many packets waiting")
                } else {
                    // Kept as text: the task decodes again, without lifetimes across the queue.
                    guard
                        .inbound
                        .extend(text.split('\u{1e}').map(str::to_owned));
                    None
                }
            }
        },
    };
    match refusal {
        // The reference server answers "ok" and closes the session on a parse error.
        Some(reason) => shared.refuse(Disconnect::new(
            kilat_protocol::DisconnectCode::BAD_REQUEST,
            reason,
        )),
        None => shared.changed.notify_one(),
    }
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

/// `GET ...&transport=websocket`: a WebSocket session, or the upgrade of a polling one.
async fn websocket(state: &AppState, request: Request, sid: Option<String>) -> Response {
    let (mut parts, _body) = request.into_parts();
    if state.draining.load(Ordering::SeqCst) {
        return admission::refusal_response(admission::DRAINING);
    }
    let upgrading = match &sid {
        Some(sid) => {
            let shared = state.sio_sessions.inner.lock().get(sid).cloned();
            let Some(shared) = shared else {
                return unknown_sid();
            };
            let mut guard = shared.state.lock();
            if guard.probing || guard.closed || guard.on_websocket {
                return engine_error(StatusCode::BAD_REQUEST, 3, "Bad request");
            }
            guard.probing = true;
            drop(guard);
            Some(shared)
        }
        None => None,
    };
    let mut config = (*state.ws).clone();
    config.max_message_size = state.sio.max_http_buffer_size;
    let handshake = match ws::negotiate(&parts, &config) {
        Ok(handshake) => handshake,
        Err(refused) => {
            if let Some(shared) = &upgrading {
                shared.state.lock().probing = false;
            }
            return engine_error(StatusCode::BAD_REQUEST, 3, &refused.to_string());
        }
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return engine_error(StatusCode::BAD_REQUEST, 3, "Bad request");
    };
    let response = handshake.response::<Body>();
    let state = state.clone();
    let peer = crate::transport::peer::peer_of(&parts.extensions);
    let headers = parts.headers;
    state.tasks.clone().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "socket.io websocket upgrade did not complete");
                return;
            }
        };
        let conn = WsConnection::new(TokioIo::new(upgraded), &handshake, &config);
        match upgrading {
            None => {
                let _ = open(&state, &headers, peer, Some(conn)).await;
            }
            Some(shared) => probe(shared, conn).await,
        }
    });
    response
}

/// The upgrade of a polling session: `2probe` answered with `3probe`, the open poll ended with
/// a noop so the client pauses polling, then `5` hands the WebSocket to the session's task.
async fn probe(shared: Arc<Shared>, mut conn: WsConnection<WsIo>) {
    let result = tokio::time::timeout(PROBE_TIMEOUT, async {
        loop {
            match conn.read_message().await {
                Ok(Message::Text(text)) if &text[..] == b"2probe" => {
                    conn.send_text(b"3probe").await.map_err(|_| ())?;
                    let poll = {
                        let mut state = shared.state.lock();
                        state.probed = true;
                        state.poll.take()
                    };
                    if let Some(poll) = poll {
                        let _ = poll.send(Bytes::from_static(b"6"));
                    }
                }
                Ok(Message::Text(text)) if &text[..] == b"5" => return Ok(()),
                _ => return Err(()),
            }
        }
    })
    .await;
    let mut conn = {
        let mut state = shared.state.lock();
        state.probing = false;
        state.probed = false;
        match result {
            Ok(Ok(())) if !state.closed => {
                state.upgraded = Some(conn);
                state.on_websocket = true;
                None
            }
            _ => Some(conn),
        }
    };
    match conn.as_mut() {
        None => shared.changed.notify_one(),
        Some(conn) => {
            tracing::debug!("socket.io upgrade probe failed; staying on polling");
            let _ = conn.close(ws::CLOSE_NORMAL, "").await;
        }
    }
}

/// Decoders reached from the network, for the fuzz target.
pub(crate) fn fuzz_packets(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(packets) = packet::decode_payload(text) {
            for packet in packets {
                if let packet::EnginePacket::Message(message) = packet {
                    let _ = packet::decode_socket(message);
                }
            }
        }
        if let Ok(packet) = packet::decode_socket(text)
            && let Some(args) = packet.data
        {
            let _ = packet::check_placeholders(args.get(), packet.attachments.max(1));
        }
        // A server API `send` as the wire translates it (`ack.rs`), and one from another node's
        // inbox (`crate::send`).
        let acks = ack::Acks::default();
        let namespaces = ["/".to_owned(), "/chat".to_owned()];
        let _ = ack::message_packets(bytes, &namespaces, Some("c"), &acks);
        let _ = serde_json::from_slice::<crate::send::Message>(bytes);
        let _ = wire::shared_packets(bytes, false);
        let _ = wire::shared_packets_with(bytes, true, true);
        if let Ok(data) = serde_json::from_str::<Box<serde_json::value::RawValue>>(text) {
            let _ = wire::binary_ack("/", 1, &data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle Socket.IO client is one task holding this future (the shared driver over the
    /// Socket.IO wire, on polling): its size is memory per connection, guarded like the
    /// WebSocket and SSE ones.
    #[tokio::test]
    async fn idle_socketio_session_state_stays_small() {
        let node = kilat_core::Node::new(kilat_core::NodeConfig::dev());
        let outbox = kilat_core::Outbox::new(1 << 20);
        let transport = TransportInfo {
            name: "socketio",
            emulated: true,
        };
        let session = kilat_core::Session::new(&node, transport, outbox.clone());
        let registration = Registration {
            shared: Arc::default(),
            sessions: SioSessions::default(),
            id: String::new(),
            _permit: admission::ConnectionSlot::from_permit(
                Arc::new(tokio::sync::Semaphore::new(1))
                    .try_acquire_owned()
                    .expect("permit"),
            ),
        };
        let wire = wire::SioWire::new(registration, EventMode::Publish, 1_000_000, None, None);
        let task = driver::drive(wire, session, outbox);
        let size = std::mem::size_of_val(&task);
        println!("idle socket.io connection task: {size} bytes");
        assert!(
            size <= 1024,
            "the socket.io session task grew to {size} bytes"
        );
    }
}
