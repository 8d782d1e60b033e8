//! The emulated transports for networks where WebSocket fails (docs/protocol.md sections 1 and 11):
//! Server-Sent Events (`GET /connection/sse`), HTTP streaming (`POST /connection/stream`), and
//! the `POST /connection/emulation` endpoint that carries their client-to-server commands.
//!
//! Both streams run the same [`driver`] loop as WebSocket; only the [`Wire`] differs: frames go
//! out as SSE events or NDJSON lines through a small bounded channel into the response body, and
//! commands come in from emulation POSTs through a per-session queue found in [`Sessions`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::IoSlice;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kilat_core::{Outbox, Session, TransportInfo};
use kilat_protocol::{Disconnect, Encoding, SharedFrame};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use kilat_transport::text::{SLOT_NDJSON, SLOT_SSE, ndjson_line, sse_event};

use crate::AppState;
use crate::transport::admission::{Admission, Refusal, admit};
use crate::transport::driver::{self, Inbound, Wire};
use crate::transport::front::{MAX_BODY, StreamKind};

/// Response chunks buffered between a connection task and hyper; a client that reads slower
/// than this backs up into its outbox, which disconnects it with 3001 when full.
const BODY_CHUNKS: usize = 16;
/// Commands waiting for a session task; a client posting faster gets HTTP 429.
const COMMAND_QUEUE: usize = 64;

/// Emulated sessions of this node by their secret session key (never by client id, which other
/// users see), so emulation POSTs find their connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashMap<String, Arc<Commands>>>>,
}

impl Sessions {
    fn insert(&self, id: String, commands: Arc<Commands>) {
        self.inner.lock().insert(id, commands);
    }

    fn remove(&self, id: &str) {
        self.inner.lock().remove(id);
    }

    fn get(&self, id: &str) -> Option<Arc<Commands>> {
        self.inner.lock().get(id).cloned()
    }
}

/// Commands posted for one emulated session, waiting for its connection task.
///
/// A locked queue rather than a tokio channel: a bounded channel allocates a 32-slot block up
/// front, about 1 KiB that every idle stream would carry; this allocates only while commands
/// wait.
#[derive(Debug, Default)]
struct Commands {
    state: Mutex<CommandState>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct CommandState {
    waiting: VecDeque<Bytes>,
    /// The connection task is gone: nothing will read what is pushed.
    closed: bool,
}

/// Why a command was not queued.
enum Unqueued {
    Full,
    Closed,
}

impl Commands {
    fn push(&self, command: Bytes) -> Result<(), Unqueued> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Unqueued::Closed);
        }
        if state.waiting.len() >= COMMAND_QUEUE {
            return Err(Unqueued::Full);
        }
        state.waiting.push_back(command);
        drop(state);
        self.arrived.notify_one();
        Ok(())
    }

    /// The next command. Cancel safe: a command leaves the queue only when returned.
    async fn next(&self) -> Bytes {
        loop {
            // Registered before looking, so a push in between is not missed.
            let arrived = self.arrived.notified();
            if let Some(command) = self.state.lock().waiting.pop_front() {
                return command;
            }
            arrived.await;
        }
    }
}

/// Which emulated stream format a connection uses.
#[derive(Debug, Clone, Copy)]
enum Format {
    Sse,
    Ndjson,
    /// HTTP streaming in the binary encoding (`?encoding=msgpack`): MessagePack values one
    /// after another, no separator (each value is self-delimiting).
    Msgpack,
}

impl Format {
    fn transport(self) -> TransportInfo {
        TransportInfo {
            name: match self {
                Format::Sse => "sse",
                Format::Ndjson | Format::Msgpack => "http_stream",
            },
            emulated: true,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
            Format::Msgpack => MSGPACK_CONTENT_TYPE,
        }
    }

    /// The frame's bytes in this format, computed once per frame for all receivers.
    fn encode(self, frame: &SharedFrame) -> Bytes {
        match self {
            Format::Sse => frame.encoded(SLOT_SSE, sse_event),
            Format::Ndjson => frame.encoded(SLOT_NDJSON, ndjson_line),
            Format::Msgpack => kilat_transport::binary::msgpack(frame),
        }
    }
}

