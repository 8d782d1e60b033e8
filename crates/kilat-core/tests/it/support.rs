use std::sync::Arc;

use kilat_core::engine::memory::MemoryBroker;
use kilat_core::engine::{
    BoxFuture, Broker, BrokerHandler, EngineError, HistoryPage, HistoryQuery, JoinLeave, Latest,
    PublishOptions,
};
use kilat_core::{NamespaceOptions, Node, NodeConfig, Outbox, Session, TransportInfo};
use kilat_protocol::Disconnect;
use kilat_protocol::types::raw_json;
use kilat_protocol::{ClientInfo, Publication, StreamPosition};
use serde_json::{Value, json};

pub(crate) const WS: TransportInfo = TransportInfo {
    name: "websocket",
    emulated: false,
};

/// A client: a session and the outbox its transport would drain.
pub(crate) struct Client {
    pub(crate) session: Option<Session>,
    pub(crate) outbox: Outbox,
    next_id: u32,
    /// Frames drained while looking for a reply, returned by the next `frames()`.
    pending: Vec<Value>,
}

impl Client {
    pub(crate) fn new(node: &Node) -> Self {
        let outbox = Outbox::new(node.config().client_queue_max_bytes);
        let session = Session::new(node, WS, outbox.clone());
        Client {
            session: Some(session),
            outbox,
            next_id: 0,
            pending: Vec::new(),
        }
    }

    pub(crate) fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("session open")
    }

    /// Sends raw text; returns the disconnect if the session asked for one.
    pub(crate) async fn send_raw(&mut self, text: &str) -> Result<(), Disconnect> {
        self.session().handle_message(text.as_bytes()).await
    }

    /// Sends `{"id": next, method: params}` and returns the id.
    pub(crate) async fn command(&mut self, method: &str, params: Value) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, method: params}).to_string();
        self.send_raw(&text).await.expect("no disconnect");
        id
    }

    /// Sends a command and returns its reply (the frame with its id); other frames are kept in
    /// `rest` order-preserving via `frames`.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.command(method, params).await;
        let mut frames = self.frames();
        let at = frames
            .iter()
            .position(|f| f["id"] == json!(id))
            .unwrap_or_else(|| panic!("no reply to {method} {id}"));
        let reply = frames.remove(at);
        self.pending = frames;
        reply
    }

    /// Every frame queued so far, parsed, in order.
    pub(crate) fn frames(&mut self) -> Vec<Value> {
        let mut batch = Vec::new();
        let _ = self.outbox.drain(&mut batch, usize::MAX);
        let mut out = std::mem::take(&mut self.pending);
        out.extend(batch.iter().flat_map(|f| {
            f.json()
                .split(|&b| b == b'\n')
                .map(|line| serde_json::from_slice::<Value>(line).expect("server frame is JSON"))
                .collect::<Vec<_>>()
        }));
        out
    }

    /// Waits (bounded) for queued frames until `done` holds for everything collected, and
    /// returns it all. Fails the test when `done` never holds.
    pub(crate) async fn frames_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut seen = self.frames();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done(&seen) {
            let ready = tokio::time::timeout_at(deadline, self.outbox.ready()).await;
            assert!(
                ready.is_ok(),
                "frames never satisfied the condition: {seen:?}"
            );
            seen.extend(self.frames());
        }
        seen
    }

    /// The pending close, if any.
    pub(crate) fn close_reason(&self) -> Option<Disconnect> {
        let mut batch = Vec::new();
        self.outbox.drain(&mut batch, usize::MAX)
    }

    pub(crate) async fn connect(&mut self) -> Value {
        self.call("connect", json!({})).await
    }

    pub(crate) async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }
}

/// Dev node: every namespace permissive.
pub(crate) fn dev_node() -> Node {
    Node::new(NodeConfig::dev())
}

/// A node with one configured namespace `ns` and anonymous access.
pub(crate) fn node_with(ns: &str, options: NamespaceOptions) -> Node {
    let mut config = NodeConfig {
        allow_anonymous: true,
        ..NodeConfig::default()
    };
    config.namespaces.insert(ns.to_owned(), options);
    Node::new(config)
}

