//! [`RedisEngine`]: the [`Broker`] and [`PresenceStore`] implementations.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kilat_core::engine::{
    BoxFuture, Broker, BrokerHandler, EngineError, HistoryPage, HistoryQuery, JoinLeave, Latest,
    PresencePage, PresenceStats, PresenceStore, PublishOptions, shard_of,
};
use kilat_core::new_epoch;
use kilat_protocol::{ClientInfo, Publication, StreamPosition};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::task::JoinHandle;

use crate::cluster::{ClusterSubscriptions, InboxSlot, push_handler};
use crate::codec;
use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::error::{RedisEngineError, bounded};
use crate::keys::ChannelKeys;
use crate::owners::{OwnerSlot, owned_key};
use crate::pubsub::{HandlerSlot, Shard, ShardTask};
use crate::scripts::{
    HISTORY_SCRIPT, LATEST_SCRIPT, PRESENCE_ADD_SCRIPT, PRESENCE_LIST_SCRIPT, PRESENCE_PAGE_SCRIPT,
    PRESENCE_REMOVE_SCRIPT, PRESENCE_STATS_SCRIPT, PRESENCE_TOUCH_SCRIPT, PUBLISH_LATEST_SCRIPT,
    PUBLISH_SCRIPT,
};

/// The Redis engine: one value implements both [`Broker`] and [`PresenceStore`]; share it as
/// `Arc<RedisEngine>` and coerce to `Arc<dyn Broker>` / `Arc<dyn PresenceStore>`.
///
/// Dropping the last handle stops its background tasks and closes its connections.
pub struct RedisEngine {
    /// Settings, shared with the pub/sub tasks.
    config: Arc<RedisConfig>,
    /// Commands and scripts (publish, history, presence). Multiplexed, reconnects on its own;
    /// every call through it is bounded by `command_timeout`.
    commands: Conn,
    /// Publications only (the publish scripts and unstored `PUBLISH`es), on a connection of
    /// their own with a single Redis, so they never queue behind the handshake work of a
    /// reconnect storm (recovery reads, presence adds, joins) pipelined on `commands`: a
    /// multiplexed connection answers in order, and with thousands of recovery reads ahead of
    /// it a publish used to exceed `command_timeout` (docs/reliability.md, the reconnect
    /// storm). In cluster mode the same cluster connection as `commands`.
    publishes: Conn,
    /// How this node listens to channels.
    subscriptions: Subscriptions,
    /// The hub's handler, read by the pub/sub tasks.
    handler: HandlerSlot,
    /// The node inbox on a cluster, read by the push callback (see `inbox.rs`).
    pub(crate) cluster_inbox: InboxSlot,
    /// The pub/sub tasks, aborted on drop.
    tasks: Vec<JoinHandle<()>>,
    /// The node owning this engine's presence entries (see `owners.rs`).
    pub(crate) owners: OwnerSlot,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The node's channel subscriptions.
enum Subscriptions {
    /// Single Redis: dedicated pub/sub connections, indexed by [`shard_of`] the channel name.
    Shards(Box<[Arc<Shard>]>),
    /// Redis Cluster: sharded pub/sub on the cluster connection.
    Cluster {
        /// The cluster connection (a clone of the one in `commands`).
        conn: ClusterConnection,
        /// What this node subscribed to.
        channels: ClusterSubscriptions,
    },
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisEngine {
    /// Connects to Redis: the command connection and every pub/sub connection, then starts
    /// the pub/sub tasks. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the URL is invalid, the configuration unusable, or Redis cannot be reached within
    /// `connect_timeout` (later outages are survived by reconnecting).
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisEngineError> {
        if config.pubsub_shards == 0 {
            return Err(RedisEngineError::Config("pubsub_shards must be at least 1"));
        }
        let config = Arc::new(config);
        let handler: HandlerSlot = Arc::new(OnceLock::new());
        if !config.cluster_nodes.is_empty() {
            return Self::connect_cluster(config, handler).await;
        }
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.reconnect_max_delay);
        let commands = bounded(
            config.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config.clone()),
        )
        .await?;
        let publishes = bounded(
            config.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await?;
        let mut shards = Vec::with_capacity(config.pubsub_shards);
        let mut tasks = Vec::with_capacity(config.pubsub_shards);
        for index in 0..config.pubsub_shards {
            let pubsub = bounded(config.connect_timeout, client.get_async_pubsub()).await?;
            let (sink, stream) = pubsub.split();
            let shard = Arc::new(Shard::new(index, sink.clone()));
            let task = ShardTask {
                shard: shard.clone(),
                stream,
                pinger: sink,
                handler: handler.clone(),
                config: config.clone(),
                client: client.clone(),
                commands: Conn::Single(commands.clone()),
                delivered: HashMap::new(),
            };
            tasks.push(tokio::spawn(task.run()));
            shards.push(shard);
        }
        Ok(RedisEngine {
            config,
            commands: Conn::Single(commands),
            publishes: Conn::Single(publishes),
            subscriptions: Subscriptions::Shards(shards.into_boxed_slice()),
            handler,
            cluster_inbox: InboxSlot::default(),
            tasks,
            owners: OwnerSlot::default(),
        })
    }

