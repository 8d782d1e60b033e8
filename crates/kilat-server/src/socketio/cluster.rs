//! Long polling without sticky sessions (docs/socketio.md): an Engine.IO session lives on the
//! node that opened it, and its id starts with that node's id. A polling `GET` or `POST` that
//! reaches another node is forwarded to the owner through the engine's node inboxes, the way
//! emulation POSTs are (`transport/emulation.rs`):
//!
//! - a `POST` body goes to the owner, which queues it as if it had been posted there; the
//!   forwarding node answers `ok` once the owner's inbox took it;
//! - a `GET` goes to the owner with a request id; the owner waits for the session's packets
//!   as for a local poll and sends the answer back to the forwarding node's inbox, which
//!   answers the HTTP request with it.
//!
//! A WebSocket (or an upgrade) cannot be forwarded: one that reaches another node gets
//! `Session ID unknown`, and an upgrading client stays on long polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Shared, poll, posted, unknown_sid};
use crate::AppState;

/// Hex digits of the owner node's id at the start of a session id (`kilat_core::new_epoch`).
const NODE_ID_LEN: usize = 16;

/// Polls forwarded from this node and waiting for the owner's answer, by request id.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<(u16, String)>>>,
}

/// A message between nodes about an Engine.IO session (beside emulation commands in the same
/// inboxes; the outer key tells them apart).
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// A `POST` body for a session of the receiving node.
    #[serde(rename = "sio_post")]
    Post { sid: String, body: String },
    /// A poll for a session of the receiving node; answered to node `reply_to` with `id`.
    #[serde(rename = "sio_poll")]
    Poll {
        sid: String,
        id: u64,
        reply_to: String,
    },
    /// The answer to a forwarded poll.
    #[serde(rename = "sio_poll_reply")]
    PollReply { id: u64, status: u16, body: String },
}

/// The node that owns session `sid`, when it is another node of a shared engine.
fn owner<'a>(state: &AppState, sid: &'a str) -> Option<&'a str> {
    let node = sid.get(..NODE_ID_LEN)?;
    (state.cluster.shared && node != state.node.id() && node.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(node)
}

/// A polling request for a session this node does not have: forwarded to its owner, or
/// `Session ID unknown`.
pub(crate) async fn forward(
    state: &AppState,
    sid: String,
    method: &Method,
    body: Body,
) -> Response {
    let Some(node) = owner(state, &sid) else {
        return unknown_sid();
    };
    let node = node.to_owned();
    match *method {
        Method::POST => {
            let limit = state.sio.max_http_buffer_size;
            let body = match crate::body::read(body, limit, state.body_timeout).await {
                Ok(body) => body,
                Err(refused) => {
                    if refused.status == StatusCode::PAYLOAD_TOO_LARGE {
                        // The session ends, as on the owner (an empty payload is malformed).
                        let end = Message::Post {
                            sid,
                            body: String::new(),
                        };
                        let _ = send(state, &node, &end).await;
                    }
                    return (refused.status, format!("{}\n", refused.reason)).into_response();
                }
            };
            // Not UTF-8: "ok", and the session ends on the owner (an empty payload is
            // malformed there).
            let body = String::from_utf8(body.to_vec()).unwrap_or_default();
            send(state, &node, &Message::Post { sid, body })
                .await
                .map(|()| ok())
                .unwrap_or_else(|response| response)
        }
        Method::GET => {
            let forwarded = &state.sio_sessions.forwarded;
            let id = forwarded.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            forwarded.waiting.lock().insert(id, tx);
            // Whatever happens to this request (answered, timed out, its client gone), the
            // entry goes.
            let _guard = Waiting { forwarded, id };
            let message = Message::Poll {
                sid,
                id,
                reply_to: state.node.id().to_owned(),
            };
            if let Err(response) = send(state, &node, &message).await {
                return response;
            }
            // The owner answers within a ping interval (it pings then), so this bound only
            // matters when the owner is gone.
            let wait = state.sio.ping_interval + state.sio.ping_timeout;
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok((status, body))) => (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
                    body,
                )
                    .into_response(),
                _ => unknown_sid(),
            }
        }
        _ => super::engine_error(StatusCode::BAD_REQUEST, 2, "Bad request"),
    }
}

/// Removes a forwarded poll's entry when its request ends.
struct Waiting<'a> {
    forwarded: &'a Forwarded,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.forwarded.waiting.lock().remove(&self.id);
    }
}

fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

/// Sends `message` to `node`'s inbox: `Session ID unknown` when no such node listens.
async fn send(state: &AppState, node: &str, message: &Message) -> Result<(), Response> {
    let Ok(payload) = serde_json::to_vec(message) else {
        return Err(unknown_sid());
    };
    match state.cluster.inbox.send(node, &payload).await {
        Ok(0) => Err(unknown_sid()),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "forwarding a socket.io request failed");
            Err(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
    }
}

/// Reads this node's inbox: Engine.IO messages are handled here, everything else (emulation
/// commands) goes on to `others`, in order.
pub(crate) async fn receive(
    mut inbox: mpsc::Receiver<Vec<u8>>,
    others: mpsc::Sender<Vec<u8>>,
    state: AppState,
) {
    while let Some(payload) = inbox.recv().await {
        let Ok(message) = serde_json::from_slice::<Message>(&payload) else {
            // The server API's `send` to a connection of this node (`crate::send`).
            if let Ok(send) = serde_json::from_slice::<crate::send::Message>(&payload) {
                crate::send::received(&state, send);
                continue;
            }
            if others.send(payload).await.is_err() {
                return;
            }
            continue;
        };
        match message {
            Message::Post { sid, body } => {
                if let Some(shared) = local(&state, &sid) {
                    let _ = posted(&shared, body.as_bytes());
                }
            }
            Message::Poll { sid, id, reply_to } => {
                let state = state.clone();
                tokio::spawn(async move {
                    let response = match local(&state, &sid) {
                        Some(shared) => poll(shared).await,
                        None => unknown_sid(),
                    };
                    let status = response.status().as_u16();
                    let limit = state.sio.max_http_buffer_size.saturating_mul(2);
                    let body = axum::body::to_bytes(response.into_body(), limit)
                        .await
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let reply = Message::PollReply { id, status, body };
                    let _ = send(&state, &reply_to, &reply).await;
                });
            }
            Message::PollReply { id, status, body } => {
                let waiting = state.sio_sessions.forwarded.waiting.lock().remove(&id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send((status, body));
                }
            }
        }
    }
}

fn local(state: &AppState, sid: &str) -> Option<Arc<Shared>> {
    state.sio_sessions.inner.lock().get(sid).cloned()
}
