//! Which of an app's channels are occupied on any node, for the HTTP API's channel list and the
//! `channel_occupied`/`channel_vacated` webhooks.
//!
//! Counts come from the engine's presence: the app namespaces have presence on, so every
//! subscription of a Pusher channel is one entry there, on every node (see `api.rs`). The
//! channel *list* needs one more thing, because the presence store is read per channel: with
//! an engine shared by several nodes, each node keeps one entry per channel it holds
//! subscribers of in an index (`pusher.<app>.index:channels` in the presence store, entry
//! `<node id>/<kilat channel>`). The entry is added when the node's first local subscriber
//! joins, removed when its last leaves, and refreshed by a task while it stays, so a node that
//! dies drops out of the index with its presence TTL. On the memory engine this node's own
//! channels are the whole list and there is no index.

use std::sync::Arc;
use std::time::Duration;

use kilat_core::{Node, PresenceStore};
use kilat_protocol::ClientInfo;

/// The index of occupied channels in an engine shared by several nodes.
#[derive(Debug)]
pub(crate) struct Index {
    store: Arc<dyn PresenceStore>,
    node_id: String,
    /// The presence TTL of the node: an entry not refreshed within it expires.
    ttl: Duration,
}

impl Index {
    pub(crate) fn new(store: Arc<dyn PresenceStore>, node: &Node) -> Self {
        Index {
            store,
            node_id: node.id().to_owned(),
            ttl: node.config().presence_ttl,
        }
    }

    fn key(namespace: &str) -> String {
        format!("{namespace}.index:channels")
    }

    fn entry(&self, native: &str) -> ClientInfo {
        ClientInfo {
            client: format!("{}/{native}", self.node_id),
            user: native.to_owned(),
            info: None,
        }
    }

    /// Records that this node holds subscribers of `native` (an app's kilat channel).
    pub(crate) async fn add(&self, namespace: &str, native: &str) {
        if let Err(error) = self
            .store
            .add(&Self::key(namespace), self.entry(native), self.ttl)
            .await
        {
            tracing::warn!(%error, channel = native, "pusher channel index: add failed");
        }
    }

    /// Records that this node holds no subscriber of `native` any more.
    pub(crate) async fn remove(&self, namespace: &str, native: &str) {
        let client = self.entry(native).client;
        if let Err(error) = self.store.remove(&Self::key(namespace), &client).await {
            tracing::warn!(%error, channel = native, "pusher channel index: remove failed");
        }
    }

    /// The kilat channels of `namespace` (and its cache namespace) occupied on some node.
    pub(crate) async fn channels(&self, namespace: &str) -> Vec<String> {
        match self.store.list(&Self::key(namespace)).await {
            Ok(entries) => entries.into_iter().map(|entry| entry.user).collect(),
            Err(error) => {
                tracing::warn!(%error, "pusher channel index: list failed; this node's channels only");
                Vec::new()
            }
        }
    }

    /// Refreshes this node's entries of every app, a third of the TTL apart, for as long as the
    /// node runs. `apps` holds each app's namespace and cache namespace: a channel in either is
    /// the app's, indexed under its namespace.
    pub(crate) async fn refresh(self: Arc<Self>, node: Node, apps: Vec<(String, String)>) {
        let mut ticker = tokio::time::interval(self.ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if node.is_draining() {
                return;
            }
            let channels = node.channels();
            for native in &channels {
                let Some((ns, _)) = native.split_once(':') else {
                    continue;
                };
                if let Some((namespace, _)) = apps.iter().find(|(n, cache)| n == ns || cache == ns)
                {
                    self.add(namespace, native).await;
                }
            }
        }
    }
}

/// Whether the channel has no subscription left on any node (after one left it here).
pub(crate) async fn vacated(node: &Node, native: &str) -> bool {
    node.presence_stats(native)
        .await
        .is_ok_and(|stats| stats.num_clients == 0)
}

/// Whether this node's new subscription is the channel's only one on every node.
pub(crate) async fn just_occupied(node: &Node, native: &str) -> bool {
    node.presence_stats(native)
        .await
        .is_ok_and(|stats| stats.num_clients == 1)
}
