//! The admission step every transport takes before a connection starts, in one place: the
//! server is not draining (503), the browser origin is allowed (403), the client's address is
//! under its connection and handshake limits (429, `peer.rs`), a connection slot is free under
//! `max_connections` (503), a handshake permit is free under `max_handshakes` (503,
//! `handshakes.rs`), and the handshake headers the backend hooks forward are picked. Then [`Admission::open`] creates the connection's [`Outbox`] and hub [`Session`].

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode};
use kilat_core::{Node, Outbox, RequestHeaders, Session, TransportInfo};
use tokio::sync::OwnedSemaphorePermit;

use crate::AppState;

/// Why a connection was refused: the HTTP status and a reason for the response body.
pub(crate) type Refusal = (StatusCode, &'static str);

/// A connection let in, not started yet.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The connection's slot under `max_connections`; the transport's wire holds it until the
    /// connection is gone.
    permit: OwnedSemaphorePermit,
    /// The connection counted against its client address (`server.max_connections_per_ip`).
    ip: Option<Box<super::peer::IpSlot>>,
    /// The allowlisted handshake headers, kept for the backend hooks.
    headers: RequestHeaders,
    /// One of the node's concurrent handshakes (`server.max_handshakes`; `None` unbounded),
    /// handed to the session, which drops it once `connect` is answered.
    handshake: Option<OwnedSemaphorePermit>,
}

/// What a connection holds for its life: its slot under `max_connections` and its count
/// against its address. Dropping it frees both. The address count is boxed: it is there only
/// with a limit per address configured, and every connection's task holds this (8 bytes
/// instead of 32 when there is none).
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _ip: Option<Box<super::peer::IpSlot>>,
}

impl ConnectionSlot {
    /// A slot of the global limit only (unit tests of the transports).
    #[cfg(test)]
    pub(crate) fn from_permit(permit: OwnedSemaphorePermit) -> Self {
        ConnectionSlot {
            _permit: permit,
            _ip: None,
        }
    }
}

/// Lets a connection in, or says why not. `headers` are the handshake request's; `peer` the
/// socket's peer address (`peer::peer_of` the request's extensions), `None` when unknown.
///
/// # Errors
/// 503 while draining, at the connection limit or at the handshake limit, 403 for a refused browser origin, 429 past
/// a per-address limit.
pub(crate) fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Admission, Refusal> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(DRAINING);
    }
    if !state.origins.allows(headers) {
        tracing::info!(origin = ?headers.get(http::header::ORIGIN), "connection from a refused origin");
        return Err((StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let ip = state.per_ip.admit(peer, headers)?.map(Box::new);
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!(
            limit = state.max_connections,
            "connection limit reached; refusing a connection"
        );
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached, try another node or later",
        ));
    };
    let Ok(handshake) = state.handshakes.try_start() else {
        return Err(HANDSHAKES_FULL);
    };
    Ok(Admission {
        permit,
        ip,
        headers: crate::proxy::pick_headers(&state.node, headers),
        handshake,
    })
}

/// The HTTP answer to a refused connection: its status and reason, with `Retry-After: 1` on a
/// 503 (draining, full), which a load balancer retries on another node (haproxy `retry-on 503`).
pub(crate) fn refusal_response((status, reason): Refusal) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, format!("{reason}\n")).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// The refusal of a connection while `server.max_handshakes` handshakes are in progress: the
/// client retries after `Retry-After`, here or on another node.
pub(crate) const HANDSHAKES_FULL: Refusal = (
    StatusCode::SERVICE_UNAVAILABLE,
    "too many connections starting at once, retry shortly",
);

/// The refusal of a connection while the node drains.
pub(crate) const DRAINING: Refusal = (
    StatusCode::SERVICE_UNAVAILABLE,
    "server is draining, try another node",
);

impl Admission {
    /// Starts the hub side of the connection: an outbox bounded by `client_queue_max_bytes`
    /// and a session on `transport` that knows the forwarded headers. Returns them with the
    /// connection slot, for the transport's wire to hold.
    pub(crate) fn open(
        self,
        node: &Node,
        transport: TransportInfo,
    ) -> (Session, Outbox, ConnectionSlot) {
        let outbox = Outbox::new(node.config().client_queue_max_bytes);
        let mut session = Session::new(node, transport, outbox.clone());
        session.set_request_headers(self.headers);
        if let Some(handshake) = self.handshake {
            session.hold_until_connected(handshake);
        }
        let slot = ConnectionSlot {
            _permit: self.permit,
            _ip: self.ip,
        };
        (session, outbox, slot)
    }
}
