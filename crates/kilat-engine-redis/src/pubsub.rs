//! The node's pub/sub connections: which channels it listens to, and delivery to the hub.
//!
//! Channels are spread over `pubsub_shards` dedicated connections by a hash of their name.
//! Each [`Shard`] has a [`ShardTask`] that owns the connection's message stream: it delivers
//! messages to the hub in the order Redis sent them (one channel lives on one connection, so
//! per-channel order is kept), pings the connection when idle, and on loss reconnects with
//! backoff and resubscribes the shard's channels in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use kilat_core::engine::{BrokerHandler, HistoryQuery};
use redis::aio::{PubSubSink, PubSubStream};

use crate::codec::{self, Message};
use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::engine::read_history;
use crate::error::{RedisEngineError, bounded};
use crate::keys::{channel_of_pubsub, pubsub_channel};

/// Where the hub's handler lives once the hub installs it; shared with every shard task.
pub(crate) type HandlerSlot = Arc<OnceLock<Arc<dyn BrokerHandler>>>;

/// Locks `mutex`, ignoring poisoning (this crate's one lock helper).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent; a panic elsewhere must not wedge us.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decodes a message of pub/sub channel `name` and hands it to `handler`.
pub(crate) fn dispatch(handler: &dyn BrokerHandler, prefix: &str, name: &str, payload: &[u8]) {
    let Some(channel) = channel_of_pubsub(prefix, name) else {
        return;
    };
    match codec::decode(payload) {
        Ok(Message::Publication { publication, epoch }) => {
            handler.on_publication(channel, &publication, &epoch);
        }
        Ok(Message::JoinLeave { info, join }) => handler.on_join_leave(channel, &info, join),
        Err(error) => {
            tracing::warn!(channel, %error, "dropping malformed redis pub/sub message");
        }
    }
}

/// One pub/sub connection's state, shared by the engine (subscribe/unsubscribe) and its task.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Index among the shards, for logs and errors.
    index: usize,
    /// The connection's command half, `None` while reconnecting. The async mutex also
    /// serializes SUBSCRIBE/UNSUBSCRIBE and resubscription on this connection, so the
    /// `channels` map and Redis agree.
    link: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Channels this node wants on this connection (kilat names), each mapped to whether
    /// Redis confirmed the SUBSCRIBE on the current connection. Read without `link` by the
    /// fast path of `subscribe` (the hub calls it for every client subscription).
    channels: Mutex<HashMap<String, bool>>,
    /// Connections re-established after a loss, for [`crate::RedisEngine::pubsub_reconnects`].
    reconnects: AtomicU64,
}

impl Shard {
    pub(crate) fn new(index: usize, sink: PubSubSink) -> Self {
        Shard {
            index,
            link: tokio::sync::Mutex::new(Some(sink)),
            channels: Mutex::new(HashMap::new()),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Subscribes the node to `channel`; returns once Redis confirmed it.
    pub(crate) async fn subscribe(
        &self,
        config: &RedisConfig,
        channel: &str,
    ) -> Result<(), RedisEngineError> {
        if lock(&self.channels).get(channel) == Some(&true) {
            return Ok(());
        }
        let mut link = bounded(config.command_timeout, async {
            Ok::<_, RedisEngineError>(self.link.lock().await)
        })
        .await?;
        {
            let mut channels = lock(&self.channels);
            // A concurrent call may have finished the job while we waited for `link`.
            if channels.get(channel) == Some(&true) {
                return Ok(());
            }
            // Wanted from now on, even if this attempt fails: the hub calls `unsubscribe` when
            // its last local subscriber leaves, and a reconnect subscribes what is still wanted.
            channels.insert(channel.to_owned(), false);
        }
        let sink = link
            .as_mut()
            .ok_or(RedisEngineError::NotConnected(self.index))?;
        let name = pubsub_channel(&config.key_prefix, channel);
        bounded(config.command_timeout, sink.subscribe(&name)).await?;
        lock(&self.channels).insert(channel.to_owned(), true);
        Ok(())
    }

    /// Unsubscribes the node from `channel`.
    pub(crate) async fn unsubscribe(
        &self,
        config: &RedisConfig,
        channel: &str,
    ) -> Result<(), RedisEngineError> {
        let mut link = bounded(config.command_timeout, async {
            Ok::<_, RedisEngineError>(self.link.lock().await)
        })
        .await?;
        if lock(&self.channels).remove(channel).is_none() {
            return Ok(());
        }
        // Without a connection there is nothing to undo: the reconnect skips this channel.
        let Some(sink) = link.as_mut() else {
            return Ok(());
        };
        let name = pubsub_channel(&config.key_prefix, channel);
        bounded(config.command_timeout, sink.unsubscribe(&name)).await
    }

    /// Channels wanted on this shard (for tests and stats).
    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.channels).len()
    }

    /// Reconnects so far.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

/// The long-lived task of one shard: delivery, liveness pings, reconnects.
pub(crate) struct ShardTask {
    /// The state shared with the engine.
    pub(crate) shard: Arc<Shard>,
    /// The current connection's message half (the sink is in `shard.link`).
    pub(crate) stream: PubSubStream,
    /// A clone of the current sink, for pings without taking the `link` lock.
    pub(crate) pinger: PubSubSink,
    /// Where messages go.
    pub(crate) handler: HandlerSlot,
    /// Connection settings.
    pub(crate) config: Arc<RedisConfig>,
    /// For new connections.
    pub(crate) client: redis::Client,
    /// For history reads when catching up after a reconnect.
    pub(crate) commands: Conn,
    /// Last offset (and its epoch) delivered per channel with history: drops duplicates and
    /// tells a reconnect where to catch up from. Pruned of unwanted channels on every ping.
    pub(crate) delivered: HashMap<String, (u64, String)>,
}

impl std::fmt::Debug for ShardTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardTask")
            .field("shard", &self.shard.index)
            .finish_non_exhaustive()
    }
}

