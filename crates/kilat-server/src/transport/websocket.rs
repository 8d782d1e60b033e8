//! `GET /connection/websocket`: the upgrade handler and the connection task that joins a
//! WebSocket to a hub [`Session`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use kilat_core::TransportInfo;
use kilat_protocol::{Disconnect, DisconnectCode, Encoding, SharedFrame};
use kilat_transport::ws::{self, Message, WsConnection};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::AppState;
use crate::transport::admission::{self, Admission};
use crate::transport::driver::{self, Inbound, Wire};
use crate::transport::front::Prefixed;

/// Admits the connection, validates the upgrade and hands the socket to a connection task.
pub(crate) async fn upgrade(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let peer = crate::transport::peer::peer_of(&parts.extensions);
    let admission = match admission::admit(&state, &parts.headers, peer) {
        Ok(admission) => admission,
        Err(refusal) => return admission::refusal_response(refusal),
    };
    let mut handshake = match ws::negotiate(&parts, &state.ws) {
        Ok(handshake) => handshake,
        Err(refused) => {
            tracing::debug!(reason = %refused, "websocket upgrade refused");
            return refused.into_response::<Body>();
        }
    };
    if let Err(response) = choose_encoding(&parts.headers, &mut handshake) {
        return response;
    }
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "connection cannot be upgraded (HTTP/1.1 required)\n",
        )
            .into_response();
    };
    let response = handshake.response::<Body>();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => spawn_connection(upgraded, &handshake, &state, admission),
            Err(error) => tracing::debug!(%error, "websocket upgrade did not complete"),
        }
    });
    response
}

/// Picks the protocol encoding from the client's `Sec-WebSocket-Protocol` offers: the first of
/// `kilat.json` and `kilat.msgpack` it names (docs/protocol.md section 2.1); JSON when it names
/// neither. An offer of another `kilat.*` subprotocol alone is refused with 400 and a readable
/// reason, so a client asking for an encoding this server does not speak learns why at once
/// instead of receiving frames it cannot read. Other subprotocols are ignored (RFC 6455 lets the
/// server pick none).
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
fn choose_encoding(
    headers: &axum::http::HeaderMap,
    handshake: &mut ws::Handshake,
) -> Result<(), Response> {
    let mut unknown = None;
    for offer in ws::offered_subprotocols(headers) {
        for encoding in [Encoding::Json, Encoding::Msgpack] {
            if offer == encoding.subprotocol() {
                handshake.set_subprotocol(encoding.subprotocol(), encoding);
                return Ok(());
            }
        }
        if offer.starts_with("kilat.") {
            unknown.get_or_insert_with(|| offer.to_owned());
        }
    }
    match unknown {
        None => Ok(()),
        Some(offer) => {
            tracing::debug!(%offer, "websocket upgrade refused: unknown encoding");
            Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown encoding subprotocol {offer:?}: kilat speaks {:?} (the default) and {:?}\n",
                    Encoding::Json.subprotocol(),
                    Encoding::Msgpack.subprotocol()
                ),
            )
                .into_response())
        }
    }
}

/// Starts the connection task of an upgraded socket. The connection runs in a task of its own:
/// the upgrade task's captures (the app state, the handshake) would otherwise stay in every
/// connection's memory.
///
/// The socket is taken back out of hyper's `Upgraded`, with the bytes hyper read past the
/// request head put in front: every read and write then skips hyper's boxed I/O and its replay
/// buffer, and the connection no longer holds their allocation.
fn spawn_connection(
    upgraded: Upgraded,
    handshake: &ws::Handshake,
    state: &AppState,
    admission: Admission,
) {
    with_socket(
        upgraded,
        Start {
            handshake,
            state,
            admission,
        },
    );
}

/// What to do with an upgraded connection's socket, whichever stream type it turns out to be
/// (see [`with_socket`]).
pub(crate) trait OnSocket {
    /// Takes the socket.
    fn run<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
}