/// Content type of an HTTP stream in the binary encoding.
const MSGPACK_CONTENT_TYPE: &str = "application/vnd.kilat.msgpack";

/// The `encoding` query parameter of an emulated transport (docs/protocol.md section 2.1):
/// absent or `json` for JSON, `msgpack` for MessagePack; anything else is refused.
fn query_encoding(uri: &Uri) -> Result<Encoding, Refusal> {
    let Some(query) = uri.query() else {
        return Ok(Encoding::Json);
    };
    let mut found = Encoding::Json;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("encoding=") {
            found = Encoding::from_name(value).ok_or((
                StatusCode::BAD_REQUEST,
                "unknown `encoding`: kilat speaks `json` (the default) and `msgpack`",
            ))?;
        }
    }
    Ok(found)
}

/// A MessagePack request body (connect command or emulation POST) as the JSON the rest of the
/// path reads; malformed input is a 400 that touches nobody else.
fn body_from_msgpack(body: &[u8]) -> Result<Bytes, Refusal> {
    kilat_protocol::msgpack::msgpack_to_json(body, body.len() * 8 + 1024)
        .map(Bytes::from)
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "malformed MessagePack body (`encoding=msgpack`)",
            )
        })
}

/// The stream format and the connect command (as JSON) of `POST /connection/stream`.
fn stream_format(uri: &Uri, body: Bytes) -> Result<(Format, Bytes), Refusal> {
    match query_encoding(uri)? {
        Encoding::Json => Ok((Format::Ndjson, body)),
        Encoding::Msgpack => Ok((Format::Msgpack, body_from_msgpack(&body)?)),
    }
}

/// Query of `GET /connection/sse`.
#[derive(Debug, Deserialize)]
struct SseQuery {
    /// The connect command frame, URL-encoded JSON.
    connect: Option<String>,
}

/// Why a stream was not opened: the HTTP status and a reason for the response body.
/// `GET /connection/sse?connect=...` when hyper serves it: over HTTP/2, or as a later request
/// of a kept-alive HTTP/1 connection. The first request of an HTTP/1 connection is served on
/// the socket directly by [`serve_stream`].
pub(crate) async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    extensions: http::Extensions,
) -> Response {
    let peer = crate::transport::peer::peer_of(&extensions);
    let opened = match admit(&state, &headers, peer).and_then(|a| Ok((a, sse_connect(&uri)?))) {
        Ok((admission, connect)) => open(&state, admission, connect, Format::Sse).await,
        Err(refusal) => Err(refusal),
    };
    match opened {
        Ok(opened) => respond_with_body(&state, opened, Format::Sse),
        Err((status, reason)) => refuse(status, reason),
    }
}

/// Serves a streaming request read by [`crate::transport::front`] (SSE or HTTP streaming) on its socket:
/// the stream's bytes go straight to `io`, without hyper's per-connection buffers. Refusals are
/// answered with a plain HTTP response and the connection is closed.
pub(crate) async fn serve_stream<IO>(
    state: &AppState,
    request: Box<crate::transport::front::StreamRequest>,
    mut io: IO,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let crate::transport::front::StreamRequest {
        kind,
        uri,
        headers,
        body,
        peer,
    } = *request;
    let peer = peer.map(|p| p.ip());
    let (format, checked) = match kind {
        StreamKind::EventStream => (
            Format::Sse,
            admit(state, &headers, peer).and_then(|a| Ok((a, sse_connect(&uri)?))),
        ),
        StreamKind::Ndjson => match stream_format(&uri, body) {
            Ok((format, connect)) => (format, admit(state, &headers, peer).map(|a| (a, connect))),
            Err(refusal) => (Format::Ndjson, Err(refusal)),
        },
    };
    let opened = match checked {
        Ok((admission, connect)) => open(state, admission, connect, format).await,
        Err(refusal) => Err(refusal),
    };
    // CORS for an allowed cross-origin page, the same headers hyper's path gets (`cors.rs`).
    let cors = crate::cors::head_lines(&state.origins, &headers);
    drop((headers, uri));
    match opened {
        Ok(opened) => {
            let out = SocketOut {
                io,
                head: format.socket_head(cors),
                head_sent: false,
            };
            spawn_stream(state, opened, format, out);
        }
        Err((status, reason)) => {
            let body = format!("{reason}\n");
            // A 503 (draining, full) tells a load balancer to try another node; a 429 (a limit
            // per address) tells the client when to come back.
            let retry = if status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS
            {
                "retry-after: 1\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\n{retry}connection: close\r\n\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                body.len()
            );
            let _ = tokio::time::timeout(driver::WRITE_TIMEOUT, async {
                io.write_all(head.as_bytes()).await?;
                io.write_all(body.as_bytes()).await?;
                io.shutdown().await
            })
            .await;
        }
    }
}

