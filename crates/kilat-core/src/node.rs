//! [`Node`]: the hub handle. Cheap to clone; everything shared lives behind one `Arc`.
//!
//! Holds the configuration, the engine (broker + presence store), the local subscription index
//! ([`crate::hub`]), the registry of sessions (for drain and server-side disconnects) and the
//! counters behind [`NodeStats`]. Also the server-side API the HTTP API calls: publish, history,
//! presence, channels, disconnect.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use kilat_protocol::push::encode_publication;
use kilat_protocol::reply::{
    HistoryResult, PresenceEntry, PresenceResult, PresenceStatsResult, SubscribeResult,
};
use kilat_protocol::{ClientInfo, Disconnect, Publication, RawJson, SharedFrame, StreamPosition};
use serde::Serialize;

use crate::auth::Authenticator;
use crate::config::{NamespaceOptions, NodeConfig};
use crate::engine::memory::{MemoryBroker, MemoryPresence};
use crate::engine::{
    Broker, BrokerHandler, HistoryQuery, JoinLeave, PresenceStore, PublishOptions,
};
use crate::error::CoreError;
use crate::hub::{GoLive, Hub, Repair, Window};
use crate::limits::{ChannelRates, UserConnections};
use crate::outbox::Outbox;
use crate::permissions::resolve;
use crate::proxy::{Backend, Hook};
use crate::recovery::{Recovery, outcome};

mod inspect;
use crate::session::SubState;
use crate::util::{lock, new_epoch};
pub use inspect::{ConnectionSummary, Watch};

const SESSION_SHARDS: usize = 16;

/// Counters for `/metrics` and the `info` API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Sessions open on this node (connected or still handshaking).
    pub connections: usize,
    /// Channel subscriptions held by local sessions.
    pub subscriptions: usize,
    /// Channels with at least one local subscriber.
    pub channels: usize,
    /// Publications accepted through this node (client and server API).
    pub publications: u64,
    /// Frames queued to subscribers by this node's fan-out.
    pub deliveries: u64,
}

/// What the registry knows about one session.
#[derive(Debug)]
struct SessionEntry {
    /// Where a drain or a server-side disconnect sends its close.
    outbox: Outbox,
    /// Set at connect: who the connection is, for `disconnect(user, client)` and server-side
    /// subscriptions (presence and join/leave need the whole info).
    identity: Option<ClientInfo>,
    /// Server-side changes the session has not absorbed yet (see [`ServerChanges`]). Boxed:
    /// rarely any, and every connection has an entry in this map.
    changes: Option<Box<ServerChanges>>,
    /// The transport's name and when the session started, for the admin API's connection
    /// list ([`Node::connections`]).
    transport: &'static str,
    started: std::time::Instant,
}

/// Subscriptions added or removed by the server API since the session last looked. The session
/// owns its subscription list; the node records changes here and the session absorbs them at
/// its next message, timer or close.
#[derive(Debug, Default)]
pub(crate) struct ServerChanges {
    /// Channels subscribed by the server, with what leaving them needs.
    pub(crate) added: Vec<(String, SubState)>,
    /// Channels unsubscribed by the server (already left in the hub, presence and join/leave).
    pub(crate) removed: Vec<String>,
}

/// History read options for [`Node::history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// At most this many (clamped to `history_max_limit`); `None` = up to that maximum.
    pub limit: Option<usize>,
    /// After (or with `reverse`, before) this position; its epoch must match (else 503).
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

struct NodeInner {
    config: NodeConfig,
    /// Client publication rate per channel (`channel_publish_rate`), read by client publishes.
    channel_rates: ChannelRates,
    /// Open connections per user (`max_connections_per_user`), counted at connect, released
    /// when the session leaves the registry.
    users: UserConnections,
    /// Random id of this node (reported to emulated transports).
    id: String,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
    /// Local subscriptions; shared with the broker handler, which delivers into it.
    hub: Arc<Hub>,
    /// Token verification; `None` until configured (then tokens are refused with 401).
    authenticator: RwLock<Option<Arc<dyn Authenticator>>>,
    /// The application's backend hooks; `None` until configured (then nothing is proxied).
    backend: RwLock<Option<Arc<dyn Backend>>>,
    /// Open sessions by key, sharded; read by drain and server-side disconnects.
    sessions: Box<[Mutex<HashMap<u64, SessionEntry>>]>,
    /// Source of session keys (unique per node, never reused).
    next_key: AtomicU64,
    /// Set by [`Node::shutdown`]; new sessions are closed at once with 3000.
    draining: AtomicBool,
    /// Publications accepted, for stats.
    publications: AtomicU64,
}