/// The presence changes in `frames` for `channel`, flattened from `presence_diff` pushes (and
/// single `join`/`leave` pushes) in order: `(client, true)` for a join.
pub(crate) fn presence_changes(frames: &[Value], channel: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for push in frames.iter().map(|f| &f["push"]) {
        if push["channel"] != json!(channel) {
            continue;
        }
        if let Some(changes) = push["presence_diff"]["changes"].as_array() {
            for change in changes {
                let (info, join) = match change.get("join") {
                    Some(info) => (info, true),
                    None => (&change["leave"], false),
                };
                let client = info["client"].as_str().expect("client id");
                out.push((client.to_owned(), join));
            }
        } else if let Some(info) = push["join"]["info"]["client"].as_str() {
            out.push((info.to_owned(), true));
        } else if let Some(info) = push["leave"]["info"]["client"].as_str() {
            out.push((info.to_owned(), false));
        }
    }
    out
}

/// Publications (`push.pub`) in `frames` for `channel`, as (offset, data).
pub(crate) fn pubs(frames: &[Value], channel: &str) -> Vec<(Option<u64>, Value)> {
    frames
        .iter()
        .filter(|f| f["push"]["channel"] == json!(channel) && f["push"]["pub"].is_object())
        .map(|f| {
            (
                f["push"]["pub"]["offset"].as_u64(),
                f["push"]["pub"]["data"].clone(),
            )
        })
        .collect()
}

pub(crate) fn error_code(reply: &Value) -> Option<u64> {
    reply["error"]["code"].as_u64()
}

/// A memory broker with one behaviour changed, for tests of what other engines and nodes do:
/// the change is a [`Twist`], and [`Twisted`] hands everything else to the memory broker.
pub(crate) trait Twist: Send + Sync + std::fmt::Debug {
    /// The broker everything is delegated to.
    fn inner(&self) -> &MemoryBroker;

    /// The handler the broker delivers to; the node's own unless the twist wraps it.
    fn handler(&self, handler: Arc<dyn BrokerHandler>) -> Arc<dyn BrokerHandler> {
        handler
    }

    /// A history read; the memory broker's unless the twist changes it.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        self.inner().history(channel, query)
    }

    /// Unsubscribes the node from a channel; the memory broker's unless the twist changes it.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner().unsubscribe(channel)
    }
}

/// The [`Broker`] of a [`Twist`].
#[derive(Debug)]
pub(crate) struct Twisted<T>(pub(crate) T);

impl<T: Twist> Broker for Twisted<T> {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        self.0.inner().set_handler(self.0.handler(handler));
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, EngineError>> {
        self.0.inner().publish(channel, publication, options)
    }
    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        kind: JoinLeave,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.0.inner().publish_join_leave(channel, info, kind)
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.0.inner().subscribe(channel)
    }
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.0.unsubscribe(channel)
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        self.0.history(channel, query)
    }
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.0.inner().remove_history(channel)
    }
    fn publish_latest<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
        key: &'a str,
        max_keys: usize,
    ) -> BoxFuture<'a, Result<(Option<StreamPosition>, Latest), EngineError>> {
        self.0
            .inner()
            .publish_latest(channel, publication, options, key, max_keys)
    }
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        self.0.inner().latest(channel)
    }
}

/// Publishes `before` publications just before each history read and `after` just after it,
/// as other nodes would while a subscriber recovers.
#[derive(Debug)]
pub(crate) struct Interleaving {
    pub(crate) inner: MemoryBroker,
    pub(crate) before: u64,
    pub(crate) after: u64,
    /// Interleave only for reads with `since` (recoveries), not for position reads.
    pub(crate) only_since: bool,
    /// History options of the interleaved publications (the namespace's).
    pub(crate) options: PublishOptions,
}

impl Twist for Interleaving {
    fn inner(&self) -> &MemoryBroker {
        &self.inner
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move {
            let options = self.options;
            if self.only_since && query.since.is_none() {
                return self.inner.history(channel, query).await;
            }
            for i in 0..self.before {
                self.inner
                    .publish(channel, test_publication(100 + i), options)
                    .await?;
            }
            let page = self.inner.history(channel, query).await?;
            for i in 0..self.after {
                self.inner
                    .publish(channel, test_publication(200 + i), options)
                    .await?;
            }
            Ok(page)
        })
    }
}

pub(crate) fn test_publication(n: u64) -> Publication {
    Publication {
        binary: None,
        data: raw_json(&n.to_string()).expect("json"),
        offset: None,
        info: None,
    }
}
