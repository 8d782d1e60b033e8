//! The emulated transports for networks where WebSocket fails (PROTOCOL.md sections 1 and 6):
//! Server-Sent Events (`GET /connection/sse`), HTTP streaming (`POST /connection/stream`), and
//! the `POST /connection/emulation` endpoint that carries their client-to-server commands.
//!
//! Both streams run the same [`driver`] loop as WebSocket; only the [`Wire`] differs: frames go
//! out as SSE events or NDJSON lines through a small bounded channel into the response body, and
//! commands come in from emulation POSTs through a per-session channel found in [`Sessions`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kilat_core::{Outbox, Session, TransportInfo};
use kilat_protocol::{Disconnect, SharedFrame};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use kilat_transport::text::{SLOT_NDJSON, SLOT_SSE, ndjson_line, sse_event};

use crate::AppState;
use crate::driver::{self, Inbound, Wire};

/// Response chunks buffered between a connection task and hyper; a client that reads slower
/// than this backs up into its outbox, which disconnects it with 3001 when full.
const BODY_CHUNKS: usize = 16;
/// Commands waiting for a session task; a client posting faster gets HTTP 429.
const COMMAND_QUEUE: usize = 64;
/// Largest connect command or emulation POST body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// Emulated sessions of this node by session id, so emulation POSTs find their connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashMap<String, mpsc::Sender<Bytes>>>>,
}

impl Sessions {
    fn insert(&self, id: String, commands: mpsc::Sender<Bytes>) {
        self.inner.lock().insert(id, commands);
    }

    fn remove(&self, id: &str) {
        self.inner.lock().remove(id);
    }

    fn get(&self, id: &str) -> Option<mpsc::Sender<Bytes>> {
        self.inner.lock().get(id).cloned()
    }
}

/// Which emulated stream format a connection uses.
#[derive(Debug, Clone, Copy)]
enum Format {
    Sse,
    Ndjson,
}

impl Format {
    fn transport(self) -> TransportInfo {
        TransportInfo {
            name: match self {
                Format::Sse => "sse",
                Format::Ndjson => "http_stream",
            },
            emulated: true,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// The frame's bytes in this format, computed once per frame for all receivers.
    fn encode(self, frame: &SharedFrame) -> Bytes {
        match self {
            Format::Sse => frame.encoded(SLOT_SSE, sse_event),
            Format::Ndjson => frame.encoded(SLOT_NDJSON, ndjson_line),
        }
    }
}

/// Query of `GET /connection/sse`.
#[derive(Debug, Deserialize)]
pub(crate) struct SseQuery {
    /// The connect command frame, URL-encoded JSON.
    connect: Option<String>,
}

/// `GET /connection/sse?connect=...`
pub(crate) async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SseQuery>,
) -> Response {
    if !crate::origin::allowed(&headers, &state.allowed_origins) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let Some(connect) = query.connect else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing `connect` query parameter (the connect command as URL-encoded JSON)",
        );
    };
    if connect.len() > MAX_BODY {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "connect command too large");
    }
    let forwarded = crate::proxy::pick_headers(&state.node, &headers);
    open_stream(state, Bytes::from(connect), Format::Sse, forwarded).await
}

/// `POST /connection/stream` with the connect command as the body.
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::origin::allowed(&headers, &state.allowed_origins) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(connect) => {
            let forwarded = crate::proxy::pick_headers(&state.node, &headers);
            open_stream(state, connect, Format::Ndjson, forwarded).await
        }
        Err(_) => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "connect command too large or unreadable",
        ),
    }
}

/// Body of `POST /connection/emulation`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmulationRequest {
    /// The session id from the stream's connect result.
    session: String,
    /// The node id from the stream's connect result.
    node: String,
    /// One client command frame (or several, `\n`-separated, as a string).
    command: Box<serde_json::value::RawValue>,
}

/// `POST /connection/emulation`: hands a command to the session's connection task; the reply
/// comes back on the session's stream, so this answers 204 as soon as the command is queued.
pub(crate) async fn emulation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::origin::allowed(&headers, &state.allowed_origins) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "emulation body too large");
    };
    let request: EmulationRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("emulation body must be {{\"session\",\"node\",\"command\"}}: {error}"),
            );
        }
    };
    // A command may be sent as a JSON object or as a string holding one or more frames.
    let raw = request.command.get();
    let command = match serde_json::from_str::<String>(raw) {
        Ok(text) => Bytes::from(text),
        Err(_) => Bytes::copy_from_slice(raw.as_bytes()),
    };
    if request.node != state.node.id() {
        return forward(&state, &request.node, &request.session, command).await;
    }
    deliver(&state.sessions, &request.session, command)
}

/// Hands `command` to a session of this node; the answer for the emulation POST.
fn deliver(sessions: &Sessions, session: &str, command: Bytes) -> Response {
    let Some(commands) = sessions.get(session) else {
        return refuse(StatusCode::NOT_FOUND, "unknown or closed session");
    };
    match commands.try_send(command) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many commands in flight for this session",
        ),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            refuse(StatusCode::NOT_FOUND, "unknown or closed session")
        }
    }
}

