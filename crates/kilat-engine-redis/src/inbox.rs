//! Node inboxes: a pub/sub channel per node, so one node can hand a message to another (the
//! emulated transports' commands that reach a node other than their session's, docs/protocol.md section 10
//! section 6).
//!
//! The channel is `<prefix>:node:<id>`: plain pub/sub on a single Redis, sharded pub/sub
//! (`SSUBSCRIBE`/`SPUBLISH`) on a cluster, where the cluster client's push callback routes the
//! inbox's messages here and resubscribes after reconnects by itself. Delivery is at most once:
//! a node that is down or reconnecting misses what is sent meanwhile, and the sender learns from
//! the publish's receiver count whether any node was listening.

use std::time::Duration;

use futures_util::StreamExt;
use kilat_core::engine::{BoxFuture, EngineError, NodeInbox};
use tokio::sync::mpsc;

use crate::RedisEngine;
use crate::error::{RedisEngineError, bounded};

/// Messages waiting for the inbox's consumer; past it new ones are dropped (and logged).
const INBOX_QUEUE: usize = 1024;

impl RedisEngine {
    fn inbox_channel(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.config().key_prefix)
    }

    /// Sends `payload` to node `node_id`'s inbox. Returns how many subscribers received it:
    /// 0 means no node with that id is listening (it is gone).
    ///
    /// # Errors
    /// When Redis fails or does not answer within `command_timeout`.
    pub async fn send_to_node(
        &self,
        node_id: &str,
        payload: &[u8],
    ) -> Result<usize, RedisEngineError> {
        let mut conn = self.commands();
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(self.inbox_channel(node_id)).arg(payload);
        bounded(
            self.config().command_timeout,
            cmd.query_async::<usize>(&mut conn),
        )
        .await
    }

    /// Listens to node `node_id`'s inbox on a connection of its own, reconnecting with backoff
    /// for as long as the receiver lives. Returns once the first SUBSCRIBE is confirmed.
    ///
    /// # Errors
    /// When the first connection or SUBSCRIBE fails; on a cluster, also when this engine's
    /// inbox is already open (one per engine).
    pub async fn node_inbox(
        &self,
        node_id: &str,
    ) -> Result<mpsc::Receiver<Vec<u8>>, RedisEngineError> {
        if let Some(conn) = self.cluster_connection() {
            let channel = self.inbox_channel(node_id);
            let (tx, rx) = mpsc::channel(INBOX_QUEUE);
            self.cluster_inbox.set((channel.clone(), tx)).map_err(|_| {
                RedisEngineError::Config("this engine's node inbox is already open")
            })?;
            let mut conn = conn.clone();
            bounded(self.config().command_timeout, conn.ssubscribe(&channel)).await?;
            return Ok(rx);
        }
        let client = redis::Client::open(self.config().url.as_str())?;
        let channel = self.inbox_channel(node_id);
        let config = self.config().clone();
        let mut pubsub = bounded(config.connect_timeout, client.get_async_pubsub()).await?;
        bounded(config.command_timeout, pubsub.subscribe(&channel)).await?;
        let (tx, rx) = mpsc::channel(INBOX_QUEUE);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                {
                    let mut messages = pubsub.on_message();
                    // Wakes on: a message, the end of the connection, or the consumer going away.
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => {
                                    if tx.try_send(message.get_payload_bytes().to_vec()).is_err() {
                                        if tx.is_closed() {
                                            return;
                                        }
                                        tracing::warn!("node inbox full; message dropped");
                                    }
                                }
                                None => break,
                            },
                            () = tx.closed() => return,
                        }
                    }
                }
                tracing::warn!("node inbox connection lost; reconnecting");
                loop {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(config.reconnect_max_delay);
                    let attempt = async {
                        let mut fresh =
                            bounded(config.connect_timeout, client.get_async_pubsub()).await?;
                        bounded(config.command_timeout, fresh.subscribe(&channel)).await?;
                        Ok::<_, RedisEngineError>(fresh)
                    };
                    if let Ok(fresh) = attempt.await {
                        pubsub = fresh;
                        delay = Duration::from_millis(50);
                        break;
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

impl NodeInbox for RedisEngine {
    fn send<'a>(
        &'a self,
        node_id: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, EngineError>> {
        Box::pin(async move { Ok(self.send_to_node(node_id, payload).await?) })
    }

    fn open<'a>(
        &'a self,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<mpsc::Receiver<Vec<u8>>, EngineError>> {
        Box::pin(async move { Ok(self.node_inbox(node_id).await?) })
    }
}
