//! The server API's `send` (docs/api.md): data for one connection (`client`) or every
//! connection of a user, as the client protocol's `message` push; with `"ack": true` and a
//! Socket.IO client, the HTTP answer waits for the client's ACK and carries its arguments
//! (`socketio/ack.rs`, docs/socketio.md "Server acks").
//!
//! On a shared engine the connection may be on another node. The node that takes the call
//! tries its own connections first; when that does not settle it (a user's connections may be
//! anywhere, and a client id does not say its node), it sends the call to every other live
//! node's inbox, the way `revoke` does, and each answers through this node's inbox with how
//! many connections it reached and, for an ack, the client's answer. The HTTP request is held
//! here until every node answered or the time is up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kilat_protocol::{ClientError, ErrorCode, RawJson, SharedFrame};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::AppState;
use crate::socketio::ack::{self, Refused};

/// Default wait for a client's ack.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Longest wait for a client's ack a caller may ask for.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// How long other nodes have to answer a `send` without an ack (they answer at once; this
/// only matters when one is gone).
const REMOTE_WAIT: Duration = Duration::from_secs(2);
/// Extra time on top of the ack timeout for another node's answer to travel back.
const REMOTE_MARGIN: Duration = Duration::from_secs(1);
/// Most `send` calls of this node waiting for other nodes at once.
const MAX_REMOTE_WAITING: usize = 10_000;

/// Error code of an ack the client did not answer in time (docs/protocol.md).
pub(crate) const TIMEOUT: ErrorCode = ErrorCode(504);

/// The API's `send` body.
#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<RawJson>,
    #[serde(default)]
    ack: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(d).map(Some)
}

fn bad(message: &'static str) -> ClientError {
    ClientError::new(ErrorCode::BAD_REQUEST, message)
}

/// A checked `send`: who, what, and how long to wait for an ack (`None`: no ack).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    client: Option<String>,
    data: Box<RawValue>,
    #[serde(default)]
    ack_ms: Option<u64>,
}

fn check(request: SendRequest) -> Result<Target, ClientError> {
    if request.user.is_none() && request.client.is_none() {
        return Err(bad(
            "give `client` (one connection) or `user` (all of a user's connections)",
        ));
    }
    let Some(data) = request.data else {
        return Err(bad("`data` is missing: the JSON to send"));
    };
    let ack_ms = if request.ack {
        if request.client.is_none() {
            return Err(bad(
                "`ack` needs `client`: an ack is the answer of one connection",
            ));
        }
        let ms = request.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            return Err(bad("`timeout_ms` must be 1-60000"));
        }
        Some(ms)
    } else {
        None
    };
    Ok(Target {
        user: request.user,
        client: request.client,
        data: crate::body::one_line(data),
        ack_ms,
    })
}

/// What this node did with a `send`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Local {
    /// Delivered to this many of its connections (no ack asked).
    Delivered(usize),
    /// The connection is not here (an ack asked).
    NotHere,
    /// The connection is here and the ack asked settled: its arguments (and attachments), or
    /// the refusal's code and message.
    Acked(Result<(Box<RawValue>, Vec<String>), (u32, String)>),
}

/// The `message` push for `data`, with the ack id a Socket.IO connection answers.
fn message_frame(data: &RawValue, ack: Option<u64>) -> SharedFrame {
    let ack = ack.map(|id| format!(",\"ack\":{id}")).unwrap_or_default();
    // A per-connection frame like a reply: never shared, translated per connection.
    SharedFrame::reply(format!(
        "{{\"push\":{{\"message\":{{\"data\":{}{ack}}}}}}}",
        data.get()
    ))
}

/// Runs `target` on this node's connections.
async fn local(state: &AppState, target: &Target) -> Local {
    let targets = state
        .node
        .message_targets(target.user.as_deref(), target.client.as_deref());
    let Some(ms) = target.ack_ms else {
        let frame = message_frame(&target.data, None);
        for (_, _, outbox) in &targets {
            outbox.push(frame.clone());
        }
        return Local::Delivered(targets.len());
    };
    let Some((client, transport, outbox)) = targets.into_iter().next() else {
        return Local::NotHere;
    };
    if transport != "socketio" {
        return Local::Acked(Err((
            ErrorCode::BAD_REQUEST.0,
            format!(
                "`ack` is not supported for this transport ({transport}): only Socket.IO clients answer acks; send without `ack` and have the client answer with a publish or rpc"
            ),
        )));
    }
    let acks = &state.sio_sessions.acks;
    let asked = match acks.ask(&client) {
        Ok(asked) => asked,
        Err(refused) => {
            let message = match refused {
                Refused::Connection => format!(
                    "the connection already owes {} acks; wait for some answers",
                    ack::MAX_PER_CONNECTION
                ),
                Refused::Node => format!(
                    "this node's connections already owe {} acks; wait for some answers",
                    ack::MAX_PER_NODE
                ),
            };
            return Local::Acked(Err((ErrorCode::LIMIT_EXCEEDED.0, message)));
        }
    };
    outbox.push(message_frame(&target.data, Some(asked.id)));
    let wait = Duration::from_millis(ms);
    let mut asked = asked;
    let outcome = match tokio::time::timeout(wait, &mut asked.answer).await {
        Ok(Ok(Ok(answer))) => Ok((answer.args, answer.attachments)),
        Ok(Ok(Err(reason))) => Err((ErrorCode::UNAVAILABLE.0, reason.to_owned())),
        Ok(Err(_)) => Err((
            ErrorCode::UNAVAILABLE.0,
            "the connection closed before answering".to_owned(),
        )),
        Err(_) => Err((
            TIMEOUT.0,
            format!("the client did not answer within {ms} ms (timeout_ms)"),
        )),
    };
    Local::Acked(outcome)
}

