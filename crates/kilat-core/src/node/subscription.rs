//! The subscription lifecycle on the node's side: join the hub and the engine, position and go
//! live, leave (the engine channel too when the last local subscriber goes), presence and
//! join/leave around it. Sessions and server-side subscriptions both go through here.

use std::time::Duration;

use kilat_protocol::reply::SubscribeResult;
use kilat_protocol::{ClientInfo, SharedFrame};

use super::Node;
use crate::config::NamespaceOptions;
use crate::engine::JoinLeave;
use crate::error::CoreError;
use crate::hub::{Conflate, GoLive, Windows};
use crate::outbox::Outbox;
use crate::recovery::{Recovery, outcome};
use crate::subscriptions::SubState;

/// A subscription prepared by [`Node::prepare_subscribe`]: joined (buffering) and positioned.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) result: SubscribeResult,
}

impl Node {
    /// Joins `channel` for session `key`: adds a buffering subscriber to the hub, subscribes the
    /// node in the broker, then reads the position (and the publications to recover). The
    /// caller sends the reply through [`Node::go_live`]; until then live publications are held.
    pub(crate) async fn prepare_subscribe(
        &self,
        channel: &str,
        key: u64,
        outbox: &Outbox,
        ns: &NamespaceOptions,
        join_leave: bool,
        recovery: &Recovery,
    ) -> Result<Prepared, CoreError> {
        let recoverable = ns.has_history();
        let windows = Windows {
            conflate: (ns.conflate_ms > 0).then(|| Conflate {
                length: Duration::from_millis(ns.conflate_ms),
                key: ns.conflate_key.as_deref().map(Box::from),
            }),
            presence_diff: (ns.join_leave && ns.presence_diff_ms > 0)
                .then(|| Duration::from_millis(ns.presence_diff_ms)),
            presence_diff_max: ns.presence_diff_max,
        };
        self.inner.hub.add(
            channel,
            key,
            outbox.clone(),
            join_leave,
            recoverable,
            windows,
        );
        let read = async {
            // Every time, not only for the first local subscriber: the engine call is
            // idempotent, and a concurrent first subscriber may not have finished it yet.
            self.inner.broker.subscribe(channel).await?;
            if !recoverable {
                return Ok(SubscribeResult::default());
            }
            let page = self.read_history(channel, recovery.query()).await?;
            let mut result = outcome(recovery, page);
            if ns.latest && !result.recovered {
                // The latest value of every key instead, positioned atomically with them:
                // live publications above the position follow without a gap.
                let latest = self.inner.broker.latest(channel).await?;
                result.epoch = latest.position.epoch;
                result.offset = latest.position.offset;
                result.publications = latest.publications;
                result.latest = true;
            }
            Ok::<_, CoreError>(result)
        };
        match read.await {
            Ok(result) => Ok(Prepared { result }),
            Err(error) => {
                self.remove_subscriber(channel, key).await;
                Err(error)
            }
        }
    }

    /// Turns session `key`'s prepared subscription to `channel` into a `delta: "fossil"` one
    /// (the caller checked that the namespace keeps history): live publications from now on go
    /// out in the delta form, the ones held while joining stay plain.
    pub(crate) fn enable_delta(&self, channel: &str, key: u64) {
        self.inner.hub.enable_delta(channel, key);
    }

    /// Sends `prefix` (the reply) then the publications held since `prepare_subscribe`, and
    /// turns the subscriber live at the prepared position.
    pub(crate) fn go_live(
        &self,
        channel: &str,
        key: u64,
        prefix: Option<SharedFrame>,
        result: &SubscribeResult,
    ) -> bool {
        self.inner
            .hub
            .go_live(channel, key, prefix, result.offset, &result.epoch)
            == GoLive::Live
    }

    /// Whether session `key` still holds its subscription to `channel` (a lost position removes
    /// it from the hub with an `unsubscribe` push).
    pub(crate) fn is_subscribed(&self, channel: &str, key: u64) -> bool {
        self.inner.hub.contains(channel, key)
    }

    /// Removes a subscriber from the hub, unsubscribing the node in the engine when it was the
    /// last local one.
    pub(crate) async fn remove_subscriber(&self, channel: &str, key: u64) {
        if self.inner.hub.remove(channel, key) {
            self.leave_engine_channel(channel).await;
        }
    }

