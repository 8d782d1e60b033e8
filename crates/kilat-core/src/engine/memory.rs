//! The in-memory engine: [`MemoryBroker`] and [`MemoryPresence`] for a single node, and
//! [`SingleNode`], its node registry and inbox (no other node exists).
//!
//! Streams live in sharded maps. A publish takes its channel's shard lock, assigns the offset,
//! appends to the channel's ring and calls the handler before releasing the lock, so delivery
//! order is offset order and no publication can slip between a history read and the live
//! stream. Time is `tokio::time::Instant`, so tests drive TTLs with a paused clock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kilat_protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use tokio::time::Instant;

use super::shard_of;
use super::{
    BoxFuture, Broker, BrokerHandler, EngineError, HistoryPage, HistoryQuery, JoinLeave, Latest,
    NodeInbox, NodeRegistry, PresencePage, PresenceStats, PresenceStore, PublishOptions,
    presence_entry_len,
};
use crate::util::{lock, new_epoch};

const SHARDS: usize = 64;

/// One channel's stream.
#[derive(Debug)]
struct Stream {
    /// Identifies this life of the stream; changes when the stream is recreated.
    epoch: String,
    /// Offset of the last publication appended (0 before the first).
    top: u64,
    /// Kept publications with their expiry, oldest first.
    items: VecDeque<(Publication, Instant)>,
    /// When the stream (offset and epoch) is forgotten if nothing is published.
    meta_expires: Instant,
    /// The latest publication per key with its expiry (namespaces with `latest`).
    latest: HashMap<Box<str>, (Publication, Instant)>,
}

impl Stream {
    fn new(now: Instant, meta_ttl: Duration) -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            items: VecDeque::new(),
            meta_expires: now + meta_ttl,
            latest: HashMap::new(),
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        while self.items.front().is_some_and(|(_, exp)| *exp <= now) {
            self.items.pop_front();
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// A single-node broker keeping history in memory.
pub struct MemoryBroker {
    /// The hub's handler, set once by the node.
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// Streams by channel, sharded by channel name.
    shards: Box<[Mutex<HashMap<String, Stream>>]>,
    /// How long a stream's offset and epoch outlive its last publication.
    meta_ttl: Duration,
    /// Publishes since start; every [`SWEEP_EVERY`]th sweeps its shard of dead streams.
    publishes: std::sync::atomic::AtomicU64,
}

/// How often (in publishes) a shard is swept of streams whose metadata expired, so channels
/// that are never touched again do not stay in memory.
const SWEEP_EVERY: u64 = 1024;

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("meta_ttl", &self.meta_ttl)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new(Duration::from_secs(24 * 3600))
    }
}

impl MemoryBroker {
    /// A broker whose streams are forgotten `meta_ttl` after their last publication.
    pub fn new(meta_ttl: Duration) -> Self {
        MemoryBroker {
            handler: OnceLock::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            meta_ttl,
            publishes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<HashMap<String, Stream>> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// The live stream of `channel`, recreated (new epoch) when its metadata expired.
    fn stream<'m>(
        map: &'m mut HashMap<String, Stream>,
        channel: &str,
        now: Instant,
        meta_ttl: Duration,
    ) -> &'m mut Stream {
        let stream = map
            .entry(channel.to_owned())
            .or_insert_with(|| Stream::new(now, meta_ttl));
        if stream.meta_expires <= now {
            *stream = Stream::new(now, meta_ttl);
        }
        stream.drop_expired(now);
        stream
    }
}