/// Hands `upgraded`'s socket to `then`, taken back out of hyper's wrapper (with the bytes hyper
/// read past the request head put in front) when it is the listener's own TCP or TLS stream:
/// every read and write then skips hyper's boxed I/O and its replay buffer, and an idle
/// connection does not keep their allocation. Every WebSocket endpoint starts its connections
/// through this.
pub(crate) fn with_socket(upgraded: Upgraded, then: impl OnSocket) {
    let upgraded = match upgraded.downcast::<TokioIo<Prefixed<TcpStream>>>() {
        Ok(parts) => return then.run(parts.io.into_inner().then(parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<Prefixed<TlsStream<TcpStream>>>>() {
        Ok(parts) => then.run(parts.io.into_inner().then(parts.read_buf)),
        // Any other transport hyper served (none today): kept behind hyper's wrapper.
        Err(upgraded) => then.run(TokioIo::new(upgraded)),
    }
}

/// Spawns a `/connection/websocket` connection task over the socket.
struct Start<'a> {
    handshake: &'a ws::Handshake,
    state: &'a AppState,
    admission: Admission,
}

impl OnSocket for Start<'_> {
    fn run<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = WsConnection::new(io, self.handshake, &self.state.ws);
        self.state
            .tasks
            .spawn(serve_connection(conn, &self.state.node, self.admission));
    }
}

/// The future of one WebSocket connection, run until either side closes it. Holds `permit`
/// until the connection is gone.
fn serve_connection<IO>(
    conn: WsConnection<IO>,
    node: &kilat_core::Node,
    admission: Admission,
) -> impl Future<Output = ()> + use<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (session, outbox, permit) = admission.open(
        node,
        TransportInfo {
            name: "websocket",
            emulated: false,
        },
    );
    let wire = WsWire {
        conn,
        _permit: Some(permit),
    };
    driver::drive(wire, session, outbox)
}

/// A client's MessagePack message as the JSON frames the session reads. The JSON form may be
/// larger than the message (a one-byte `false` is five bytes of JSON): it is bounded at eight
/// times the message, which is itself bounded by `max_message_size`. A malformed message closes
/// the connection with 3500, like JSON that does not parse; nobody else is affected.
pub(crate) fn from_msgpack(packed: &[u8]) -> Inbound {
    match kilat_protocol::msgpack::msgpack_to_json(packed, packed.len() * 8 + 1024) {
        Ok(json) => Inbound::Message(json.into()),
        Err(error) => {
            tracing::debug!(%error, "malformed binary message");
            Inbound::Refused(Disconnect::new(
                DisconnectCode::BAD_REQUEST,
                error.to_string(),
            ))
        }
    }
}

/// The WebSocket side of a connection for the shared [`driver`].
pub(crate) struct WsWire<IO> {
    pub(crate) conn: WsConnection<IO>,
    /// The connection's slot under `max_connections`, released when the wire is dropped (at
    /// the end of the connection's teardown). `None` in tests.
    pub(crate) _permit: Option<admission::ConnectionSlot>,
}

impl<IO> Wire for WsWire<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn recv(&mut self) -> Inbound {
        let binary = self.conn.encoding() == Encoding::Msgpack;
        match self.conn.read_message().await {
            Ok(Message::Text(text)) if !binary => Inbound::Message(text),
            Ok(Message::Binary(packed)) if binary => from_msgpack(&packed),
            Ok(Message::Text(_)) => Inbound::Refused(Disconnect::new(
                DisconnectCode::BAD_REQUEST,
                "text messages are not part of the kilat.msgpack encoding: send MessagePack in binary messages",
            )),
            Ok(Message::Binary(_)) => Inbound::Refused(Disconnect::new(
                DisconnectCode::BAD_REQUEST,
                "binary messages need the kilat.msgpack subprotocol (docs/protocol.md section 2.1)",
            )),
            // The codec has already answered the peer's close or sent its own error close.
            Ok(Message::Close { .. }) | Err(_) => Inbound::Gone,
        }
    }

    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()> {
        self.conn.send_frames(frames).await
    }

    async fn close(&mut self, disconnect: &Disconnect) {
        // A close frame has no room for the reconnect spread hint: send it as a push first
        // (docs/protocol.md section 10, `delay_ms`).
        if disconnect.delay_ms.is_some() {
            let push = SharedFrame::new(kilat_protocol::push::encode_disconnect(disconnect));
            let _ = self.conn.send_frames(std::slice::from_ref(&push)).await;
        }
        let _ = self.conn.close(disconnect.code, &disconnect.reason).await;
    }
}
