//! Node subscriptions on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`).
//!
//! A sharded channel lives on the master owning its slot; ours share the slot of the
//! channel's keys, so the publish script may `SPUBLISH` it. The cluster connection routes
//! each `SSUBSCRIBE` to that master, delivers messages as RESP3 pushes to [`push_handler`]
//! (one connection per master, so a channel's messages keep their order) and resubscribes by
//! itself after reconnects and slot moves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::config::RedisConfig;
use crate::error::{RedisEngineError, bounded};
use crate::keys::pubsub_channel;
use crate::pubsub::{HandlerSlot, dispatch, lock};

/// This node's inbox on a cluster, once opened: its sharded channel and where its messages go.
pub(crate) type InboxSlot = Arc<OnceLock<(String, mpsc::Sender<Vec<u8>>)>>;

/// The push callback: hands sharded messages to the node inbox when they are on its channel,
/// else to the hub's handler.
pub(crate) fn push_handler(
    handler: HandlerSlot,
    inbox: InboxSlot,
    config: Arc<RedisConfig>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        if push.kind == PushKind::SMessage
            && let [Value::BulkString(channel), Value::BulkString(payload), ..] =
                push.data.as_slice()
            && let Ok(channel) = std::str::from_utf8(channel)
        {
            if let Some((inbox_channel, tx)) = inbox.get()
                && channel == inbox_channel
            {
                if tx.try_send(payload.clone()).is_err() && !tx.is_closed() {
                    tracing::warn!("node inbox full; message dropped");
                }
            } else if let Some(handler) = handler.get() {
                dispatch(handler.as_ref(), &config.key_prefix, channel, payload);
            }
        }
        Ok(())
    }
}

/// The channels this node holds on the cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterSubscriptions {
    /// Kilat channels asked for, mapped to whether `SSUBSCRIBE` was confirmed (the fast path
    /// of `subscribe`). A failed attempt stays in the map so `unsubscribe` still undoes it
    /// (the attempt may have reached the cluster after our timeout).
    channels: Mutex<HashMap<String, bool>>,
    /// Serializes SSUBSCRIBE/SUNSUBSCRIBE, so `channels` and the cluster agree.
    ops: tokio::sync::Mutex<()>,
}

impl ClusterSubscriptions {
    pub(crate) async fn subscribe(
        &self,
        conn: &ClusterConnection,
        config: &RedisConfig,
        channel: &str,
    ) -> Result<(), RedisEngineError> {
        if lock(&self.channels).get(channel) == Some(&true) {
            return Ok(());
        }
        let _ops = bounded(config.command_timeout, async {
            Ok::<_, RedisEngineError>(self.ops.lock().await)
        })
        .await?;
        {
            let mut channels = lock(&self.channels);
            if channels.get(channel) == Some(&true) {
                return Ok(());
            }
            channels.insert(channel.to_owned(), false);
        }
        let mut conn = conn.clone();
        let name = pubsub_channel(&config.key_prefix, channel);
        bounded(config.command_timeout, conn.ssubscribe(&name)).await?;
        lock(&self.channels).insert(channel.to_owned(), true);
        Ok(())
    }

    pub(crate) async fn unsubscribe(
        &self,
        conn: &ClusterConnection,
        config: &RedisConfig,
        channel: &str,
    ) -> Result<(), RedisEngineError> {
        let _ops = bounded(config.command_timeout, async {
            Ok::<_, RedisEngineError>(self.ops.lock().await)
        })
        .await?;
        if lock(&self.channels).remove(channel).is_none() {
            return Ok(());
        }
        let mut conn = conn.clone();
        let name = pubsub_channel(&config.key_prefix, channel);
        bounded(config.command_timeout, conn.sunsubscribe(&name)).await
    }

    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.channels).len()
    }
}
