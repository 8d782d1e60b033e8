//! [`Node`]: the hub handle. Cheap to clone; everything shared lives behind one `Arc`.
//!
//! Holds the configuration, the engine (broker + presence store), the local subscription index
//! (`hub.rs`) and the counters behind [`NodeStats`]. One file per role:
//! - `plugins.rs`: the authenticator and backend slots.
//! - `registry.rs`: the open sessions (drain, server-side disconnects and subscriptions).
//! - `delivery.rs`: the broker handler: fan-out, gap repair and conflation timers.
//! - `subscription.rs`: the subscription lifecycle (join, go live, leave, presence, join/leave).
//! - `presence_order.rs`: the per-client order of presence writes (joins, leaves, refreshes).
//! - `api.rs`: the server-side API the HTTP API calls (publish, history, presence, channels,
//!   disconnect).
//!
//! The files below this one import it (for [`Node`]); this one imports only the parts it is
//! built from (`plugins`, `registry`, `delivery`, `presence_order`), so the node's files form no cycle.

mod api;
pub use crate::limits::{PRESENCE_PAGE_BYTES, PRESENCE_PAGE_DEFAULT, PRESENCE_PAGE_MAX};
mod delivery;
pub(crate) mod inspect;
mod plugins;
mod presence_order;
mod refresh;
mod refresh_queue;
mod registry;
mod revocation;
mod subscription;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kilat_protocol::{Disconnect, StreamPosition};

