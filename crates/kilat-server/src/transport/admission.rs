//! The admission step every transport takes before a connection starts, in one place: the
//! server is not draining (503), the browser origin is allowed (403), a connection slot is free
//! under `max_connections` (503), and the handshake headers the backend hooks forward are
//! picked. Then [`Admission::open`] creates the connection's [`Outbox`] and hub [`Session`].

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
    /// The allowlisted handshake headers, kept for the backend hooks.
    headers: RequestHeaders,
}

/// Lets a connection in, or says why not. `headers` are the handshake request's.
///
/// # Errors
/// 503 while draining or at the connection limit, 403 for a refused browser origin.
pub(crate) fn admit(state: &AppState, headers: &HeaderMap) -> Result<Admission, Refusal> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(DRAINING);
    }
    if !state.origins.allows(headers) {
        tracing::info!(origin = ?headers.get(http::header::ORIGIN), "connection from a refused origin");
        return Err((StatusCode::FORBIDDEN, "origin not allowed"));
    }
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
    Ok(Admission {
        permit,
        headers: crate::proxy::pick_headers(&state.node, headers),
    })
}

/// The HTTP answer to a refused connection: its status and reason, with `Retry-After: 1` on a
/// 503 (draining, full), which a load balancer retries on another node (haproxy `retry-on 503`).
pub(crate) fn refusal_response((status, reason): Refusal) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, format!("{reason}\n")).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

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
    ) -> (Session, Outbox, OwnedSemaphorePermit) {
        let outbox = Outbox::new(node.config().client_queue_max_bytes);
        let mut session = Session::new(node, transport, outbox.clone());
        session.set_request_headers(self.headers);
        (session, outbox, self.permit)
    }
}
