//! What the admin API reads and does beyond the server API: the connections of this node with
//! their subscriptions, disconnecting one by client id, and watching a channel's publications.

use std::time::Duration;

use kilat_protocol::Disconnect;
use serde::Serialize;

use super::Node;
use super::registry::SessionEntry;
use crate::error::CoreError;
use crate::outbox::Outbox;
use crate::recovery::Recovery;
use crate::util::lock;

/// One connection of this node, as the admin console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionSummary {
    /// The connection id on this node (the `id` of its log lines).
    pub id: u64,
    /// The client id; `None` until the connection has sent `connect`.
    pub client: Option<String>,
    /// The user id (`""` for an anonymous connection); `None` until connected.
    pub user: Option<String>,
    /// `websocket`, `sse`, `http_stream`, ...
    pub transport: &'static str,
    /// Seconds since the connection opened.
    pub age_s: u64,
    /// Channels it is subscribed to on this node.
    pub subscriptions: Vec<String>,
    /// Bytes waiting in its outbound queue.
    pub queued_bytes: usize,
}

/// A matching session while the list is built: key, transport, age, (client, user), outbox.
type Found = (
    u64,
    &'static str,
    Duration,
    Option<(String, String)>,
    Outbox,
);

/// Most connections one [`Node::connections`] call returns.
const CONNECTIONS_MAX: usize = 200;

impl Node {
    /// This node's connections whose user or client id contains `search` (all when empty),
    /// oldest first, at most `limit` (capped at [`CONNECTIONS_MAX`]).
    pub fn connections(&self, search: &str, limit: usize) -> Vec<ConnectionSummary> {
        let limit = limit.min(CONNECTIONS_MAX);
        let mut found: Vec<Found> = Vec::new();
        for shard in self.sessions().shards() {
            for (key, entry) in lock(shard).iter() {
                let SessionEntry {
                    outbox,
                    identity,
                    transport,
                    started_s,
                    ..
                } = entry;
                let ids = identity
                    .as_ref()
                    .map(|info| (info.client.clone(), info.user.clone()));
                let matches = search.is_empty()
                    || ids.as_ref().is_some_and(|(client, user)| {
                        client.contains(search) || user.contains(search)
                    });
                if matches {
                    found.push((
                        *key,
                        self.sessions().transport_name(*transport),
                        self.sessions().age(*started_s),
                        ids,
                        outbox.clone(),
                    ));
                }
            }
        }
        found.sort_by_key(|(key, ..)| *key);
        found.truncate(limit);
        let channels = if found.is_empty() {
            Vec::new()
        } else {
            self.inner.hub.channel_names()
        };
        found
            .into_iter()
            .map(|(key, transport, age, ids, outbox)| {
                let (client, user) = ids.unzip();
                ConnectionSummary {
                    id: key,
                    client,
                    user,
                    transport,
                    age_s: age.as_secs(),
                    subscriptions: channels
                        .iter()
                        .filter(|channel| self.inner.hub.contains(channel, key))
                        .cloned()
                        .collect(),
                    queued_bytes: outbox.queued_bytes(),
                }
            })
            .collect()
    }

    /// Subscribers of `channel` on this node (a console live tail watching it counts as one).
    pub fn local_subscribers(&self, channel: &str) -> usize {
        self.inner.hub.subscriber_count(channel)
    }

    /// Channels and subscriptions on this node summed by `group(channel)` (e.g. its namespace),
    /// for per-namespace gauges at scrape time: `(group, channels, subscriptions)`.
    pub fn channels_by<K: Ord>(&self, group: impl Fn(&str) -> K) -> Vec<(K, usize, usize)> {
        let mut sums = std::collections::BTreeMap::<K, (usize, usize)>::new();
        self.inner.hub.for_each_channel(|name, subscribers| {
            let entry = sums.entry(group(name)).or_default();
            entry.0 += 1;
            entry.1 += subscribers;
        });
        sums.into_iter().map(|(k, (c, s))| (k, c, s)).collect()
    }

    /// The connections of this node the server API's `send` reaches: every connection of
    /// `user`, or only the one whose client id is `client` (both given: that connection, when
    /// it is `user`'s). Each with its client id, transport name and outbox.
    pub fn message_targets(
        &self,
        user: Option<&str>,
        client: Option<&str>,
    ) -> Vec<(String, &'static str, Outbox)> {
        let mut found: Vec<(String, u8, Outbox)> = Vec::new();
        if user.is_none() && client.is_none() {
            return Vec::new();
        }
        let sessions = self.sessions();
        for shard in sessions.shards() {
            for entry in lock(shard).values() {
                let Some(info) = &entry.identity else {
                    continue;
                };
                if user.is_none_or(|u| u == info.user) && client.is_none_or(|c| c == info.client) {
                    found.push((info.client.clone(), entry.transport, entry.outbox.clone()));
                }
            }
        }
        found
            .into_iter()
            .map(|(client, transport, outbox)| (client, sessions.transport_name(transport), outbox))
            .collect()
    }

    /// Closes the connection whose client id is `client` with `disconnect`; returns how many
    /// were closed (0 or 1: client ids are unique).
    pub fn disconnect_client(&self, client: &str, disconnect: Disconnect) -> usize {
        let mut closed = 0;
        for shard in self.sessions().shards() {
            for entry in lock(shard).values() {
                if entry
                    .identity
                    .as_ref()
                    .is_some_and(|info| info.client == client)
                {
                    entry.outbox.close(disconnect.clone());
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Starts receiving `channel`'s publications from now on, like a subscriber that asked for
    /// no recovery and no join/leave, whatever the namespace's permissions (for the admin
    /// console's live tail). Frames wait in `Watch::outbox`, bounded like a client's queue.
    ///
    /// # Errors
    /// When the channel's namespace does not exist or the engine cannot subscribe.
    pub async fn watch(&self, channel: &str) -> Result<Watch, CoreError> {
        let ns = self
            .config()
            .namespace_options(channel)
            .ok_or(CoreError::NotFound(
                "the channel's namespace does not exist",
            ))?;
        let outbox = Outbox::new(self.config().client_queue_max_bytes);
        let key = self.sessions().register(&outbox, "admin");
        let watch = Watch {
            node: self.clone(),
            key,
            channel: channel.to_owned(),
            outbox,
        };
        let prepared = self
            .prepare_subscribe(channel, key, &watch.outbox, &ns, false, &Recovery::None)
            .await?;
        self.go_live(channel, key, None, &prepared.result);
        Ok(watch)
    }
}

/// A channel watched by [`Node::watch`]; dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    node: Node,
    key: u64,
    channel: String,
    /// Where the channel's publication pushes arrive (the same frames subscribers get).
    pub outbox: Outbox,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.node.sessions().unregister(self.key);
        let emptied = self.node.inner.hub.remove(&self.channel, self.key);
        if emptied {
            let node = self.node.clone();
            let channel = std::mem::take(&mut self.channel);
            self.node
                .spawn(async move { node.leave_engine_channel(&channel).await });
        }
    }
}