impl MemoryBroker {
    /// Publishes under the channel's shard lock; with `latest` (key, most keys) keeps the
    /// publication as the key's latest value in the same critical section.
    fn publish_locked(
        &self,
        channel: &str,
        mut publication: Publication,
        options: PublishOptions,
        latest: Option<(&str, usize)>,
    ) -> (Option<StreamPosition>, Latest) {
        let now = Instant::now();
        let mut map = lock(self.shard(channel));
        let n = self
            .publishes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            map.retain(|_, stream| stream.meta_expires > now);
        }
        if options.history_size == 0 || options.history_ttl.is_zero() {
            publication.offset = None;
            if let Some(handler) = self.handler.get() {
                handler.on_publication(channel, &publication, "");
            }
            return (None, Latest::Unstored);
        }
        let meta_ttl = self.meta_ttl.max(options.history_ttl);
        let stream = Self::stream(&mut map, channel, now, meta_ttl);
        stream.top += 1;
        stream.meta_expires = now + meta_ttl;
        publication.offset = Some(stream.top);
        if let Some(handler) = self.handler.get() {
            handler.on_publication(channel, &publication, &stream.epoch);
        }
        let kept = match latest {
            None => Latest::Unstored,
            Some((key, max_keys)) => {
                let expires = now + options.history_ttl;
                if !stream.latest.contains_key(key) && stream.latest.len() >= max_keys {
                    stream.latest.retain(|_, (_, at)| *at > now);
                }
                if stream.latest.contains_key(key) || stream.latest.len() < max_keys {
                    stream
                        .latest
                        .insert(key.into(), (publication.clone(), expires));
                    Latest::Kept
                } else {
                    Latest::Full
                }
            }
        };
        stream
            .items
            .push_back((publication, now + options.history_ttl));
        while stream.items.len() > options.history_size {
            stream.items.pop_front();
        }
        (Some(stream.position()), kept)
    }
}

impl Broker for MemoryBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, EngineError>> {
        Box::pin(async move { Ok(self.publish_locked(channel, publication, options, None).0) })
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        kind: JoinLeave,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            // Under the channel's lock, so join/leave are ordered with publications.
            let _map = lock(self.shard(channel));
            if let Some(handler) = self.handler.get() {
                handler.on_join_leave(channel, &info, kind == JoinLeave::Join);
            }
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        // One node: every publication already reaches the handler.
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = lock(self.shard(channel));
            let stream = Self::stream(&mut map, channel, now, self.meta_ttl);
            let limit = query.limit.unwrap_or(usize::MAX);
            let items = stream.items.iter().map(|(p, _)| p);
            let offset_of = |p: &Publication| p.offset.unwrap_or(0);
            let publications: Vec<Publication> = match (query.since, query.reverse) {
                (None, false) => {
                    let skip = stream.items.len().saturating_sub(limit);
                    items.skip(skip).cloned().collect()
                }
                (None, true) => items.rev().take(limit).cloned().collect(),
                // Offsets only grow along the stream, so the start is found by binary search and
                // a recovery read costs what it returns, not the whole kept history.
                (Some(since), false) => {
                    let start = stream.items.partition_point(|(p, _)| offset_of(p) <= since);
                    items.skip(start).take(limit).cloned().collect()
                }
                (Some(since), true) => {
                    let end = stream.items.partition_point(|(p, _)| offset_of(p) < since);
                    items.take(end).rev().take(limit).cloned().collect()
                }
            };
            Ok(HistoryPage {
                publications,
                position: stream.position(),
            })
        })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            lock(self.shard(channel)).remove(channel);
            Ok(())
        })
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
            Ok(self.publish_locked(channel, publication, options, Some((key, max_keys))))
        })
    }

    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = lock(self.shard(channel));
            let stream = Self::stream(&mut map, channel, now, self.meta_ttl);
            stream.latest.retain(|_, (_, expires)| *expires > now);
            let mut publications: Vec<Publication> =
                stream.latest.values().map(|(p, _)| p.clone()).collect();
            publications.sort_unstable_by_key(|p| p.offset);
            Ok(HistoryPage {
                publications,
                position: stream.position(),
            })
        })
    }
}

/// One client's presence entry in a channel, with its expiry.
///
/// Ordered and compared by client id (and found by it through `Borrow<str>`), so the id is held
/// once, inside the info, instead of again as a map key: this is memory per subscriber. The
/// order is what pages follow: a page's cursor is the last client id it returned.
#[derive(Debug)]
struct Present {
    info: ClientInfo,
    expires: Instant,
}

impl PartialEq for Present {
    fn eq(&self, other: &Self) -> bool {
        self.info.client == other.info.client
    }
}

impl Eq for Present {}

impl PartialOrd for Present {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Present {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.info.client.cmp(&other.info.client)
    }
}

