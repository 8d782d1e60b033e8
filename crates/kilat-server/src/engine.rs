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
    /// Other nodes may share the engine: heartbeat into the registry and listen on the inbox.
    /// False for the memory engine, where both would only wake the node up for nothing.
    pub(crate) shared: bool,
}

impl Cluster {
    /// One node alone (the memory engine): no registry entries, no inboxes.
    pub(crate) fn single() -> Self {
        Cluster {
            registry: Arc::new(SingleNode),
            inbox: Arc::new(SingleNode),
            shared: false,
        }
    }
}

/// Builds the configured engine and the node on it.
///
/// # Errors
/// [`ServerError::Redis`] when the Redis engine cannot connect.
pub(crate) async fn start(
    config: &EngineConfig,
    node: NodeConfig,
) -> Result<(Node, Cluster), ServerError> {
    match config.kind {
        EngineKind::Memory => Ok((Node::new(node), Cluster::single())),
        EngineKind::Redis => {
            let engine = Arc::new(kilat_engine_redis::RedisEngine::connect(config.redis()).await?);
            tracing::info!(url = %config.redis_url, "connected to Redis");
            let broker: Arc<dyn Broker> = engine.clone();
            let presence: Arc<dyn PresenceStore> = engine.clone();
            let cluster = Cluster {
                registry: engine.clone(),
                inbox: engine,
                shared: true,
            };
            Ok((Node::with_engine(node, broker, presence), cluster))
        }
    }
}
