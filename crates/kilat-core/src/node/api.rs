//! The server-side API of [`Node`], called by the HTTP API: disconnect, channels, publish,
//! history and presence. (Server-side subscribe and unsubscribe of a user's connections are in
//! `server_subs.rs`.)

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use kilat_protocol::reply::{HistoryResult, PresenceEntry, PresenceResult, PresenceStatsResult};
use kilat_protocol::{ClientInfo, Disconnect, Payload, Publication, RawJson, StreamPosition};

use super::{HistoryOptions, Node};
use crate::config::NamespaceOptions;
use crate::engine::{HistoryQuery, Latest, PublishOptions};
use crate::limits::{PRESENCE_PAGE_BYTES, PRESENCE_PAGE_DEFAULT, PRESENCE_PAGE_MAX};

/// Most keys whose latest value a channel keeps (namespaces with `latest`).
pub(crate) const MAX_LATEST_KEYS: usize = 10_000;
use crate::error::CoreError;
use crate::permissions::resolve;

impl Node {
    /// Closes the sessions of `user` (only connection `client` when given) with `disconnect`.
    /// Returns how many were closed.
    pub fn disconnect(&self, user: &str, client: Option<&str>, disconnect: Disconnect) -> usize {
        self.inner.sessions.disconnect(user, client, &disconnect)
    }

    /// Channels with at least one subscriber on this node.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = self.inner.hub.channel_names();
        channels.sort();
        channels
    }

    /// How many connections on this node are subscribed to `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.inner.hub.subscriber_count(channel)
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
        self.publish_with(channel, Payload::Json(data), None, &ns)
            .await
    }

    /// Publishes `payload` (JSON or binary) to `channel` from the server, like
    /// [`Node::publish`]; a binary payload's decoded size counts against `max_message_size`.
    ///
    /// # Errors
    /// 400 bad channel, 404 unknown namespace, 413 too large, 503 engine.
    pub async fn publish_payload(
        &self,
        channel: &str,
        payload: Payload,
    ) -> Result<Option<StreamPosition>, CoreError> {
        let ns = resolve(&self.inner.config, channel)?;
        if payload.len() > ns.max_message_size {
            return Err(CoreError::TooLarge);
        }
        self.publish_with(channel, payload, None, &ns).await
    }

    pub(crate) async fn publish_with(
        &self,
        channel: &str,
        payload: Payload,
        info: Option<ClientInfo>,
        ns: &NamespaceOptions,
    ) -> Result<Option<StreamPosition>, CoreError> {
        let mut publication = match payload {
            Payload::Json(data) => Publication::json(data),
            Payload::Binary(bytes) => Publication::bytes(bytes),
        };
        publication.info = info;
        let key = match (&ns.conflate_key, &publication.binary) {
            (Some(_), Some(_)) => {
                return Err(CoreError::BadRequest(
                    "binary data has no key field: this channel's namespace sets conflate_key, \
                     publish JSON data there"
                        .into(),
                ));
            }
            (Some(field), None) => crate::keys::publication_key(publication.data.get(), field)
                .map_err(|error| CoreError::BadRequest(error.message(field).into()))?,
            (None, _) => Box::default(),
        };
        let options = PublishOptions {
            history_size: ns.history_size,
            history_ttl: ns.effective_history_ttl(),
        };
        let broker = &self.inner.broker;
        let position = if ns.latest {
            let (position, kept) = broker
                .publish_latest(channel, publication, options, &key, MAX_LATEST_KEYS)
                .await?;
            if kept == Latest::Full {
                tracing::warn!(
                    channel,
                    key = &*key,
                    "latest: the channel keeps {MAX_LATEST_KEYS} keys already; this new key's \
                     publication was delivered but is not kept for new subscribers"
                );
            }
            position
        } else {
            broker.publish(channel, publication, options).await?
        };
        self.inner.publications.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = self.inner.hub.observer.get() {
            observer.published(channel);
        }
        Ok(position)
    }

    /// Reads `channel`'s history (docs/protocol.md section 4, `history`).
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
        let page = self.read_history(channel, query).await?;
        if let Some(since) = &options.since
            && since.epoch != page.position.epoch
        {
            return Err(CoreError::EpochMismatch);
        }
        Ok(HistoryResult {
            publications: page.publications,
            offset: page.position.offset,
            epoch: page.position.epoch,
            more: false,
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

    /// Everyone present in `channel`, in one list (for callers whose channels are small by
    /// design, such as Pusher's presence channels; clients page with [`Node::presence_page`]).
    ///
    /// # Errors
    /// 400 bad channel, 503 engine.
    pub async fn presence(&self, channel: &str) -> Result<PresenceResult, CoreError> {
        kilat_protocol::validate_channel(channel)?;
        let entries = self.inner.presence.list(channel).await?;
        Ok(PresenceResult {
            clients: presence_map(entries),
            cursor: None,
        })
    }

    /// One page of who is present in `channel`: at most `limit` members (absent:
    /// [`PRESENCE_PAGE_DEFAULT`]; clamped to [`PRESENCE_PAGE_MAX`]) starting at `cursor`
    /// (absent or `""`: the first page; otherwise the previous reply's `cursor`), and at most
    /// about a quarter of `client_queue_max_bytes` (at most 256 KiB), so no reply can fill a
    /// client's queue. The reply's `cursor` is absent on the last page.
    ///
    /// # Errors
    /// 400 bad channel or a cursor the engine never handed out, 503 engine.
    pub async fn presence_page(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<PresenceResult, CoreError> {
        kilat_protocol::validate_channel(channel)?;
        let cursor = cursor.unwrap_or("");
        if cursor.len() > PRESENCE_CURSOR_MAX {
            return Err(CoreError::BadRequest("presence cursor is too long".into()));
        }
        let limit = limit.map_or(PRESENCE_PAGE_DEFAULT, |l| {
            (l as usize).clamp(1, PRESENCE_PAGE_MAX)
        });
        let max_bytes = (self.inner.config.client_queue_max_bytes / 4).min(PRESENCE_PAGE_BYTES);
        let page = self
            .inner
            .presence
            .page(channel, cursor, limit, max_bytes)
            .await?;
        Ok(PresenceResult {
            clients: presence_map(page.entries),
            cursor: (!page.cursor.is_empty()).then_some(page.cursor),
        })
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
}

/// Longest `presence` cursor accepted (engines hand out ids and numbers far shorter).
const PRESENCE_CURSOR_MAX: usize = 256;

/// `entries` by client id, as a `presence` reply lists them.
fn presence_map(entries: Vec<ClientInfo>) -> BTreeMap<String, PresenceEntry> {
    entries
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
        .collect()
}
