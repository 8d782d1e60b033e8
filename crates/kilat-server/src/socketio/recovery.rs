//! Connection state recovery for Socket.IO clients (Socket.IO 4.6+, `[socketio] recovery`,
//! docs/socketio.md), backed by kilat's offsets and history.
//!
//! - Each Engine.IO session gets a private session id, the `pid` of its CONNECT replies (128
//!   random bits, shown only to that client). The wire follows the stream position (epoch and
//!   offset) of every positioned channel it delivers.
//! - When the session ends without the client leaving (a cut connection, a lost transport, a
//!   reconnectable close), those positions are published to the channel `sio:=<pid>`, whose
//!   history (the `sio` namespace's) keeps them for `history_ttl`, in the engine: on one node
//!   or, with Redis, for every node.
//! - A reconnecting client sends the `pid` in its CONNECT; the positions are read back and its
//!   kilat `connect` resubscribes each channel with `recover`. When every channel recovered,
//!   the CONNECT reply carries the same `pid` (`socket.recovered === true` on the client) and
//!   the missed publications follow, each channel's in order; otherwise a new `pid`.
//!
//! The resubscriptions go through kilat's permission checks like any `connect.subs`, so a
//! forged or stale state can recover nothing the client may not read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kilat_core::{HistoryOptions, Node};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Shared, SioSessions};

/// How long a reconnection waits for the connection it replaces to keep its state.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// Most positions kept or read back for one session (kilat's `max_channels_per_connection`
/// bounds them further when they are resubscribed).
const MAX_POSITIONS: usize = 256;

/// Where one channel's stream was last delivered to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub(crate) channel: String,
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

/// What is kept for a session between its connections.
#[derive(Serialize, Deserialize)]
struct Stored {
    positions: Vec<Position>,
}

/// The recovery state of one session's wire (present when `[socketio] recovery` is on).
pub(crate) struct Recovery {
    pub(crate) node: Node,
    /// The session's private id; empty until the first CONNECT is answered.
    pub(crate) pid: String,
    /// The positions followed (while connecting: the ones asked to recover).
    pub(crate) positions: Vec<Position>,
    /// Whether the current connect asks to recover `positions`.
    pub(crate) recovering: bool,
    /// A CONNECT waiting for its session's stored positions.
    pub(crate) lookup: Option<Lookup>,
    /// The client left (every namespace disconnected) or the server closed for good: nothing
    /// is kept.
    pub(crate) ended: bool,
}

/// A reconnecting CONNECT while its stored state is read. The read is a boxed future kept
/// here, so a wire whose `recv` is cancelled resumes it instead of losing the CONNECT.
pub(crate) struct Lookup {
    /// The kilat command id reserved for the connect.
    pub(crate) id: u32,
    pub(crate) auth: Option<Box<RawValue>>,
    pub(crate) namespace: String,
    pub(crate) pid: String,
    pub(crate) read: Pin<Box<dyn Future<Output = Option<Vec<Position>>> + Send>>,
}

impl Recovery {
    pub(crate) fn new(node: Node) -> Self {
        Recovery {
            node,
            pid: String::new(),
            positions: Vec::new(),
            recovering: false,
            lookup: None,
            ended: false,
        }
    }