    async fn connect_cluster(
        config: Arc<RedisConfig>,
        handler: HandlerSlot,
    ) -> Result<Self, RedisEngineError> {
        let cluster_inbox = InboxSlot::default();
        let client = redis::cluster::ClusterClientBuilder::new(config.cluster_nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_handler(
                handler.clone(),
                cluster_inbox.clone(),
                config.clone(),
            ))
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.command_timeout)
            .max_retry_wait(
                u64::try_from(config.reconnect_max_delay.as_millis()).unwrap_or(u64::MAX),
            )
            .build()?;
        let conn = bounded(config.connect_timeout, client.get_async_connection()).await?;
        Ok(RedisEngine {
            config,
            commands: Conn::Cluster(conn.clone()),
            publishes: Conn::Cluster(conn.clone()),
            subscriptions: Subscriptions::Cluster {
                conn,
                channels: ClusterSubscriptions::default(),
            },
            handler,
            cluster_inbox,
            tasks: Vec::new(),
            owners: OwnerSlot::default(),
        })
    }

    /// A handle on the command connection.
    pub(crate) fn commands(&self) -> Conn {
        self.commands.clone()
    }

    /// The cluster connection, in cluster mode.
    pub(crate) fn cluster_connection(&self) -> Option<&ClusterConnection> {
        match &self.subscriptions {
            Subscriptions::Cluster { conn, .. } => Some(conn),
            Subscriptions::Shards(_) => None,
        }
    }

    /// The settings this engine runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// How many channels this node is subscribed to in Redis.
    pub fn subscribed_channels(&self) -> usize {
        match &self.subscriptions {
            Subscriptions::Shards(shards) => shards.iter().map(|s| s.channel_count()).sum(),
            Subscriptions::Cluster { channels, .. } => channels.channel_count(),
        }
    }

    /// Runs one command, bounded by `command_timeout`.
    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisEngineError> {
        let mut conn = self.commands.clone();
        bounded(self.config.command_timeout, cmd.query_async(&mut conn)).await
    }

    /// How often the pub/sub connections were re-established after a loss (all shards).
    /// (Always 0 in cluster mode, where the cluster client reconnects internally.)
    pub fn pubsub_reconnects(&self) -> u64 {
        match &self.subscriptions {
            Subscriptions::Shards(shards) => shards.iter().map(|s| s.reconnects()).sum(),
            Subscriptions::Cluster { .. } => 0,
        }
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster (sharded pub/sub).
    pub(crate) fn publish_command(&self) -> &'static str {
        match self.commands {
            Conn::Single(_) => "PUBLISH",
            Conn::Cluster(_) => "SPUBLISH",
        }
    }

    fn keys(&self, channel: &str) -> ChannelKeys {
        ChannelKeys::new(&self.config.key_prefix, channel)
    }

