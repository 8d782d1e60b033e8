//! The engine the configuration chooses, built once at start-up. This is the one place the
//! server names a concrete engine; everything else sees the core's role traits: the node gets
//! the [`Broker`] and [`PresenceStore`], the server keeps the [`NodeRegistry`] (for `info`)
//! and the [`NodeInbox`] (for emulation POSTs that reach another node).

use std::sync::Arc;

use kilat_core::engine::memory::SingleNode;
use kilat_core::{Broker, Node, NodeConfig, NodeInbox, NodeRegistry, PresenceStore};

use crate::ServerError;
use crate::config::{EngineConfig, EngineKind};

/// What the server holds of its engine besides the node.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    /// Which nodes share the engine, for `info`; each node heartbeats its own entry.
    pub(crate) registry: Arc<dyn NodeRegistry>,
    /// This node's inbox and the way to other nodes' inboxes.
    pub(crate) inbox: Arc<dyn NodeInbox>,
    /// The engine's name, for `info` and the admin console's node list.
    pub(crate) engine: &'static str,
    /// Other nodes may share the engine: heartbeat into the registry and listen on the inbox.
    /// False for the memory engine, where both would only wake the node up for nothing.
    pub(crate) shared: bool,
    /// The engine's presence store when other nodes share it (the Pusher endpoint keeps its
    /// cluster-wide index of occupied channels there); `None` on the memory engine.
    pub(crate) shared_presence: Option<Arc<dyn PresenceStore>>,
}

impl Cluster {
    /// One node alone (the memory engine): no registry entries, no inboxes.
    pub(crate) fn single() -> Self {
        Cluster {
            registry: Arc::new(SingleNode),
            inbox: Arc::new(SingleNode),
            engine: "memory",
            shared: false,
            shared_presence: None,
        }
    }
}

/// What [`start`] may wrap around the engine's broker and presence store before the node gets
/// them (the metrics' instrumented wrappers), with the engine's name.
pub(crate) type Wrap<'a> = &'a (
        dyn Fn(
    &'static str,
    Arc<dyn Broker>,
    Arc<dyn PresenceStore>,
) -> (Arc<dyn Broker>, Arc<dyn PresenceStore>)
            + Sync
    );

/// Builds the configured engine and the node on it, with `wrap` applied to the engine's broker
/// and presence store; the cluster roles come from the same engine.
///
/// # Errors
/// When the Redis engine cannot connect.
pub(crate) async fn start(
    config: &EngineConfig,
    node: NodeConfig,
    wrap: Wrap<'_>,
) -> Result<(Node, Cluster), ServerError> {
    match config.kind {
        EngineKind::Memory => {
            let broker: Arc<dyn Broker> = Arc::new(kilat_core::engine::memory::MemoryBroker::new(
                node.history_meta_ttl,
            ));
            let presence: Arc<dyn PresenceStore> =
                Arc::new(kilat_core::engine::memory::MemoryPresence::new());
            let (broker, presence) = wrap("memory", broker, presence);
            Ok((Node::with_engine(node, broker, presence), Cluster::single()))
        }
        EngineKind::Redis => {
            let engine = Arc::new(kilat_engine_redis::RedisEngine::connect(config.redis()).await?);
            tracing::info!(redis = %config.redis_target(), "connected to Redis");
            let (broker, presence) = wrap("redis", engine.clone(), engine.clone());
            let node = Node::with_engine(node, broker, presence);
            // Entries this node adds are its own, so survivors remove them if it dies.
            engine.set_presence_owner(node.id());
            let cluster = Cluster {
                registry: engine.clone(),
                inbox: engine.clone(),
                engine: "redis",
                shared: true,
                shared_presence: Some(engine),
            };
            Ok((node, cluster))
        }
    }
}
