//! The node registry: which kilat nodes share this Redis, for `info` across nodes.
//!
//! Same shape as presence (a hash id -> JSON plus a sorted set of expiries, judged by Redis
//! time), under `{<prefix>:nodes}`: each node calls [`RedisEngine::heartbeat_node`]
//! periodically with a TTL a few periods long, so a node that dies drops out on its own.
//! Heartbeats are the caller's (the server's ticker), not a task of the engine: the engine
//! does not know the node's stats.

use std::time::Duration;

use kilat_core::engine::{BoxFuture, EngineError, NodeRegistry};
use kilat_protocol::RawJson;

use crate::engine::RedisEngine;
use crate::error::{RedisEngineError, bounded};
use crate::scripts::{PRESENCE_ADD_SCRIPT, PRESENCE_LIST_SCRIPT, PRESENCE_REMOVE_SCRIPT};

impl RedisEngine {
    fn registry_keys(&self) -> (String, String) {
        let hash = format!("{{{}:nodes}}", self.config().key_prefix);
        let expiry = format!("{hash}:exp");
        (hash, expiry)
    }

    /// Records (or refreshes) node `node_id` with `info` (a JSON object, e.g. the node's
    /// stats) for `ttl`.
    ///
    /// # Errors
    /// When Redis fails or does not answer within `command_timeout`.
    pub async fn heartbeat_node(
        &self,
        node_id: &str,
        info: &RawJson,
        ttl: Duration,
    ) -> Result<(), RedisEngineError> {
        let (hash, expiry) = self.registry_keys();
        let mut invocation = PRESENCE_ADD_SCRIPT.prepare_invoke();
        invocation
            .key(&hash)
            .key(&expiry)
            .arg(node_id)
            .arg(info.get())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut conn = self.commands();
        bounded(
            self.config().command_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Removes node `node_id` (on graceful shutdown). Idempotent.
    ///
    /// # Errors
    /// When Redis fails or does not answer within `command_timeout`.
    pub async fn remove_node(&self, node_id: &str) -> Result<(), RedisEngineError> {
        let (hash, expiry) = self.registry_keys();
        let mut invocation = PRESENCE_REMOVE_SCRIPT.prepare_invoke();
        invocation.key(&hash).key(&expiry).arg(node_id);
        let mut conn = self.commands();
        bounded(
            self.config().command_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// The info of every node whose last heartbeat has not expired, in no particular order.
    ///
    /// # Errors
    /// When Redis fails or does not answer within `command_timeout`, or an entry is not JSON.
    pub async fn nodes(&self) -> Result<Vec<RawJson>, RedisEngineError> {
        let (hash, expiry) = self.registry_keys();
        let mut invocation = PRESENCE_LIST_SCRIPT.prepare_invoke();
        invocation.key(&hash).key(&expiry);
        let mut conn = self.commands();
        let entries: Vec<String> = bounded(
            self.config().command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        entries
            .into_iter()
            .map(|e| serde_json::value::RawValue::from_string(e).map_err(RedisEngineError::from))
            .collect()
    }
}

impl NodeRegistry for RedisEngine {
    fn heartbeat<'a>(
        &'a self,
        node_id: &'a str,
        info: &'a RawJson,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.heartbeat_node(node_id, info, ttl).await?) })
    }

    fn deregister<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(self.remove_node(node_id).await?) })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<RawJson>, EngineError>> {
        Box::pin(async move { Ok(RedisEngine::nodes(self).await?) })
    }

    fn reap_dead_nodes<'a>(
        &'a self,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, EngineError>> {
        Box::pin(async move { Ok(RedisEngine::reap_dead_nodes(self, node_id).await?) })
    }
}