impl ShardTask {
    /// Runs until the engine aborts it (when the engine is dropped).
    pub(crate) async fn run(mut self) {
        loop {
            self.deliver_until_lost().await;
            {
                let mut link = self.shard.link.lock().await;
                *link = None;
                for confirmed in lock(&self.shard.channels).values_mut() {
                    *confirmed = false;
                }
            }
            tracing::warn!(shard = self.shard.index, "redis pub/sub connection lost");
            self.reconnect().await;
            self.catch_up().await;
        }
    }

    /// Delivers messages until the connection ends or stops answering pings.
    async fn deliver_until_lost(&mut self) {
        let mut ping = tokio::time::interval(self.config.pubsub_ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            // Wakes on: a message from Redis (or the end of the connection), or the ping
            // timer (no message for a while: check the peer is still there).
            tokio::select! {
                message = self.stream.next() => {
                    let Some(message) = message else { return };
                    ping.reset();
                    self.dispatch(&message);
                }
                _ = ping.tick() => {
                    self.prune_delivered();
                    // In subscribed mode the reply is `["pong", ""]`, not `PONG`: take any value.
                    let pong =
                        bounded(self.config.command_timeout, self.pinger.ping::<redis::Value>());
                    if let Err(error) = pong.await {
                        tracing::warn!(shard = self.shard.index, %error, "redis pub/sub ping failed");
                        return;
                    }
                }
            }
        }
    }

    fn dispatch(&mut self, message: &redis::Msg) {
        let Some(handler) = self.handler.get() else {
            return;
        };
        let Some(channel) = channel_of_pubsub(&self.config.key_prefix, message.get_channel_name())
        else {
            return;
        };
        match codec::decode(message.get_payload_bytes()) {
            Ok(Message::Publication { publication, epoch }) => {
                if let Some(offset) = publication.offset {
                    match self.delivered.get_mut(channel) {
                        Some((last, e)) if *e == epoch => {
                            if offset <= *last {
                                // Already delivered by the catch-up after a reconnect.
                                return;
                            }
                            *last = offset;
                        }
                        _ => {
                            self.delivered
                                .insert(channel.to_owned(), (offset, epoch.clone()));
                        }
                    }
                }
                handler.on_publication(channel, &publication, &epoch);
            }
            Ok(Message::JoinLeave { info, join }) => handler.on_join_leave(channel, &info, join),
            Err(error) => {
                tracing::warn!(channel, %error, "dropping malformed redis pub/sub message");
            }
        }
    }

    /// Forgets positions of channels this node no longer wants.
    fn prune_delivered(&mut self) {
        let channels = lock(&self.shard.channels);
        self.delivered.retain(|c, _| channels.contains_key(c));
    }

    /// After a reconnect (channels already resubscribed, so nothing published from now on is
    /// missed): delivers from history what was published while the connection was down, for
    /// every channel whose stream kept its epoch. Messages already queued on the new
    /// connection that this covers are then dropped as duplicates by [`Self::dispatch`].
    /// When the history no longer reaches back far enough the hub sees the offset jump; when
    /// the epoch changed it sees the new epoch on the next publication.
    async fn catch_up(&mut self) {
        self.prune_delivered();
        let Some(handler) = self.handler.get().cloned() else {
            return;
        };
        let positions: Vec<(String, u64, String)> = self
            .delivered
            .iter()
            .map(|(c, (o, e))| (c.clone(), *o, e.clone()))
            .collect();
        for (channel, last, epoch) in positions {
            let query = HistoryQuery {
                since: Some(last),
                limit: None,
                reverse: false,
            };
            match read_history(&self.commands, &self.config, &channel, query).await {
                Ok(page) if page.position.epoch == epoch => {
                    for publication in &page.publications {
                        handler.on_publication(&channel, publication, &epoch);
                    }
                    if let Some(top) = page.publications.last().and_then(|p| p.offset) {
                        self.delivered.insert(channel, (top, epoch));
                    }
                }
                Ok(_) => {
                    self.delivered.remove(&channel);
                }
                Err(error) => {
                    tracing::warn!(channel, %error, "catch-up from history after reconnect failed");
                }
            }
        }
    }

    /// Reconnects with backoff and resubscribes every wanted channel; returns once the
    /// connection is back and `shard.link` is set.
    async fn reconnect(&mut self) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.try_reconnect().await {
                Ok(()) => {
                    self.shard.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(shard = self.shard.index, "redis pub/sub reconnected");
                    return;
                }
                Err(error) => {
                    tracing::debug!(shard = self.shard.index, %error, ?delay, "redis pub/sub reconnect failed");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.reconnect_max_delay);
        }
    }

    async fn try_reconnect(&mut self) -> Result<(), RedisEngineError> {
        let pubsub = bounded(self.config.connect_timeout, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        // Under `link`: no subscribe/unsubscribe can run between the snapshot and the install.
        let mut link = self.shard.link.lock().await;
        let wanted: Vec<String> = lock(&self.shard.channels).keys().cloned().collect();
        for batch in wanted.chunks(self.config.resubscribe_batch.max(1)) {
            let names: Vec<String> = batch
                .iter()
                .map(|c| pubsub_channel(&self.config.key_prefix, c))
                .collect();
            bounded(self.config.command_timeout, sink.subscribe(&names)).await?;
        }
        for confirmed in lock(&self.shard.channels).values_mut() {
            *confirmed = true;
        }
        self.pinger = sink.clone();
        *link = Some(sink);
        self.stream = stream;
        Ok(())
    }
}