/// The connect command of an SSE request, however it arrived (after its admission).
fn sse_connect(uri: &Uri) -> Result<Bytes, Refusal> {
    if query_encoding(uri)? != Encoding::Json {
        return Err((
            StatusCode::BAD_REQUEST,
            "SSE carries text only: use `POST /connection/stream?encoding=msgpack` or the \
             kilat.msgpack WebSocket subprotocol for the binary encoding",
        ));
    }
    let query = Query::<SseQuery>::try_from_uri(uri).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "malformed query: expected `connect` (the connect command as URL-encoded JSON)",
        )
    })?;
    let Some(connect) = query.0.connect else {
        return Err((
            StatusCode::BAD_REQUEST,
            "missing `connect` query parameter (the connect command as URL-encoded JSON)",
        ));
    };
    if connect.len() > MAX_BODY {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "connect command too large"));
    }
    Ok(Bytes::from(connect))
}

/// `POST /connection/stream` with the connect command as the body.
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    extensions: http::Extensions,
    body: Body,
) -> Response {
    let body = match crate::body::read(body, MAX_BODY, state.body_timeout).await {
        Ok(body) => body,
        Err(refused) if refused.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(refused.status, "connect command too large");
        }
        Err(refused) => return refuse(refused.status, refused.reason),
    };
    let (format, body) = match stream_format(&uri, body) {
        Ok(checked) => checked,
        Err((status, reason)) => return refuse(status, reason),
    };
    let opened = match admit(
        &state,
        &headers,
        crate::transport::peer::peer_of(&extensions),
    ) {
        Ok(admission) => open(&state, admission, body, format).await,
        Err(refusal) => Err(refusal),
    };
    match opened {
        Ok(opened) => respond_with_body(&state, opened, format),
        Err((status, reason)) => refuse(status, reason),
    }
}

/// Body of `POST /connection/emulation`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmulationRequest {
    /// The session key from the stream's connect result (a secret; not the client id).
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
    uri: Uri,
    body: Body,
) -> Response {
    if !state.origins.allows(&headers) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let bytes = match crate::body::read(body, MAX_BODY, state.body_timeout).await {
        Ok(bytes) => bytes,
        Err(refused) if refused.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(refused.status, "emulation body too large");
        }
        Err(refused) => return refuse(refused.status, refused.reason),
    };
    // In the binary encoding the whole body is MessagePack; its JSON form is read below, so a
    // command forwarded to another node travels as JSON whatever the client spoke.
    let bytes = match query_encoding(&uri) {
        Ok(Encoding::Json) => bytes,
        Ok(Encoding::Msgpack) => match body_from_msgpack(&bytes) {
            Ok(json) => json,
            Err((status, reason)) => return refuse(status, reason),
        },
        Err((status, reason)) => return refuse(status, reason),
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
    match commands.push(command) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(Unqueued::Full) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many commands in flight for this session",
        ),
        Err(Unqueued::Closed) => refuse(StatusCode::NOT_FOUND, "unknown or closed session"),
    }
}

/// A command for a session on another node, sent to that node's inbox through the engine.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Forwarded {
    session: String,
    command: String,
}