impl std::borrow::Borrow<str> for Present {
    fn borrow(&self) -> &str {
        &self.info.client
    }
}

/// Presence of one channel: the entries by client id, and the counts kept with every add and
/// remove so [`PresenceStore::stats`] is two lengths.
#[derive(Debug)]
struct ChannelPresence {
    /// Entries ordered by client id (pages walk this order).
    entries: BTreeSet<Present>,
    /// Entries per user id (a user's last entry leaving removes the user).
    users: HashMap<Box<str>, u32>,
    /// No entry expires before this (a lower bound: refreshes do not raise it). Until then a
    /// read skips the sweep, so reads are O(1) (stats) or O(page) (page); a sweep recomputes
    /// it from the entries, so with live sessions refreshing on every ping a channel is swept
    /// about once per `presence_ttl` minus the ping interval, not per read.
    earliest: Instant,
}

impl ChannelPresence {
    fn new(now: Instant) -> Self {
        ChannelPresence {
            entries: BTreeSet::new(),
            users: HashMap::new(),
            earliest: now,
        }
    }

    fn forget_user(&mut self, user: &str) {
        if let Some(n) = self.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(user);
            }
        }
    }

    fn insert(&mut self, present: Present) {
        self.earliest = self.earliest.min(present.expires);
        let user = present.info.user.as_str();
        match self.users.get_mut(user) {
            Some(n) => *n += 1,
            None => {
                self.users.insert(user.into(), 1);
            }
        }
        if let Some(old) = self.entries.replace(present) {
            self.forget_user(&old.info.user);
        }
    }

    fn remove(&mut self, client: &str) {
        if let Some(old) = self.entries.take(client) {
            self.forget_user(&old.info.user);
        }
    }

    /// Moves the expiry of `info.client`'s entry to `expires` if it is held with the same
    /// info; `false` (and nothing changed) otherwise.
    fn extend(&mut self, info: &ClientInfo, expires: Instant) -> bool {
        let Some(mut present) = self.entries.take(info.client.as_str()) else {
            return false;
        };
        let same = present.info.user == info.user
            && present.info.info.as_ref().map(|i| i.get()) == info.info.as_ref().map(|i| i.get());
        if same {
            present.expires = expires;
        }
        self.entries.insert(present);
        same
    }

    /// Drops the expired entries, when any can be expired.
    fn sweep(&mut self, now: Instant) {
        if now < self.earliest {
            return;
        }
        let mut earliest = None::<Instant>;
        let mut dead = Vec::new();
        for entry in &self.entries {
            if entry.expires <= now {
                dead.push(entry.info.client.clone());
            } else {
                earliest = Some(earliest.map_or(entry.expires, |e| e.min(entry.expires)));
            }
        }
        for client in dead {
            self.remove(&client);
        }
        // Nothing left: the channel is removed by the caller; any future add lowers it.
        self.earliest = earliest.unwrap_or(now + Duration::from_secs(3600));
    }

    fn stats(&self) -> PresenceStats {
        PresenceStats {
            num_clients: u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
            num_users: u32::try_from(self.users.len()).unwrap_or(u32::MAX),
        }
    }
}