/// The hub handle. Cheap clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("broker", &self.inner.broker)
            .field("presence", &self.inner.presence)
            .finish_non_exhaustive()
    }
}

/// Receives the broker's deliveries and fans them out through the hub.
struct HubHandler {
    hub: Arc<Hub>,
    /// For gap repairs (weak: the broker owns this handler).
    broker: OnceLock<Weak<dyn Broker>>,
}

#[derive(Serialize)]
struct JoinLeaveRef<'a> {
    info: &'a ClientInfo,
}

impl BrokerHandler for HubHandler {
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str) {
        let observer = self.hub.observer.get();
        let started = observer.map(|_| std::time::Instant::now());
        let delivered = self
            .hub
            .deliver_publication(channel, publication.offset, epoch, || {
                let json = encode_publication(channel, publication);
                // Stamped only when measured, with the clock read the fan-out timing made.
                match started {
                    Some(at) => SharedFrame::stamped(json, at),
                    None => SharedFrame::new(json),
                }
            });
        if let (Some(observer), Some(started)) = (observer, started) {
            observer.fanned_out(channel, delivered.delivered, started.elapsed());
        }
        for repair in delivered.repairs {
            self.spawn_repair(repair);
        }
        if let Some(window) = delivered.window {
            self.spawn_window(channel, window);
        }
    }

    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let kind = if join { "join" } else { "leave" };
        self.hub.deliver_join_leave(channel, || {
            SharedFrame::new(kilat_protocol::push::encode_push_kind(
                Some(channel),
                kind,
                &JoinLeaveRef { info },
            ))
        });
    }
}

impl HubHandler {
    /// Ends a conflated channel's window after its length, and each following window, until
    /// one passes with nothing to send.
    fn spawn_window(&self, channel: &str, window: Window) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Nothing could end the window later: close it now (no conflation without a runtime).
            self.hub.end_window(channel, window.id);
            return;
        };
        let hub = self.hub.clone();
        let channel = channel.to_owned();
        runtime.spawn(async move {
            loop {
                // The window's length is the conflation interval itself, not a wait for an event.
                tokio::time::sleep(window.length).await;
                if !hub.end_window(&channel, window.id) {
                    break;
                }
            }
        });
    }

    /// Reads the missing publications from history and delivers them before the held ones; a
    /// subscriber whose gap history cannot fill is asked to resubscribe.
    fn spawn_repair(&self, repair: Repair) {
        let broker = self.broker.get().and_then(Weak::upgrade);
        let (Some(broker), Ok(runtime)) = (broker, tokio::runtime::Handle::try_current()) else {
            self.hub.drop_stale(&repair.channel, repair.key);
            return;
        };
        let hub = self.hub.clone();
        runtime.spawn(async move {
            let query = HistoryQuery {
                since: Some(repair.after),
                limit: None,
                reverse: false,
            };
            match broker.history(&repair.channel, query).await {
                Ok(page)
                    if page.position.epoch == repair.epoch
                        && (page.position.offset == repair.after
                            || page.publications.first().and_then(|p| p.offset)
                                == Some(repair.after + 1)) =>
                {
                    let frames = page
                        .publications
                        .iter()
                        .map(|p| SharedFrame::new(encode_publication(&repair.channel, p)))
                        .collect::<Vec<_>>();
                    hub.go_live(
                        &repair.channel,
                        repair.key,
                        frames,
                        page.position.offset,
                        &repair.epoch,
                    );
                }
                _ => hub.drop_stale(&repair.channel, repair.key),
            }
        });
    }
}

/// A subscription prepared by [`Node::prepare_subscribe`]: joined (buffering) and positioned.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) result: SubscribeResult,
}