/// A command for a session on another node, sent to that node's inbox through Redis.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Forwarded {
    session: String,
    command: String,
}

/// Forwards a POST that reached the wrong node (PROTOCOL.md section 6). The owning node
/// delivers it to its session; 404 when no node with that id is listening any more.
async fn forward(state: &AppState, node: &str, session: &str, command: Bytes) -> Response {
    let Some(engine) = &state.redis else {
        return refuse(StatusCode::NOT_FOUND, "session belongs to another node");
    };
    let message = Forwarded {
        session: session.to_owned(),
        command: String::from_utf8_lossy(&command).into_owned(),
    };
    let Ok(payload) = serde_json::to_vec(&message) else {
        return refuse(StatusCode::BAD_REQUEST, "command cannot be forwarded");
    };
    match engine.send_to_node(node, &payload).await {
        Ok(0) => refuse(StatusCode::NOT_FOUND, "the session's node is gone"),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            tracing::warn!(%error, "forwarding an emulation command failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot reach the session's node",
            )
        }
    }
}

/// Delivers commands that other nodes forwarded to this node's inbox, until the inbox ends.
pub(crate) async fn receive_forwarded(mut inbox: mpsc::Receiver<Vec<u8>>, sessions: Sessions) {
    while let Some(payload) = inbox.recv().await {
        match serde_json::from_slice::<Forwarded>(&payload) {
            Ok(message) => {
                // The POST was already answered on the other node; a session that closed
                // meanwhile simply misses the command, as it would have locally.
                let _ = deliver(&sessions, &message.session, Bytes::from(message.command));
            }
            Err(error) => tracing::warn!(%error, "malformed forwarded command"),
        }
    }
}

/// Starts an emulated connection: runs `connect`, then streams every frame of the session.
async fn open_stream(
    state: AppState,
    connect: Bytes,
    format: Format,
    forwarded: kilat_core::RequestHeaders,
) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached, try another node or later",
        );
    };
    let outbox = Outbox::new(state.node.config().client_queue_max_bytes);
    let mut session = Session::new(&state.node, format.transport(), outbox.clone());
    session.set_request_headers(forwarded);
    let (commands_tx, commands_rx) = mpsc::channel::<Bytes>(COMMAND_QUEUE);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_CHUNKS);
    // The connect command runs before the response starts, so its result (or refusal) is the
    // first thing on the stream and the session id is known before any POST can arrive.
    let connected = Box::pin(session.handle_message(&connect)).await;
    let session_id = session.client().map(|info| info.client.clone());
    let wire = StreamWire {
        format,
        commands: commands_rx,
        body: body_tx,
    };
    let tasks = state.tasks.clone();
    let sessions = state.sessions.clone();
    tasks.spawn(async move {
        run_stream(
            wire,
            session,
            outbox,
            connected,
            session_id,
            sessions,
            permit,
            commands_tx,
        )
        .await;
    });
    let body = Body::from_stream(tokio_stream_from(body_rx));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
async fn run_stream(
    mut wire: StreamWire,
    session: Session,
    outbox: Outbox,
    connected: Result<(), Disconnect>,
    session_id: Option<String>,
    sessions: Sessions,
    permit: OwnedSemaphorePermit,
    commands_tx: mpsc::Sender<Bytes>,
) {
    match connected {
        Ok(()) => {
            if let Some(id) = &session_id {
                sessions.insert(id.clone(), commands_tx);
            } else {
                drop(commands_tx);
            }
            driver::drive(wire, session, outbox).await;
        }
        Err(disconnect) => {
            drop(commands_tx);
            // Whatever the session queued (an error reply) goes out before the disconnect.
            let mut batch = Vec::new();
            outbox.drain(&mut batch, usize::MAX);
            let _ = wire.send(&batch).await;
            wire.close(&disconnect).await;
            session.close().await;
        }
    }
    if let Some(id) = session_id {
        sessions.remove(&id);
    }
    drop(permit);
}

/// An emulated connection's side of the shared driver.
struct StreamWire {
    format: Format,
    /// Commands posted to `/connection/emulation` for this session.
    commands: mpsc::Receiver<Bytes>,
    /// Chunks of the streaming response body.
    body: mpsc::Sender<Result<Bytes, Infallible>>,
}

impl Wire for StreamWire {
    async fn recv(&mut self) -> Inbound {
        tokio::select! {
            command = self.commands.recv() => match command {
                Some(text) => Inbound::Message(text),
                None => Inbound::Gone,
            },
            // The client closed the response (hyper dropped the body).
            () = self.body.closed() => Inbound::Gone,
        }
    }

    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()> {
        for frame in frames {
            self.body
                .send(Ok(self.format.encode(frame)))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }

    async fn close(&mut self, disconnect: &Disconnect) {
        let frame = SharedFrame::new(kilat_protocol::push::encode_disconnect(disconnect));
        let _ = self.body.send(Ok(self.format.encode(&frame))).await;
    }
}

/// A response body stream over a channel receiver.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, format!("{reason}\n")).into_response()
}