    async fn subscribe_inner(&self, channel: &str) -> Result<(), RedisEngineError> {
        match &self.subscriptions {
            Subscriptions::Shards(shards) => {
                let shard = &shards[shard_of(channel, shards.len())];
                shard.subscribe(&self.config, channel).await
            }
            Subscriptions::Cluster { conn, channels } => {
                channels.subscribe(conn, &self.config, channel).await
            }
        }
    }

    async fn unsubscribe_inner(&self, channel: &str) -> Result<(), RedisEngineError> {
        match &self.subscriptions {
            Subscriptions::Shards(shards) => {
                let shard = &shards[shard_of(channel, shards.len())];
                shard.unsubscribe(&self.config, channel).await
            }
            Subscriptions::Cluster { conn, channels } => {
                channels.unsubscribe(conn, &self.config, channel).await
            }
        }
    }

    async fn publish_inner(
        &self,
        channel: &str,
        mut publication: Publication,
        options: PublishOptions,
    ) -> Result<Option<StreamPosition>, RedisEngineError> {
        // The offset travels beside the JSON (it is assigned inside the script).
        publication.offset = None;
        let json = codec::encode_stored(&publication)?;
        let keys = self.keys(channel);
        let mut conn = self.publishes.clone();
        if options.history_size == 0 || options.history_ttl.is_zero() {
            let message = codec::encode_unstored(&json);
            let mut publish = redis::cmd(self.publish_command());
            publish.arg(&keys.pubsub).arg(message);
            bounded::<i64, _>(self.config.command_timeout, publish.query_async(&mut conn)).await?;
            return Ok(None);
        }
        let invocation = self.publish_invocation(&PUBLISH_SCRIPT, &keys, json, &options);
        let (offset, epoch): (u64, String) = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(Some(StreamPosition { offset, epoch }))
    }