impl Node {
    /// A node with the in-memory engine.
    pub fn new(config: NodeConfig) -> Self {
        let broker = Arc::new(MemoryBroker::new(config.history_meta_ttl));
        Node::with_engine(config, broker, Arc::new(MemoryPresence::new()))
    }

    /// A node with the given engine. Installs the node's handler in `broker`.
    pub fn with_engine(
        config: NodeConfig,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
    ) -> Self {
        let hub = Arc::new(Hub::new());
        let handler = Arc::new(HubHandler {
            hub: hub.clone(),
            broker: OnceLock::new(),
        });
        let _ = handler.broker.set(Arc::downgrade(&broker));
        broker.set_handler(handler);
        let channel_rates =
            ChannelRates::new(config.channel_publish_rate, config.channel_publish_burst);
        Node {
            inner: Arc::new(NodeInner {
                config,
                id: new_epoch(),
                broker,
                presence,
                hub,
                authenticator: RwLock::new(None),
                backend: RwLock::new(None),
                sessions: (0..SESSION_SHARDS)
                    .map(|_| Mutex::new(HashMap::new()))
                    .collect(),
                next_key: AtomicU64::new(1),
                channel_rates,
                users: UserConnections::default(),
                draining: AtomicBool::new(false),
                publications: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// This node's random id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Installs token verification (connect, subscribe and refresh tokens).
    pub fn set_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        let mut slot = self
            .inner
            .authenticator
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(authenticator);
    }

    pub(crate) fn authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        self.inner
            .authenticator
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Installs the application's backend hooks (see [`crate::proxy`]).
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        let mut slot = self
            .inner
            .backend
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(backend);
    }

    /// The installed backend, if any (transports read its [`Backend::forward_headers`]).
    pub fn backend(&self) -> Option<Arc<dyn Backend>> {
        self.inner
            .backend
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The backend, when it handles `hook`.
    pub(crate) fn backend_for(&self, hook: Hook) -> Option<Arc<dyn Backend>> {
        self.inner
            .backend
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|backend| backend.handles(hook))
            .cloned()
    }

    pub(crate) fn presence_store(&self) -> &Arc<dyn PresenceStore> {
        &self.inner.presence
    }

    /// Graceful drain: every session's outbox gets Disconnect 3000 and sessions created from
    /// now on are closed with 3000 at once.
    pub fn shutdown(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        for shard in self.inner.sessions.iter() {
            for entry in lock(shard).values() {
                entry.outbox.close(Disconnect::SHUTDOWN);
            }
        }
    }

    /// Whether [`Node::shutdown`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Sets the metrics observer (once; a second call is ignored and returns false).
    pub fn set_observer(&self, observer: Arc<dyn crate::Observer>) -> bool {
        self.inner.hub.observer.set(observer)
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn crate::Observer>> {
        self.inner.hub.observer.get()
    }

    /// Bytes waiting in outboxes: the total over this node's sessions and the largest one, read
    /// at scrape time (one uncontended lock per session) for the queue-depth gauges.
    pub fn queued_bytes(&self) -> (u64, u64) {
        let (mut total, mut largest) = (0u64, 0u64);
        for shard in self.inner.sessions.iter() {
            for entry in lock(shard).values() {
                let bytes = entry.outbox.queued_bytes() as u64;
                total += bytes;
                largest = largest.max(bytes);
            }
        }
        (total, largest)
    }

    /// Counts for `/metrics` and `info`.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            connections: self.inner.sessions.iter().map(|s| lock(s).len()).sum(),
            subscriptions: self.inner.hub.subscriptions(),
            channels: self.inner.hub.channel_count(),
            publications: self.inner.publications.load(Ordering::Relaxed),
            deliveries: self.inner.hub.deliveries(),
        }
    }

    fn session_shard(&self, key: u64) -> &Mutex<HashMap<u64, SessionEntry>> {
        &self.inner.sessions[(key % SESSION_SHARDS as u64) as usize]
    }

    /// Registers a new session; returns its key.
    pub(crate) fn register_session(&self, outbox: &Outbox, transport: &'static str) -> u64 {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        lock(self.session_shard(key)).insert(
            key,
            SessionEntry {
                outbox: outbox.clone(),
                identity: None,
                changes: None,
                transport,
                started: std::time::Instant::now(),
            },
        );
        if self.is_draining() {
            outbox.close(Disconnect::SHUTDOWN);
        }
        key
    }

