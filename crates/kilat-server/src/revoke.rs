//! Token revocation across nodes (the API's `revoke`, docs/security.md "Revoking tokens").
//!
//! The node that takes the API call records the revocation and closes its own sessions
//! (`Node::revoke`), then sends it to every other live node's inbox through the engine, so it
//! takes effect everywhere within an engine round trip. Inbox delivery is at most once, and a
//! node that starts later has not heard it: so each node also publishes the revocations it
//! knows in its node-registry heartbeat and merges the other nodes' every heartbeat (5 s). On
//! the memory engine there is one node and nothing to spread.

use std::sync::Arc;

use kilat_core::revoke::{Revocation, Revoked};
use kilat_core::{Node, NodeRegistry};
use kilat_protocol::{ClientError, ErrorCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::AppState;

/// First byte of a revocation in a node inbox; other inbox messages are JSON objects (`{`).
const TAG: u8 = 0x01;

/// Longest `jti` or user id accepted.
const MAX_ID: usize = 255;

/// Default lifetime of a revocation without `until`.
const DEFAULT_TTL: u64 = 24 * 3600;

/// Longest lifetime of a revocation.
const MAX_TTL: u64 = 366 * 24 * 3600;

/// Most revocations a node publishes in its heartbeat (the ones that expire last).
const MAX_IN_HEARTBEAT: usize = 10_000;

/// The API's `revoke` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    until: Option<u64>,
}

fn bad(message: &'static str) -> ClientError {
    ClientError::new(ErrorCode::BAD_REQUEST, message)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a `revoke` body and turns it into a revocation.
pub(crate) fn parse(request: RevokeRequest) -> Result<Revocation, ClientError> {
    let target = match (request.jti, request.user) {
        (Some(jti), None) => Revoked::Jti(jti),
        (None, Some(user)) => Revoked::User(user),
        _ => return Err(bad("give exactly one of `jti` and `user`")),
    };
    let id = match &target {
        Revoked::Jti(id) | Revoked::User(id) => id,
    };
    if id.is_empty() || id.len() > MAX_ID {
        return Err(bad("`jti` or `user` must be 1-255 bytes"));
    }
    let now = unix_now();
    let until = request.until.unwrap_or(now + DEFAULT_TTL);
    if until <= now {
        return Err(bad(
            "`until` is in the past: a revocation must expire later than now (use the token's exp)",
        ));
    }
    if until > now + MAX_TTL {
        return Err(bad("`until` is more than 366 days away"));
    }
    Ok(Revocation { target, until })
}

/// Records `revocation` here and sends it to every other live node. Returns how many
/// connections this node closed.
pub(crate) async fn revoke(state: &AppState, revocation: &Revocation) -> usize {
    let (_, closed) = state.node.revoke(revocation);
    if !state.cluster.shared {
        return closed;
    }
    // In this node's registry entry at once, for nodes that start before the next heartbeat.
    crate::publish_heartbeat(&state.cluster.registry, state).await;
    let Ok(json) = serde_json::to_vec(revocation) else {
        return closed;
    };
    let mut payload = Vec::with_capacity(json.len() + 1);
    payload.push(TAG);
    payload.extend_from_slice(&json);
    let nodes = match state.cluster.registry.nodes().await {
        Ok(nodes) => nodes,
        Err(error) => {
            tracing::warn!(
                error = %crate::error_chain(&error),
                "revocation not sent to the other nodes now (node registry unavailable); they take it from the next heartbeat"
            );
            return closed;
        }
    };
    for raw in nodes {
        let Some(id) = serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|node| node["id"].as_str().map(str::to_owned))
        else {
            continue;
        };
        if id == state.node.id() {
            continue;
        }
        if let Err(error) = state.cluster.inbox.send(&id, &payload).await {
            tracing::warn!(
                node = %id,
                error = %crate::error_chain(&error),
                "revocation not sent to a node; it takes it from the next heartbeat"
            );
        }
    }
    closed
}

/// Splits this node's inbox: revocations are applied to `node`, everything else comes out of
/// the returned receiver for the emulation transport.
pub(crate) fn split_inbox(
    mut inbox: mpsc::Receiver<Vec<u8>>,
    node: Node,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(payload) = inbox.recv().await {
            match payload.split_first() {
                Some((&TAG, json)) => match serde_json::from_slice::<Revocation>(json) {
                    Ok(revocation) => {
                        node.revoke(&revocation);
                    }
                    Err(error) => tracing::warn!(%error, "malformed revocation from another node"),
                },
                _ => {
                    if tx.send(payload).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// What this node adds to its heartbeat: the revocations it knows (those expiring last, at
/// most [`MAX_IN_HEARTBEAT`]).
pub(crate) fn heartbeat_entries(node: &Node) -> Vec<Revocation> {
    let mut list = node.revocations();
    if list.len() > MAX_IN_HEARTBEAT {
        list.sort_unstable_by_key(|r| std::cmp::Reverse(r.until));
        list.truncate(MAX_IN_HEARTBEAT);
    }
    list
}

/// Merges the revocations other nodes publish in the registry (missed inbox messages, or
/// revocations made before this node started).
pub(crate) async fn merge_from(registry: &Arc<dyn NodeRegistry>, node: &Node) {
    let Ok(nodes) = registry.nodes().await else {
        return;
    };
    for raw in nodes {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            id: String,
            #[serde(default)]
            revoked: Vec<Revocation>,
        }
        let Ok(entry) = serde_json::from_str::<Entry>(raw.get()) else {
            continue;
        };
        if entry.id == node.id() {
            continue;
        }
        for revocation in &entry.revoked {
            node.revoke(revocation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<Revocation, ClientError> {
        parse(serde_json::from_str(body).expect("body"))
    }

    #[test]
    fn a_revoke_names_one_token_or_user_with_a_future_expiry() {
        let now = unix_now();
        let r = request(r#"{"jti": "abc"}"#).expect("jti");
        assert_eq!(r.target, Revoked::Jti("abc".into()));
        assert!(r.until >= now + DEFAULT_TTL);
        let r = request(&format!(r#"{{"user": "bob", "until": {}}}"#, now + 60)).expect("user");
        assert_eq!((r.target, r.until), (Revoked::User("bob".into()), now + 60));
        assert!(request(r#"{"jti": "a", "user": "b"}"#).is_err());
        assert!(request("{}").is_err());
        assert!(request(r#"{"jti": ""}"#).is_err());
        assert!(request(r#"{"jti": "a", "until": 5}"#).is_err());
        assert!(
            request(&format!(
                r#"{{"jti": "a", "until": {}}}"#,
                now + MAX_TTL + 10
            ))
            .is_err()
        );
    }

    #[test]
    fn revocations_travel_as_tagged_json() {
        let r = Revocation {
            target: Revoked::Jti("x".into()),
            until: 7,
        };
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, r#"{"jti":"x","until":7}"#);
        assert_eq!(serde_json::from_str::<Revocation>(&json).expect("back"), r);
    }
}