    /// The keys and arguments both publish scripts start with: the channel's meta and stream
    /// keys, then its pub/sub channel, the stored JSON, the history size and TTL, the meta TTL,
    /// a fresh epoch (used when the stream is new) and the publish command to use.
    fn publish_invocation<'a>(
        &self,
        script: &'a redis::Script,
        keys: &ChannelKeys,
        json: Vec<u8>,
        options: &PublishOptions,
    ) -> redis::ScriptInvocation<'a> {
        let meta_ttl = self.config.meta_ttl.max(options.history_ttl);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(&keys.pubsub)
            .arg(json)
            .arg(options.history_size)
            .arg(millis(options.history_ttl))
            .arg(millis(meta_ttl))
            .arg(new_epoch())
            .arg(self.publish_command());
        invocation
    }

    async fn publish_latest_inner(
        &self,
        channel: &str,
        mut publication: Publication,
        options: PublishOptions,
        key: &str,
        max_keys: usize,
    ) -> Result<(Option<StreamPosition>, Latest), RedisEngineError> {
        if options.history_size == 0 || options.history_ttl.is_zero() {
            let position = self.publish_inner(channel, publication, options).await?;
            return Ok((position, Latest::Unstored));
        }
        publication.offset = None;
        let json = codec::encode_stored(&publication)?;
        let keys = self.keys(channel);
        let mut conn = self.publishes.clone();
        let mut invocation = self.publish_invocation(&PUBLISH_LATEST_SCRIPT, &keys, json, &options);
        invocation.key(&keys.latest).arg(key).arg(max_keys);
        let (offset, epoch, kept): (u64, String, u8) = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let kept = if kept == 1 {
            Latest::Kept
        } else {
            Latest::Full
        };
        Ok((Some(StreamPosition { offset, epoch }), kept))
    }

    async fn latest_inner(&self, channel: &str) -> Result<HistoryPage, RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = LATEST_SCRIPT.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stream)
            .key(&keys.latest)
            .arg(new_epoch())
            .arg(millis(self.config.meta_ttl));
        let (epoch, top, items): (String, u64, Vec<Vec<u8>>) = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let mut publications = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks_exact(2) {
            let offset = std::str::from_utf8(&pair[0])
                .ok()
                .and_then(|o| o.parse::<u64>().ok())
                .ok_or(RedisEngineError::Malformed("latest value offset"))?;
            let mut publication = codec::decode_stored(&pair[1])?;
            publication.offset = Some(offset);
            publications.push(publication);
        }
        publications.sort_unstable_by_key(|p| p.offset);
        Ok(HistoryPage {
            publications,
            position: StreamPosition { offset: top, epoch },
        })
    }

    async fn history_inner(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, RedisEngineError> {
        read_history(&self.commands, &self.config, channel, query).await
    }

    async fn remove_history_inner(&self, channel: &str) -> Result<(), RedisEngineError> {
        let keys = self.keys(channel);
        let mut del = redis::cmd("DEL");
        del.arg(&keys.meta).arg(&keys.stream).arg(&keys.latest);
        self.query::<i64>(&del).await?;
        Ok(())
    }

    /// An invocation of a script that writes presence, with the keys they all take: the
    /// channel's entries hash, expiry set and users hash, and this node's owned set when the
    /// engine has an owner (`owners.rs`).
    fn presence_invocation<'a>(
        &self,
        script: &'a redis::Script,
        keys: &ChannelKeys,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(&keys.presence_expiry)
            .key(&keys.presence_users);
        if let Some(node) = self.owners.node() {
            invocation.key(owned_key(&keys.presence, node));
        }
        invocation
    }

    async fn presence_add(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), RedisEngineError> {
        let keys = self.keys(channel);
        // The channel is in the owning node's set before its entry exists (`owners.rs`).
        self.register_owned_channel(channel).await?;
        let mut conn = self.commands.clone();
        let mut invocation = self.presence_invocation(&PRESENCE_ADD_SCRIPT, &keys);
        invocation
            .arg(&info.client)
            .arg(serde_json::to_string(info)?)
            .arg(millis(ttl))
            .arg(&info.user);
        bounded(
            self.config.command_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Refreshes the entries held as given in one script; the indices of the others (see
    /// `PRESENCE_TOUCH`).
    async fn presence_touch(
        &self,
        channel: &str,
        entries: &[ClientInfo],
        ttl: Duration,
    ) -> Result<Vec<usize>, RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = self.presence_invocation(&PRESENCE_TOUCH_SCRIPT, &keys);
        invocation.arg(millis(ttl));
        for info in entries {
            // The same serialisation as `presence_add`, so an unchanged entry compares equal.
            invocation
                .arg(&info.client)
                .arg(serde_json::to_string(info)?);
        }
        bounded(
            self.config.command_timeout,
            invocation.invoke_async::<Vec<usize>>(&mut conn),
        )
        .await
    }

    async fn presence_remove(&self, channel: &str, client: &str) -> Result<(), RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = self.presence_invocation(&PRESENCE_REMOVE_SCRIPT, &keys);
        invocation.arg(client);
        bounded(
            self.config.command_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn presence_list(&self, channel: &str) -> Result<Vec<ClientInfo>, RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = PRESENCE_LIST_SCRIPT.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(&keys.presence_expiry)
            .key(&keys.presence_users);
        let entries: Vec<String> = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(RedisEngineError::from))
            .collect()
    }

    async fn presence_page(
        &self,
        channel: &str,
        scan: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<PresencePage, RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = PRESENCE_PAGE_SCRIPT.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(&keys.presence_expiry)
            .key(&keys.presence_users)
            .arg(scan)
            .arg(limit.max(1))
            .arg(max_bytes);
        let (next, entries): (String, Vec<String>) = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let entries = entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(RedisEngineError::from))
            .collect::<Result<Vec<ClientInfo>, _>>()?;
        Ok(PresencePage {
            entries,
            cursor: if next == "0" { String::new() } else { next },
        })
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, RedisEngineError> {
        let keys = self.keys(channel);
        let mut conn = self.commands.clone();
        let mut invocation = PRESENCE_STATS_SCRIPT.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(&keys.presence_expiry)
            .key(&keys.presence_users);
        let (num_clients, num_users): (u32, u32) = bounded(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(PresenceStats {
            num_clients,
            num_users,
        })
    }
}

/// Reads `channel`'s history with the history script (creating the stream if missing).
pub(crate) async fn read_history(
    conn: &Conn,
    config: &RedisConfig,
    channel: &str,
    query: HistoryQuery,
) -> Result<HistoryPage, RedisEngineError> {
    let keys = ChannelKeys::new(&config.key_prefix, channel);
    let mut conn = conn.clone();
    let mut invocation = HISTORY_SCRIPT.prepare_invoke();
    invocation
        .key(&keys.meta)
        .key(&keys.stream)
        .arg(new_epoch())
        .arg(millis(config.meta_ttl))
        .arg(if query.reverse { "r" } else { "f" })
        .arg(query.since.map(|s| s.to_string()).unwrap_or_default())
        .arg(
            query
                .limit
                .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
        );
    let (epoch, top, items): (String, u64, Vec<Vec<u8>>) =
        bounded(config.command_timeout, invocation.invoke_async(&mut conn)).await?;
    let mut publications = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks_exact(2) {
        let offset = std::str::from_utf8(&pair[0])
            .ok()
            .and_then(|id| id.split_once('-'))
            .and_then(|(o, _)| o.parse::<u64>().ok())
            .ok_or(RedisEngineError::Malformed("stream entry id"))?;
        let mut publication = codec::decode_stored(&pair[1])?;
        publication.offset = Some(offset);
        publications.push(publication);
    }
    Ok(HistoryPage {
        publications,
        position: StreamPosition { offset: top, epoch },
    })
}

impl Broker for RedisEngine {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        if self.handler.set(handler).is_err() {
            tracing::warn!("RedisEngine::set_handler called twice; keeping the first handler");
        }
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, EngineError>> {
        Box::pin(async move { Ok(self.publish_inner(channel, publication, options).await?) })
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        kind: JoinLeave,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let message = codec::encode_join_leave(&info, kind == JoinLeave::Join)?;
            let mut publish = redis::cmd(self.publish_command());
            publish.arg(self.keys(channel).pubsub).arg(message);
            self.query::<i64>(&publish).await?;
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.subscribe_inner(channel).await?) })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.unsubscribe_inner(channel).await?) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move { Ok(self.history_inner(channel, query).await?) })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.remove_history_inner(channel).await?) })
    }

    fn publish_latest<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
        key: &'a str,
        max_keys: usize,
    ) -> BoxFuture<'a, Result<(Option<StreamPosition>, Latest), EngineError>> {
        Box::pin(async move {
            Ok(self
                .publish_latest_inner(channel, publication, options, key, max_keys)
                .await?)
        })
    }

    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move { Ok(self.latest_inner(channel).await?) })
    }
}

impl PresenceStore for RedisEngine {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.presence_add(channel, &info, ttl).await?) })
    }

    fn touch<'a>(
        &'a self,
        channel: &'a str,
        entries: &'a [ClientInfo],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        Box::pin(async move { Ok(self.presence_touch(channel, entries, ttl).await?) })
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.presence_remove(channel, client).await?) })
    }

    fn list<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>> {
        Box::pin(async move { Ok(self.presence_list(channel).await?) })
    }

    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<PresenceStats, EngineError>> {
        Box::pin(async move { Ok(self.presence_stats(channel).await?) })
    }

    fn page<'a>(
        &'a self,
        channel: &'a str,
        cursor: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<PresencePage, EngineError>> {
        Box::pin(async move {
            // The cursor is HSCAN's, in decimal; anything else never came from here.
            let scan: u64 = if cursor.is_empty() {
                0
            } else if cursor.len() <= 20 && cursor.bytes().all(|b| b.is_ascii_digit()) {
                cursor.parse().map_err(|_| EngineError::BadCursor)?
            } else {
                return Err(EngineError::BadCursor);
            };
            Ok(self.presence_page(channel, scan, limit, max_bytes).await?)
        })
    }
}