    /// Counts a connection for `user`; false when the user already has the most allowed.
    pub(crate) fn try_add_user_connection(&self, user: &str) -> bool {
        self.inner
            .users
            .try_add(user, self.inner.config.max_connections_per_user)
    }

    /// Whether one more client publication to `channel` fits its rate.
    pub(crate) fn try_channel_publish(&self, channel: &str) -> bool {
        self.inner
            .channel_rates
            .try_publish(channel, tokio::time::Instant::now())
    }

    pub(crate) fn set_session_identity(&self, key: u64, info: &ClientInfo) {
        if let Some(entry) = lock(self.session_shard(key)).get_mut(&key) {
            entry.identity = Some(info.clone());
        }
    }

    /// Removes a session from the registry; returns the server-side changes it had not
    /// absorbed, so the caller can clean them up too.
    pub(crate) fn unregister_session(&self, key: u64) -> ServerChanges {
        let entry = lock(self.session_shard(key)).remove(&key);
        entry
            .and_then(|entry| {
                if let Some(info) = &entry.identity {
                    self.inner.users.remove(&info.user);
                }
                entry.changes.map(|changes| *changes)
            })
            .unwrap_or_default()
    }

    /// Takes the server-side changes recorded for session `key`.
    pub(crate) fn take_server_changes(&self, key: u64) -> Option<ServerChanges> {
        let mut shard = lock(self.session_shard(key));
        let changes = shard.get_mut(&key)?.changes.take()?;
        Some(*changes)
    }

    /// Connected sessions of `user`: key, outbox and client info.
    pub(crate) fn sessions_of(&self, user: &str) -> Vec<(u64, Outbox, ClientInfo)> {
        let mut found = Vec::new();
        for shard in self.inner.sessions.iter() {
            for (key, entry) in lock(shard).iter() {
                if let Some(info) = entry.identity.as_ref().filter(|i| i.user == user) {
                    found.push((*key, entry.outbox.clone(), info.clone()));
                }
            }
        }
        found
    }

    /// Records a server-side change for session `key`; false when the session is gone.
    pub(crate) fn record_server_change(
        &self,
        key: u64,
        change: impl FnOnce(&mut ServerChanges),
    ) -> bool {
        match lock(self.session_shard(key)).get_mut(&key) {
            Some(entry) => {
                change(entry.changes.get_or_insert_default());
                true
            }
            None => false,
        }
    }