/// Forwards a POST that reached the wrong node (docs/protocol.md section 11). The owning node
/// delivers it to its session; 404 when no node with that id is listening any more.
async fn forward(state: &AppState, node: &str, session: &str, command: Bytes) -> Response {
    if !state.cluster.shared {
        return refuse(StatusCode::NOT_FOUND, "session belongs to another node");
    }
    let message = Forwarded {
        session: session.to_owned(),
        command: String::from_utf8_lossy(&command).into_owned(),
    };
    let Ok(payload) = serde_json::to_vec(&message) else {
        return refuse(StatusCode::BAD_REQUEST, "command cannot be forwarded");
    };
    match state.cluster.inbox.send(node, &payload).await {
        Ok(0) => refuse(StatusCode::NOT_FOUND, "the session's node is gone"),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "forwarding an emulation command failed");
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

/// An emulated connection whose connect command has run, not yet joined to its output.
struct Opened {
    session: Session,
    outbox: Outbox,
    /// The connect command's outcome; its reply (or error) is already in the outbox.
    connected: Result<(), Disconnect>,
    session_id: Option<String>,
    permit: crate::transport::admission::ConnectionSlot,
    commands: Arc<Commands>,
}

/// Starts an admitted emulated connection: runs `connect`. It runs before
/// the response starts, so its result (or refusal) is the first thing on the stream and the
/// session id is known before any POST can arrive.
async fn open(
    state: &AppState,
    admission: Admission,
    connect: Bytes,
    format: Format,
) -> Result<Opened, Refusal> {
    let (mut session, outbox, permit) = admission.open(&state.node, format.transport());
    let key = session_key();
    session.set_emulation_key(key.as_str());
    let connected = Box::pin(session.handle_message(&connect)).await;
    let session_id = session.client().is_some().then_some(key);
    Ok(Opened {
        session,
        outbox,
        connected,
        session_id,
        permit,
        commands: Arc::default(),
    })
}

/// A new emulated session key: 128 bits from the operating system's CSPRNG, as 32 hex digits.
/// Whoever knows it can act as the stream's user, so it must be unguessable and is shown to
/// nobody but the stream's own client.
fn session_key() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness no key could be trusted; the OS source does not fail on the
    // platforms kilat runs on.
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The streaming response hyper sends for `opened`.
fn respond_with_body(state: &AppState, opened: Opened, format: Format) -> Response {
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_CHUNKS);
    spawn_stream(state, opened, format, BodyOut(body_tx));
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

/// Streams the session of `opened` to `out` in a task of its own.
///
/// The task is the shared driver's future alone: what must happen when the stream ends
/// (leaving [`Sessions`], freeing the connection slot) is the wire's [`Registration`], dropped
/// with the wire. A wrapping `async` block would keep a second copy of everything it hands on
/// (rust-lang/rust#62958), in every idle stream's memory.
fn spawn_stream<O>(state: &AppState, opened: Opened, format: Format, out: O)
where
    O: StreamOut + Send + 'static,
{
    let Opened {
        session,
        outbox,
        connected,
        session_id,
        permit,
        commands,
    } = opened;
    let id = session_id.filter(|_| connected.is_ok());
    if let Some(id) = &id {
        state.sessions.insert(id.clone(), commands.clone());
    }
    let mut wire = StreamWire {
        format,
        out,
        registration: Registration {
            commands,
            sessions: state.sessions.clone(),
            id,
            _permit: permit,
        },
    };
    match connected {
        Ok(()) => {
            state.tasks.spawn(driver::drive(wire, session, outbox));
        }
        Err(disconnect) => {
            state.tasks.spawn(async move {
                // Whatever the session queued (an error reply) goes out before the disconnect.
                let mut batch = Vec::new();
                outbox.drain(&mut batch, usize::MAX);
                let _ = wire.send(&batch).await;
                wire.close(&disconnect).await;
                session.close().await;
            });
        }
    }
}

/// A stream's entry in [`Sessions`] and its connection slot, given up when the connection ends:
/// the command queue is closed (later POSTs get 404) and the entry removed.
struct Registration {
    commands: Arc<Commands>,
    sessions: Sessions,
    /// The session key under which `commands` is in `sessions` (none when connect failed).
    id: Option<String>,
    _permit: crate::transport::admission::ConnectionSlot,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.commands.state.lock();
        state.closed = true;
        state.waiting = VecDeque::new();
        drop(state);
        if let Some(id) = &self.id {
            self.sessions.remove(id);
        }
    }
}