/// The API method `send`.
pub(crate) async fn send(state: &AppState, request: SendRequest) -> Result<Value, ClientError> {
    let target = check(request)?;
    let here = local(state, &target).await;
    let settled = match &here {
        Local::Acked(_) => true,
        // One connection, found here: no other node has it.
        Local::Delivered(n) => target.user.is_none() && *n > 0,
        Local::NotHere => false,
    };
    let mut outcomes = vec![here];
    if !settled && state.cluster.shared {
        outcomes.extend(remote(state, &target).await);
    }
    let mut delivered = 0;
    for outcome in outcomes {
        match outcome {
            Local::Delivered(n) => delivered += n,
            Local::NotHere => {}
            Local::Acked(Ok((args, attachments))) => {
                let mut result = json!({ "connections": 1, "args": args });
                if !attachments.is_empty() {
                    result["attachments"] = json!(attachments);
                }
                return Ok(result);
            }
            Local::Acked(Err((code, message))) => {
                return Err(ClientError::new(ErrorCode(code), message));
            }
        }
    }
    if target.ack_ms.is_some() {
        return Err(ClientError::new(
            ErrorCode::NOT_FOUND,
            "no connection with this client id (on any node)",
        ));
    }
    Ok(json!({ "connections": delivered }))
}

/// `send` calls of this node waiting for the other nodes, by request id.
#[derive(Debug, Default)]
pub(crate) struct Sends {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::Sender<Local>>>,
}

/// A `send` between nodes (in the node inboxes, beside the Engine.IO messages of
/// `socketio/cluster.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Run `target` on the receiving node's connections; answer node `reply_to` with `id`.
    #[serde(rename = "send")]
    Send {
        id: u64,
        reply_to: String,
        target: Target,
    },
    /// A node's outcome for a forwarded `send`.
    #[serde(rename = "send_reply")]
    Reply { id: u64, outcome: Local },
}

/// Sends `target` to every other live node and collects their outcomes (those that answer
/// in time).
async fn remote(state: &AppState, target: &Target) -> Vec<Local> {
    let nodes: Vec<String> = match state.cluster.registry.nodes().await {
        Ok(nodes) => nodes
            .iter()
            .filter_map(|raw| {
                serde_json::from_str::<Value>(raw.get())
                    .ok()
                    .and_then(|node| node["id"].as_str().map(str::to_owned))
            })
            .filter(|id| id != state.node.id())
            .collect(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "send: node registry unavailable; only this node's connections reached");
            return Vec::new();
        }
    };
    if nodes.is_empty() {
        return Vec::new();
    }
    let sends = &state.sio_sessions.sends;
    let id = sends.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(nodes.len());
    {
        let mut waiting = sends.waiting.lock();
        if waiting.len() >= MAX_REMOTE_WAITING {
            tracing::warn!(
                "send: too many calls waiting for other nodes; only this node's connections reached"
            );
            return Vec::new();
        }
        waiting.insert(id, tx);
    }
    let _guard = Waiting { sends, id };
    let message = Message::Send {
        id,
        reply_to: state.node.id().to_owned(),
        target: target.clone(),
    };
    let Ok(payload) = serde_json::to_vec(&message) else {
        return Vec::new();
    };
    let mut expected = 0;
    for node in &nodes {
        match state.cluster.inbox.send(node, &payload).await {
            Ok(n) if n > 0 => expected += 1,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(node = %node, error = %crate::error_chain(&error), "send: not forwarded to a node");
            }
        }
    }
    let wait = match target.ack_ms {
        Some(ms) => Duration::from_millis(ms) + REMOTE_MARGIN,
        None => REMOTE_WAIT,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut outcomes = Vec::new();
    while outcomes.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(outcome)) => {
                let settled = matches!(outcome, Local::Acked(_));
                outcomes.push(outcome);
                if settled {
                    break;
                }
            }
            _ => {
                if target.ack_ms.is_some() {
                    // The node holding the connection did not come back in time.
                    let ms = target.ack_ms.unwrap_or_default();
                    outcomes.push(Local::Acked(Err((
                        TIMEOUT.0,
                        format!("the client did not answer within {ms} ms (timeout_ms)"),
                    ))));
                } else {
                    tracing::warn!(
                        answered = outcomes.len(),
                        expected,
                        "send: some nodes did not answer in time"
                    );
                }
                break;
            }
        }
    }
    outcomes
}

/// Removes a waiting `send`'s entry when it ends.
struct Waiting<'a> {
    sends: &'a Sends,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.sends.waiting.lock().remove(&self.id);
    }
}

/// A `send` message from another node's inbox (from `socketio::cluster::receive`).
pub(crate) fn received(state: &AppState, message: Message) {
    match message {
        Message::Send {
            id,
            reply_to,
            target,
        } => {
            let state = state.clone();
            tokio::spawn(async move {
                let outcome = local(&state, &target).await;
                let reply = Message::Reply { id, outcome };
                if let Ok(payload) = serde_json::to_vec(&reply)
                    && let Err(error) = state.cluster.inbox.send(&reply_to, &payload).await
                {
                    tracing::warn!(error = %crate::error_chain(&error), "send: answer not returned to the calling node");
                }
            });
        }
        Message::Reply { id, outcome } => {
            let waiting = state.sio_sessions.sends.waiting.lock().get(&id).cloned();
            if let Some(waiting) = waiting {
                let _ = waiting.try_send(outcome);
            }
        }
    }
}