    /// Closes the sessions of `user` (only connection `client` when given) with `disconnect`.
    /// Returns how many were closed.
    pub fn disconnect(&self, user: &str, client: Option<&str>, disconnect: Disconnect) -> usize {
        let mut closed = 0;
        for shard in self.inner.sessions.iter() {
            for entry in lock(shard).values() {
                let Some(info) = &entry.identity else {
                    continue;
                };
                if info.user == user && client.is_none_or(|client| client == info.client) {
                    entry.outbox.close(disconnect.clone());
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Channels with at least one subscriber on this node.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = self.inner.hub.channel_names();
        channels.sort();
        channels
    }

    /// Publishes `data` to `channel` from the server (no client info, no permission checks
    /// beyond the channel being valid and its namespace existing).
    ///
    /// # Errors
    /// 400 bad channel, 404 unknown namespace, 413 too large, 503 engine.
    pub async fn publish(
        &self,
        channel: &str,
        data: RawJson,
    ) -> Result<Option<StreamPosition>, CoreError> {
        let ns = resolve(&self.inner.config, channel)?;
        if data.get().len() > ns.max_message_size {
            return Err(CoreError::TooLarge);
        }
        self.publish_with(channel, data, None, &ns).await
    }

    pub(crate) async fn publish_with(
        &self,
        channel: &str,
        data: RawJson,
        info: Option<ClientInfo>,
        ns: &NamespaceOptions,
    ) -> Result<Option<StreamPosition>, CoreError> {
        let publication = Publication {
            data,
            offset: None,
            info,
        };
        let options = PublishOptions {
            history_size: ns.history_size,
            history_ttl: ns.history_ttl,
        };
        let position = self
            .inner
            .broker
            .publish(channel, publication, options)
            .await?;
        self.inner.publications.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = self.inner.hub.observer.get() {
            observer.published(channel);
        }
        Ok(position)
    }

    /// Reads `channel`'s history (PROTOCOL.md section 3 semantics).
    ///
    /// # Errors
    /// 400/404 channel, 503 epoch mismatch or engine.
    pub async fn history(
        &self,
        channel: &str,
        options: HistoryOptions,
    ) -> Result<HistoryResult, CoreError> {
        let ns = resolve(&self.inner.config, channel)?;
        self.history_with(channel, &ns, options).await
    }

    pub(crate) async fn history_with(
        &self,
        channel: &str,
        ns: &NamespaceOptions,
        options: HistoryOptions,
    ) -> Result<HistoryResult, CoreError> {
        if !ns.has_history() {
            return Ok(HistoryResult::default());
        }
        let max = self.inner.config.history_max_limit;
        let query = HistoryQuery {
            since: options.since.as_ref().map(|p| p.offset),
            limit: Some(options.limit.unwrap_or(max).min(max)),
            reverse: options.reverse,
        };
        let page = self.inner.broker.history(channel, query).await?;
        if let Some(since) = &options.since
            && since.epoch != page.position.epoch
        {
            return Err(CoreError::EpochMismatch);
        }
        Ok(HistoryResult {
            publications: page.publications,
            offset: page.position.offset,
            epoch: page.position.epoch,
        })
    }

    /// Drops `channel`'s history (its stream gets a new epoch).
    ///
    /// # Errors
    /// 400 bad channel, 503 engine.
    pub async fn history_remove(&self, channel: &str) -> Result<(), CoreError> {
        kilat_protocol::validate_channel(channel)?;
        Ok(self.inner.broker.remove_history(channel).await?)
    }

    /// Who is present in `channel`.
    ///
    /// # Errors
    /// 400 bad channel, 503 engine.
    pub async fn presence(&self, channel: &str) -> Result<PresenceResult, CoreError> {
        kilat_protocol::validate_channel(channel)?;
        let entries = self.inner.presence.list(channel).await?;
        let clients: BTreeMap<String, PresenceEntry> = entries
            .into_iter()
            .map(|info| {
                (
                    info.client,
                    PresenceEntry {
                        user: info.user,
                        info: info.info,
                    },
                )
            })
            .collect();
        Ok(PresenceResult { clients })
    }

    /// Presence counts of `channel`.
    ///
    /// # Errors
    /// 400 bad channel, 503 engine.
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, CoreError> {
        kilat_protocol::validate_channel(channel)?;
        let stats = self.inner.presence.stats(channel).await?;
        Ok(PresenceStatsResult {
            num_clients: stats.num_clients,
            num_users: stats.num_users,
        })
    }

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
        let conflate = (ns.conflate_ms > 0).then(|| Duration::from_millis(ns.conflate_ms));
        self.inner.hub.add(
            channel,
            key,
            outbox.clone(),
            join_leave,
            recoverable,
            conflate,
        );
        let read = async {
            // Every time, not only for the first local subscriber: the engine call is
            // idempotent, and a concurrent first subscriber may not have finished it yet.
            self.inner.broker.subscribe(channel).await?;
            if !recoverable {
                return Ok(SubscribeResult::default());
            }
            let page = self.inner.broker.history(channel, recovery.query()).await?;
            Ok::<_, CoreError>(outcome(recovery, page))
        };
        match read.await {
            Ok(result) => Ok(Prepared { result }),
            Err(error) => {
                self.remove_subscriber(channel, key).await;
                Err(error)
            }
        }
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
    async fn leave_engine_channel(&self, channel: &str) {
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
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.clone();
        let channel = channel.to_owned();
        runtime.spawn(async move {
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
}