/// Where an emulated stream's bytes go: hyper's response body, or the socket itself.
///
/// The futures are declared `Send` so a generic stream task can be spawned.
trait StreamOut: Send {
    /// Writes `chunks` in order.
    fn write(&mut self, chunks: Vec<Bytes>) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Resolves when the client has gone. Cancel safe.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;

    /// Ends the response.
    fn end(&mut self) -> impl Future<Output = ()> + Send;
}

/// The chunks of a streaming response body that hyper sends.
struct BodyOut(mpsc::Sender<Result<Bytes, Infallible>>);

impl StreamOut for BodyOut {
    async fn write(&mut self, chunks: Vec<Bytes>) -> std::io::Result<()> {
        for chunk in chunks {
            self.0
                .send(Ok(chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }

    async fn gone(&mut self) {
        // hyper drops the body when the client closes the response.
        self.0.closed().await;
    }

    async fn end(&mut self) {
        // Dropping the sender ends the body; nothing to do before that.
    }
}

/// The response head of a stream served on the socket, after its `content-type`. Without a
/// length or chunking the body ends when the connection closes (RFC 9112 section 6.3), which is
/// how a stream ends anyway, and every write is the frames alone.
macro_rules! socket_head {
    ($content_type:literal) => {
        concat!(
            "HTTP/1.1 200 OK\r\ncontent-type: ",
            $content_type,
            "\r\ncache-control: no-cache, no-store\r\nx-accel-buffering: no\r\n\
             connection: close\r\n\r\n"
        )
        .as_bytes()
    };
}

impl Format {
    /// The response head of this stream when it is served on the socket, with `extra` header
    /// lines (CORS; CRLF-terminated) before its end. Borrowed when there are none.
    fn socket_head(self, extra: Vec<u8>) -> Cow<'static, [u8]> {
        let fixed = match self {
            Format::Sse => socket_head!("text/event-stream"),
            Format::Ndjson => socket_head!("application/x-ndjson"),
            Format::Msgpack => socket_head!("application/vnd.kilat.msgpack"),
        };
        if extra.is_empty() {
            return Cow::Borrowed(fixed);
        }
        let mut head = fixed[..fixed.len() - 2].to_vec();
        head.extend_from_slice(&extra);
        head.extend_from_slice(b"\r\n");
        Cow::Owned(head)
    }
}

/// A streaming response written to the socket by the connection task.
struct SocketOut<IO> {
    io: IO,
    /// The response head (see [`Format::socket_head`]).
    head: Cow<'static, [u8]>,
    /// The response head goes out with the first events (the connect reply), in one write.
    head_sent: bool,
}

impl<IO> StreamOut for SocketOut<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn write(&mut self, chunks: Vec<Bytes>) -> std::io::Result<()> {
        let mut slices = Vec::with_capacity(chunks.len() + 1);
        if !self.head_sent {
            slices.push(IoSlice::new(&self.head));
        }
        slices.extend(chunks.iter().map(|chunk| IoSlice::new(chunk)));
        let mut unwritten = &mut slices[..];
        while !unwritten.is_empty() {
            match self.io.write_vectored(unwritten).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => IoSlice::advance_slices(&mut unwritten, n),
            }
        }
        self.head_sent = true;
        self.io.flush().await
    }