    /// Unsubscribes the node in the engine from a channel its last local subscriber left.
    pub(crate) async fn leave_engine_channel(&self, channel: &str) {
        if let Err(error) = self.inner.broker.unsubscribe(channel).await {
            tracing::warn!(%error, channel, "engine unsubscribe failed");
        }
        // A subscriber may have arrived while the engine call ran: keep the node joined.
        if !self.inner.hub.channel_names_contains(channel) {
            return;
        }
        if let Err(error) = self.inner.broker.subscribe(channel).await {
            tracing::warn!(%error, channel, "engine resubscribe failed");
        }
    }

    /// Ends session `key`'s subscription to `channel` from a synchronous timer: out of the hub
    /// at once, then the engine unsubscribe, presence removal and leave in a task. Presence
    /// and leave are skipped when the session subscribed again meanwhile.
    pub(crate) fn end_subscription(
        &self,
        channel: &str,
        key: u64,
        info: ClientInfo,
        state: SubState,
    ) {
        let emptied = self.inner.hub.remove(channel, key);
        let node = self.clone();
        let channel = channel.to_owned();
        self.spawn(async move {
            if emptied {
                node.leave_engine_channel(&channel).await;
            }
            if !node.is_subscribed(&channel, key) {
                node.after_leave(&channel, &info, state).await;
            }
        });
    }

    /// Removes a subscriber from the hub without the engine calls (for `Drop`).
    pub(crate) fn remove_subscriber_now(&self, channel: &str, key: u64) {
        self.inner.hub.remove(channel, key);
    }

    /// Publishes a join or leave event, logging failures (they never fail a command).
    pub(crate) async fn publish_join_leave(
        &self,
        channel: &str,
        info: &ClientInfo,
        kind: JoinLeave,
    ) {
        if let Err(error) = self
            .inner
            .broker
            .publish_join_leave(channel, info.clone(), kind)
            .await
        {
            tracing::warn!(%error, channel, "join/leave publish failed");
        }
    }

    /// Presence and join after a subscription went live, unless session `key` has left the
    /// channel meanwhile (a server-side subscribe racing the session's close): checked under
    /// the client's presence lock, which the leave also takes (see `presence_order.rs`).
    pub(crate) async fn after_join(
        &self,
        channel: &str,
        key: u64,
        info: &ClientInfo,
        state: SubState,
    ) {
        if !state.presence && !state.join_leave {
            return;
        }
        {
            // Only the presence write holds the lock (bounded by the engine's timeout), not the
            // join publish: a publish stuck on a lost pub/sub connection must not stall the
            // presence of every client in the stripe.
            let _order = self.inner.presence_order.lock(&info.client).await;
            if !self.is_subscribed(channel, key) {
                return;
            }
            if state.presence {
                let ttl = self.config().presence_ttl;
                if let Err(error) = self.inner.presence.add(channel, info.clone(), ttl).await {
                    tracing::warn!(%error, channel, "presence add failed");
                }
            }
        }
        if state.join_leave {
            self.publish_join_leave(channel, info, JoinLeave::Join)
                .await;
        }
    }

    /// Re-adds session `key`'s presence entry in `channel` (a refresh the store did not find
    /// as it was, `refresh.rs`). Skipped if the session left the channel since: the check runs
    /// under the client's presence lock, so a leave either came first (the hub no longer holds
    /// the subscription) or removes the entry after.
    pub(crate) async fn readd_presence(&self, channel: &str, key: u64, info: &ClientInfo) {
        let _order = self.inner.presence_order.lock(&info.client).await;
        if !self.is_subscribed(channel, key) {
            return;
        }
        let ttl = self.config().presence_ttl;
        if let Err(error) = self.inner.presence.add(channel, info.clone(), ttl).await {
            tracing::warn!(%error, channel, "presence refresh failed");
        }
    }

    /// Presence removal and leave after a subscription ended (the caller removed it from the
    /// hub first), under the client's presence lock (see `presence_order.rs`).
    pub(crate) async fn after_leave(&self, channel: &str, info: &ClientInfo, state: SubState) {
        if state.presence {
            let _order = self.inner.presence_order.lock(&info.client).await;
            if let Err(error) = self.inner.presence.remove(channel, &info.client).await {
                tracing::warn!(%error, channel, "presence remove failed");
            }
        }
        if state.join_leave {
            self.publish_join_leave(channel, info, JoinLeave::Leave)
                .await;
        }
    }
}