/// Single-node presence in memory.
#[derive(Debug)]
pub struct MemoryPresence {
    /// Entries by channel, sharded by channel name.
    shards: Box<[Mutex<HashMap<String, ChannelPresence>>]>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryPresence {
    /// An empty presence store.
    pub fn new() -> Self {
        MemoryPresence::default()
    }

    fn shard(&self, channel: &str) -> &Mutex<HashMap<String, ChannelPresence>> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// Runs `f` on `channel`'s presence after sweeping its expired entries (`None` when the
    /// channel has none), and forgets the channel if it is left empty.
    fn with_live<T>(&self, channel: &str, f: impl FnOnce(Option<&ChannelPresence>) -> T) -> T {
        let now = Instant::now();
        let mut map = lock(self.shard(channel));
        let Some(presence) = map.get_mut(channel) else {
            return f(None);
        };
        presence.sweep(now);
        if presence.entries.is_empty() {
            map.remove(channel);
            return f(None);
        }
        f(Some(presence))
    }
}

impl PresenceStore for MemoryPresence {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = lock(self.shard(channel));
            let presence = match map.get_mut(channel) {
                Some(presence) => presence,
                None => map
                    .entry(channel.to_owned())
                    .or_insert_with(|| ChannelPresence::new(now + ttl)),
            };
            presence.sweep(now);
            presence.insert(Present {
                info,
                expires: now + ttl,
            });
            Ok(())
        })
    }

    fn touch<'a>(
        &'a self,
        channel: &'a str,
        entries: &'a [ClientInfo],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = lock(self.shard(channel));
            let Some(presence) = map.get_mut(channel) else {
                return Ok((0..entries.len()).collect());
            };
            presence.sweep(now);
            Ok(entries
                .iter()
                .enumerate()
                .filter(|(_, info)| !presence.extend(info, now + ttl))
                .map(|(i, _)| i)
                .collect())
        })
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut map = lock(self.shard(channel));
            if let Some(presence) = map.get_mut(channel) {
                presence.remove(client);
                if presence.entries.is_empty() {
                    map.remove(channel);
                }
            }
            Ok(())
        })
    }

    fn list<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>> {
        Box::pin(async move {
            Ok(self.with_live(channel, |presence| {
                presence.map_or_else(Vec::new, |p| {
                    p.entries.iter().map(|e| e.info.clone()).collect()
                })
            }))
        })
    }

    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<PresenceStats, EngineError>> {
        Box::pin(async move {
            // Two lengths (a big channel's counts are read once per join/leave window above
            // `presence_diff_max`, on every node).
            Ok(self.with_live(channel, |presence| {
                presence.map_or_else(PresenceStats::default, ChannelPresence::stats)
            }))
        })
    }

    fn page<'a>(
        &'a self,
        channel: &'a str,
        cursor: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<PresencePage, EngineError>> {
        Box::pin(async move {
            // The cursor is the last client id of the previous page: the next page starts
            // after it in id order, so a member present throughout is on exactly one page
            // whatever joins and leaves meanwhile. Any string is a valid place to start.
            Ok(self.with_live(channel, |presence| {
                let Some(presence) = presence else {
                    return PresencePage::default();
                };
                let start = if cursor.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(cursor)
                };
                let mut entries = Vec::new();
                let mut bytes = 0;
                let mut rest = presence.entries.range::<str, _>((start, Bound::Unbounded));
                for entry in rest.by_ref() {
                    let len = presence_entry_len(&entry.info);
                    if !entries.is_empty() && bytes + len > max_bytes {
                        // Not taken: the next page starts before it.
                        let last: &ClientInfo = entries.last().expect("not empty");
                        return PresencePage {
                            cursor: last.client.clone(),
                            entries,
                        };
                    }
                    bytes += len;
                    entries.push(entry.info.clone());
                    if entries.len() >= limit.max(1) {
                        break;
                    }
                }
                let cursor = match (rest.next(), entries.last()) {
                    (Some(_), Some(last)) => last.client.clone(),
                    _ => String::new(),
                };
                PresencePage { entries, cursor }
            }))
        })
    }
}

/// The memory engine's [`NodeRegistry`] and [`NodeInbox`]: a memory engine serves one node, so
/// no other node is ever listed and no inbox ever receives. A heartbeat is accepted and
/// forgotten (the caller always knows its own entry); a send reaches nobody (0); an opened
/// inbox is closed at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleNode;

impl NodeRegistry for SingleNode {
    fn heartbeat<'a>(
        &'a self,
        _node_id: &'a str,
        _info: &'a RawJson,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(&'a self, _node_id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<RawJson>, EngineError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl NodeInbox for SingleNode {
    fn send<'a>(
        &'a self,
        _node_id: &'a str,
        _payload: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, EngineError>> {
        Box::pin(async { Ok(0) })
    }

    fn open<'a>(
        &'a self,
        _node_id: &'a str,
    ) -> BoxFuture<'a, Result<tokio::sync::mpsc::Receiver<Vec<u8>>, EngineError>> {
        // The sender is dropped here: the receiver reports the end at once.
        Box::pin(async { Ok(tokio::sync::mpsc::channel(1).1) })
    }
}