    async fn gone(&mut self) {
        // The client sends nothing on this socket (commands come as POSTs); bytes it does send
        // are read and dropped, and a read error means it is gone. The end of its stream is
        // not: a client may half-close its side after the request and still read the events
        // (issue 20). A client that closed completely is found by the next write (a ping at the
        // latest), which fails.
        // Small: it is part of every idle stream's task while the read waits.
        let mut scratch = [0u8; 16];
        loop {
            match self.io.read(&mut scratch).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        std::future::pending::<()>().await;
    }

    async fn end(&mut self) {
        if !self.head_sent {
            let _ = self.write(Vec::new()).await;
        }
        let _ = self.io.shutdown().await;
    }
}

/// An emulated connection's side of the shared driver.
struct StreamWire<O> {
    format: Format,
    /// Where the stream's bytes go.
    out: O,
    /// Where commands posted to `/connection/emulation` for this session arrive.
    registration: Registration,
}

impl<O: StreamOut> Wire for StreamWire<O> {
    async fn recv(&mut self) -> Inbound {
        tokio::select! {
            command = self.registration.commands.next() => Inbound::Message(command),
            () = self.out.gone() => Inbound::Gone,
        }
    }

    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()> {
        let chunks = frames.iter().map(|frame| self.format.encode(frame));
        self.out.write(chunks.collect()).await
    }

    async fn close(&mut self, disconnect: &Disconnect) {
        let frame = SharedFrame::new(kilat_protocol::push::encode_disconnect(disconnect));
        let _ = self.out.write(vec![self.format.encode(&frame)]).await;
        self.out.end().await;
    }
}

/// A response body stream over a channel receiver.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    // A 503 (draining, full, Redis away) tells a load balancer to try another node; a 429 (a
    // limit per address) tells the client when to come back.
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_queue_in_order_up_to_the_bound_and_refuse_once_closed() {
        let commands = Arc::new(Commands::default());
        let rx = Registration {
            commands: commands.clone(),
            sessions: Sessions::default(),
            id: None,
            _permit: crate::transport::admission::ConnectionSlot::from_permit(
                Arc::new(tokio::sync::Semaphore::new(1))
                    .try_acquire_owned()
                    .expect("permit"),
            ),
        };
        for i in 0..COMMAND_QUEUE {
            assert!(commands.push(Bytes::from(i.to_string())).is_ok());
        }
        assert!(matches!(
            commands.push(Bytes::from_static(b"over")),
            Err(Unqueued::Full)
        ));
        assert_eq!(rx.commands.next().await, "0");
        assert_eq!(rx.commands.next().await, "1");
        assert!(commands.push(Bytes::from_static(b"room again")).is_ok());
        drop(rx);
        assert!(matches!(
            commands.push(Bytes::from_static(b"late")),
            Err(Unqueued::Closed)
        ));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_command_pushed_later() {
        let commands = Arc::new(Commands::default());
        let reader = tokio::spawn({
            let commands = commands.clone();
            async move { commands.next().await }
        });
        // Let the reader reach its wait first, so the push has to wake it.
        tokio::task::yield_now().await;
        assert!(commands.push(Bytes::from_static(b"{}")).is_ok());
        assert_eq!(reader.await.expect("reader"), "{}");
    }

    /// Every idle SSE client is one task holding this future (the shared driver over a socket
    /// wire): its size is memory per connection, guarded here like the WebSocket one in
    /// `driver.rs` and measured by `kilat bench idle --transport sse`.
    #[tokio::test]
    async fn idle_event_stream_state_stays_small() {
        let node = kilat_core::Node::new(kilat_core::NodeConfig::dev());
        let outbox = Outbox::new(1 << 20);
        let session = Session::new(&node, Format::Sse.transport(), outbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let socket = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let wire = StreamWire {
            format: Format::Sse,
            out: SocketOut {
                io: socket,
                head: Format::Sse.socket_head(Vec::new()),
                head_sent: false,
            },
            registration: Registration {
                commands: Arc::default(),
                sessions: Sessions::default(),
                id: None,
                _permit: crate::transport::admission::ConnectionSlot::from_permit(
                    Arc::new(tokio::sync::Semaphore::new(1))
                        .try_acquire_owned()
                        .expect("permit"),
                ),
            },
        };
        let task = driver::drive(wire, session, outbox);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the event stream task grew to {size} bytes");
    }
}
