//! Presence refreshes, gathered per channel. At each ping a session queues its entries here;
//! within [`REFRESH_WINDOW`] they reach the presence store as one [`PresenceStore::touch`] per
//! channel (in chunks of [`TOUCH_CHUNK`]) instead of one add per entry: at 100,000 members and
//! a 25 s ping, 4,000 Redis scripts a second become a few.
//!
//! A touch never creates an entry, so it needs no ordering against leaves: an entry removed
//! before the touch stays removed. The entries the store does not hold as given (expired,
//! info changed, lost with the store's data) are re-added one by one, under the client's
//! presence lock and only while the hub still holds the subscription, as every refresh was
//! before (see `presence_order.rs`).
//!
//! [`PresenceStore::touch`]: crate::engine::PresenceStore::touch

use std::time::Duration;

use kilat_protocol::ClientInfo;

use super::Node;
use super::refresh_queue::Pending;

/// How long refreshes gather before they go to the store. Far inside the slack between the
/// ping interval and the presence TTL (refreshes are due every ping; entries live a TTL).
pub(crate) const REFRESH_WINDOW: Duration = Duration::from_millis(500);

/// Most entries in one touch (one Redis script: its arguments and run time stay small).
const TOUCH_CHUNK: usize = 500;

/// How many touches (channels or chunks) run at once.
const TOUCHES_IN_FLIGHT: usize = 16;

impl Node {
    /// Queues a refresh of session `key`'s presence entries in `channels`; the first refresh of
    /// a window starts the task that sends the window's refreshes.
    pub(crate) fn queue_presence_refresh(
        &self,
        key: u64,
        info: &ClientInfo,
        channels: Vec<String>,
    ) {
        if self.inner.refreshes.push(key, info, channels) {
            let node = self.clone();
            self.spawn(async move {
                tokio::time::sleep(REFRESH_WINDOW).await;
                node.send_refreshes().await;
            });
        }
    }

    /// Sends the queued refreshes: a touch per channel (and chunk), at most
    /// [`TOUCHES_IN_FLIGHT`] at once, then one add per entry a touch did not find.
    async fn send_refreshes(&self) {
        let queued = self.inner.refreshes.take();
        let mut running = tokio::task::JoinSet::new();
        for (channel, mut pending) in queued {
            while !pending.keys.is_empty() {
                let rest = pending.keys.len().saturating_sub(TOUCH_CHUNK);
                let chunk = Pending {
                    keys: pending.keys.split_off(rest),
                    infos: pending.infos.split_off(rest),
                };
                if running.len() >= TOUCHES_IN_FLIGHT {
                    running.join_next().await;
                }
                let (node, channel) = (self.clone(), channel.clone());
                running.spawn(async move { node.touch_presence(&channel, chunk).await });
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// One touch of up to [`TOUCH_CHUNK`] entries of `channel`, then the re-adds it asks for.
    async fn touch_presence(&self, channel: &str, chunk: Pending) {
        let ttl = self.config().presence_ttl;
        match self.inner.presence.touch(channel, &chunk.infos, ttl).await {
            Ok(absent) => {
                for i in absent {
                    if let (Some(key), Some(info)) = (chunk.keys.get(i), chunk.infos.get(i)) {
                        self.readd_presence(channel, *key, info).await;
                    }
                }
            }
            // Retried at each entry's next ping, well inside its TTL.
            Err(error) => {
                tracing::warn!(%error, channel, entries = chunk.infos.len(), "presence refresh failed");
            }
        }
    }
}