    /// Starts reading the state stored for `pid`. When the session that had that `pid` is
    /// still live on this node (a long-polling client that lost its connection is only
    /// noticed at the next ping timeout), it is ended first and its state kept: the
    /// reconnection takes its place. (On another node it ends at its ping timeout, and the
    /// reconnection gets `recovered: false`.)
    pub(crate) fn load(
        &self,
        pid: &str,
        sessions: &SioSessions,
        own: &Arc<Shared>,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Position>>> + Send>> {
        let node = self.node.clone();
        let channel = state_channel(pid);
        let old = sessions
            .pids
            .lock()
            .get(pid)
            .filter(|old| !Arc::ptr_eq(old, own))
            .cloned();
        Box::pin(async move {
            if let Some(old) = old {
                let stored = old.stored.notified();
                tokio::pin!(stored);
                stored.as_mut().enable();
                let replace = {
                    let mut state = old.state.lock();
                    let replace = !state.stored;
                    state.closed = true;
                    replace
                };
                if replace {
                    tracing::debug!("socket.io reconnection replaces its live session");
                    old.changed.notify_one();
                    let _ = tokio::time::timeout(TAKEOVER_WAIT, stored).await;
                }
            }
            let options = HistoryOptions {
                limit: Some(1),
                since: None,
                reverse: true,
            };
            let page = match node.history(&channel, options).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::debug!(%error, "socket.io recovery state not readable");
                    return None;
                }
            };
            let publication = page.publications.into_iter().next()?;
            let stored = serde_json::from_str::<Stored>(publication.data.get()).ok()?;
            let mut positions = stored.positions;
            positions.truncate(MAX_POSITIONS);
            Some(positions)
        })
    }

    /// Keeps the session's positions for its next connection (in the background: called as
    /// the wire is dropped), then tells `shared`'s waiters.
    pub(crate) fn store(&self, shared: Arc<Shared>) {
        fn done(shared: &Shared) {
            shared.state.lock().stored = true;
            shared.stored.notify_waiters();
        }
        if self.ended || self.pid.is_empty() || self.positions.is_empty() {
            return done(&shared);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return done(&shared);
        };
        let stored = Stored {
            positions: self.positions.clone(),
        };
        let Ok(data) = serde_json::value::to_raw_value(&stored) else {
            return done(&shared);
        };
        let node = self.node.clone();
        let channel = state_channel(&self.pid);
        handle.spawn(async move {
            if let Err(error) = node.publish(&channel, data).await {
                tracing::info!(
                    %error,
                    "socket.io connection state not kept (recovery needs history in the kilat namespace `sio`)"
                );
            }
            done(&shared);
        });
    }

    /// Follows the positions of the publications in a frame the client was sent.
    pub(crate) fn advance(&mut self, json: &[u8]) {
        for line in json.split(|b| *b == b'\n') {
            let Ok(frame) = serde_json::from_slice::<PushPosition<'_>>(line) else {
                continue;
            };
            let (Some(channel), Some(Some(offset))) =
                (frame.push.channel, frame.push.r#pub.map(|p| p.offset))
            else {
                continue;
            };
            if let Some(position) = self.positions.iter_mut().find(|p| p.channel == channel) {
                position.offset = position.offset.max(offset);
            }
        }
    }

    /// Starts following `channel` from a subscribe result.
    pub(crate) fn follow(&mut self, channel: &str, result: &SubResult) {
        if !result.positioned || result.epoch.is_empty() {
            return;
        }
        self.positions.retain(|p| p.channel != channel);
        if self.positions.len() < MAX_POSITIONS {
            self.positions.push(Position {
                channel: channel.to_owned(),
                epoch: result.epoch.clone(),
                offset: result.offset,
            });
        }
    }
}

/// The channel keeping a session's state: in the `sio` namespace, after `=` (which no Socket.IO
/// namespace channel has).
fn state_channel(pid: &str) -> String {
    format!("{}={pid}", super::wire::CHANNEL_PREFIX)
}

/// Whether a client's `pid` has the form kilat gives out (32 hex digits).
pub(crate) fn valid_pid(pid: &str) -> bool {
    pid.len() == 32 && pid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A subscribe result as recovery reads it (from `connect.subs` or a `subscribe` reply).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SubResult {
    #[serde(default)]
    pub(crate) epoch: String,
    #[serde(default)]
    pub(crate) offset: u64,
    #[serde(default)]
    pub(crate) recovered: bool,
    #[serde(default)]
    pub(crate) positioned: bool,
    #[serde(default)]
    pub(crate) publications: Vec<Recovered>,
}

/// A recovered publication.
#[derive(Debug, Deserialize)]
pub(crate) struct Recovered {
    /// The JSON data (absent for a binary publication).
    #[serde(default)]
    pub(crate) data: Option<Box<RawValue>>,
    /// A binary publication's bytes, base64.
    #[serde(default)]
    pub(crate) b64data: Option<String>,
    #[serde(default)]
    pub(crate) offset: Option<u64>,
}

#[derive(Deserialize)]
struct PushPosition<'a> {
    #[serde(borrow)]
    push: PushPart<'a>,
}

#[derive(Deserialize)]
struct PushPart<'a> {
    #[serde(borrow, default)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    r#pub: Option<PubOffset>,
}

#[derive(Deserialize)]
struct PubOffset {
    #[serde(default)]
    offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_delivered_publications_of_followed_channels() {
        let node = Node::new(kilat_core::NodeConfig::dev());
        let mut recovery = Recovery::new(node);
        let result = SubResult {
            epoch: "e1".into(),
            offset: 4,
            positioned: true,
            ..SubResult::default()
        };
        recovery.follow("sio:/", &result);
        recovery.follow("room:x", &SubResult::default());
        recovery.advance(
            b"{\"push\":{\"channel\":\"sio:/\",\"pub\":{\"data\":{\"a\":[1]},\"offset\":6}}}\n{\"push\":{\"channel\":\"other\",\"pub\":{\"data\":1,\"offset\":9}}}",
        );
        assert_eq!(
            recovery.positions,
            vec![Position {
                channel: "sio:/".into(),
                epoch: "e1".into(),
                offset: 6
            }]
        );
        assert!(valid_pid("0123456789abcdef0123456789ABCDEF"));
        assert!(!valid_pid("../x"));
    }
}