use crate::auth::Authenticator;
use crate::coalesce::HistoryFlights;
use crate::config::NodeConfig;
use crate::engine::memory::{MemoryBroker, MemoryPresence};
use crate::engine::{Broker, PresenceStore};
use crate::hub::Hub;
use crate::limits::ChannelRates;
use crate::proxy::{Backend, Hook};
use crate::tasks::Tasks;
use crate::util::new_epoch;
use delivery::HubHandler;
use plugins::Plugins;
pub(crate) use registry::{ServerChanges, SessionRegistry};

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
    /// Background tasks the node tracks that are running (engine calls started by timers, gap
    /// repairs, conflation windows, hook calls): a count that must not grow over time.
    pub background_tasks: usize,
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
    /// Random id of this node (reported to emulated transports).
    id: String,
    broker: Arc<dyn Broker>,
    /// Single-flight for history reads (recovery, `history`, gap repair): identical concurrent
    /// reads reach the broker once (`coalesce.rs`).
    history_flights: Arc<HistoryFlights>,
    presence: Arc<dyn PresenceStore>,
    /// Orders each client's presence adds and removes (`presence_order.rs`).
    presence_order: presence_order::PresenceOrder,
    /// Presence refreshes gathered per channel for the next touch (`refresh.rs`).
    refreshes: refresh_queue::RefreshQueue,
    /// Local subscriptions; shared with the broker handler, which delivers into it.
    hub: Arc<Hub>,
    /// The authenticator and the backend, installed after construction.
    plugins: Plugins,
    /// Open sessions; read by drain, server-side disconnects and subscriptions.
    sessions: SessionRegistry,
    /// Revoked token ids and users (`revoke.rs`), checked at connect and refresh.
    revocations: crate::revoke::Revocations,
    /// Publications accepted, for stats.
    publications: AtomicU64,
    /// Background work started from synchronous code (see `tasks.rs`); shared with the broker
    /// handler, waited on by [`Node::finish_tasks`].
    tasks: Tasks,
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
        let tasks = Tasks::default();
        let history_flights = Arc::new(HistoryFlights::default());
        broker.set_handler(Arc::new(HubHandler::new(
            hub.clone(),
            &broker,
            history_flights.clone(),
            presence.clone(),
            tasks.clone(),
        )));
        let channel_rates =
            ChannelRates::new(config.channel_publish_rate, config.channel_publish_burst);
        let sessions = SessionRegistry::new(config.max_connections_per_user);
        Node {
            inner: Arc::new(NodeInner {
                config,
                id: new_epoch(),
                broker,
                history_flights,
                presence,
                presence_order: presence_order::PresenceOrder::default(),
                refreshes: refresh_queue::RefreshQueue::default(),
                hub,
                plugins: Plugins::default(),
                sessions,
                channel_rates,
                revocations: crate::revoke::Revocations::default(),
                publications: AtomicU64::new(0),
                tasks,
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
        self.inner.plugins.set_authenticator(authenticator);
    }

    pub(crate) fn authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        self.inner.plugins.authenticator()
    }

    /// Installs the application's backend hooks (see [`crate::proxy`]).
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        self.inner.plugins.set_backend(backend);
    }

    /// The installed backend, if any (transports read its [`Backend::forward_headers`]).
    pub fn backend(&self) -> Option<Arc<dyn Backend>> {
        self.inner.plugins.backend()
    }

    /// The backend, when it handles `hook`.
    pub(crate) fn backend_for(&self, hook: Hook) -> Option<Arc<dyn Backend>> {
        self.inner.plugins.backend_for(hook)
    }

    /// The open sessions of this node.
    pub(crate) fn sessions(&self) -> &SessionRegistry {
        &self.inner.sessions
    }

    /// Sets the metrics observer (once; a second call is ignored and returns false).
    pub fn set_observer(&self, observer: Arc<dyn crate::Observer>) -> bool {
        self.inner.hub.observer.set(observer)
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn crate::Observer>> {
        self.inner.hub.observer.get()
    }

    /// Bytes waiting in outboxes: the total over this node's sessions and the largest one, read
    /// at scrape time for the queue-depth gauges.
    pub fn queued_bytes(&self) -> (u64, u64) {
        self.inner.sessions.queued_bytes()
    }

    /// Graceful drain: every session's outbox gets Disconnect 3000 and sessions created from
    /// now on are closed with 3000 at once.
    pub fn shutdown(&self) {
        self.shutdown_with(Disconnect::SHUTDOWN);
    }

    /// [`Node::shutdown`] with a chosen disconnect for the open sessions, e.g. 3000 carrying a
    /// reconnect spread hint (`Disconnect::SHUTDOWN.with_delay_ms(ms)`). Returns how many
    /// sessions were told.
    pub fn shutdown_with(&self, disconnect: Disconnect) -> usize {
        self.inner.sessions.shutdown(&disconnect)
    }

    /// Waits up to `timeout` for the node's background tasks: the engine unsubscribes and
    /// leaves of subscriptions that ended on a timer, gap repairs, conflation windows and
    /// backend hook calls. Call it after [`Node::shutdown`] once the sessions have closed, so
    /// what they started is not cut off. True when every task finished in time.
    pub async fn finish_tasks(&self, timeout: Duration) -> bool {
        let finished = self.inner.tasks.finish(timeout).await;
        if !finished {
            tracing::warn!(
                running = self.inner.tasks.len(),
                timeout_s = timeout.as_secs_f64(),
                "background tasks still running at the shutdown timeout; abandoning them"
            );
        }
        finished
    }

    /// Starts background work the node tracks (see [`Node::finish_tasks`]); false without a
    /// runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        self.inner.tasks.spawn(task)
    }

    /// Whether [`Node::shutdown`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.sessions.is_draining()
    }

    /// Counts for `/metrics` and `info`.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            connections: self.inner.sessions.len(),
            subscriptions: self.inner.hub.subscriptions(),
            channels: self.inner.hub.channel_count(),
            publications: self.inner.publications.load(Ordering::Relaxed),
            deliveries: self.inner.hub.deliveries(),
            background_tasks: self.inner.tasks.len(),
        }
    }

    /// History reads this node sent to the engine, and reads it answered by sharing another
    /// identical read that had not started when they arrived (see `coalesce.rs`).
    pub fn history_reads(&self) -> (u64, u64) {
        let flights = &self.inner.history_flights;
        (flights.engine_reads(), flights.shared_reads())
    }

    /// Reads history through the node's single-flight (identical concurrent reads share one
    /// engine call). Callers must have done what the read has to see (e.g. joined the hub)
    /// before calling.
    pub(crate) async fn read_history(
        &self,
        channel: &str,
        query: crate::engine::HistoryQuery,
    ) -> Result<crate::engine::HistoryPage, crate::engine::EngineError> {
        self.inner
            .history_flights
            .history(&*self.inner.broker, channel, query)
            .await
    }

    /// Whether one more client publication to `channel` fits its rate.
    pub(crate) fn try_channel_publish(&self, channel: &str) -> bool {
        self.inner
            .channel_rates
            .try_publish(channel, tokio::time::Instant::now())
    }
}
