//! [`SessionRegistry`]: the node's open sessions, sharded by key. A drain, a server-side
//! disconnect and server-side subscriptions find connections here; the per-user connection
//! count is kept with it, released when a session leaves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kilat_protocol::{ClientInfo, Disconnect};

use crate::limits::UserConnections;
use crate::outbox::Outbox;
use crate::subscriptions::SubState;
use crate::util::lock;

const SESSION_SHARDS: usize = 16;

/// What the registry knows about one session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    /// Where a drain or a server-side disconnect sends its close.
    pub(crate) outbox: Outbox,
    /// Set at connect: who the connection is, for `disconnect(user, client)` and server-side
    /// subscriptions (presence and join/leave need the whole info).
    pub(crate) identity: Option<ClientInfo>,
    /// Server-side changes the session has not absorbed yet (see [`ServerChanges`]). Boxed:
    /// rarely any, and every connection has an entry in this map.
    changes: Option<Box<ServerChanges>>,
    /// The transport (an index into [`SessionRegistry::transports`]) and when the session
    /// started (whole seconds after the registry was made), for the admin API's connection
    /// list (`Node::connections`). Small on purpose: every connection has an entry, and a
    /// `&str` plus an `Instant` would cost it 32 bytes instead of 5.
    pub(crate) transport: u8,
    pub(crate) started_s: u32,
    /// The hash of the connection token's `jti` (0: none), so a revocation by `jti` finds
    /// the sessions holding it (`revoke.rs`); a hash, not the id, to keep every entry small.
    token: u64,
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
    /// What the backend's sub-refresh hook answered for expired subscriptions: the new expiry
    /// (Unix seconds, `None` for none), or `Err(())` for a refusal.
    pub(crate) refreshed: Vec<(String, Result<Option<u64>, ()>)>,
}

/// The open sessions of one node.
pub(crate) struct SessionRegistry {
    /// Open sessions by key, sharded; read by drain and server-side disconnects.
    shards: Box<[Mutex<HashMap<u64, SessionEntry>>]>,
    /// Source of session keys (unique per node, never reused).
    next_key: AtomicU64,
    /// Set by [`SessionRegistry::shutdown`]; new sessions are closed at once with 3000.
    draining: AtomicBool,
    /// Open connections per user (`max_connections_per_user`), counted at connect, released
    /// when the session leaves the registry.
    users: UserConnections,
    /// The most connections one user may hold (0 = no limit).
    max_per_user: usize,
    /// The transport names seen so far; entries keep an index into it.
    transports: Mutex<Vec<&'static str>>,
    /// When the registry was made; entries count their start in seconds from it.
    epoch: std::time::Instant,
}

impl SessionRegistry {
    pub(crate) fn new(max_per_user: usize) -> Self {
        SessionRegistry {
            shards: (0..SESSION_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next_key: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            users: UserConnections::default(),
            max_per_user,
            transports: Mutex::new(Vec::new()),
            epoch: std::time::Instant::now(),
        }
    }

    /// The index of transport `name` (a handful of names ever; past 255 they share the last).
    fn transport_index(&self, name: &'static str) -> u8 {
        let mut names = lock(&self.transports);
        if let Some(at) = names.iter().position(|known| *known == name) {
            return u8::try_from(at).unwrap_or(u8::MAX);
        }
        if names.len() > usize::from(u8::MAX) {
            return u8::MAX;
        }
        names.push(name);
        u8::try_from(names.len() - 1).unwrap_or(u8::MAX)
    }

    /// The name behind a transport index of an entry.
    pub(crate) fn transport_name(&self, index: u8) -> &'static str {
        lock(&self.transports)
            .get(usize::from(index))
            .copied()
            .unwrap_or("other")
    }

    /// How long ago an entry with `started_s` started, to the second.
    pub(crate) fn age(&self, started_s: u32) -> std::time::Duration {
        self.epoch
            .elapsed()
            .saturating_sub(std::time::Duration::from_secs(u64::from(started_s)))
    }

    /// Every shard, for the admin API's scans (`node/inspect.rs`) and the queue-depth gauges.
    pub(crate) fn shards(&self) -> &[Mutex<HashMap<u64, SessionEntry>>] {
        &self.shards
    }

    /// Bytes waiting in outboxes: the total over the sessions and the largest one, read at
    /// scrape time (one uncontended lock per shard) for the queue-depth gauges.
    pub(crate) fn queued_bytes(&self) -> (u64, u64) {
        let (mut total, mut largest) = (0u64, 0u64);
        for shard in self.shards.iter() {
            for entry in lock(shard).values() {
                let bytes = entry.outbox.queued_bytes() as u64;
                total += bytes;
                largest = largest.max(bytes);
            }
        }
        (total, largest)
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, SessionEntry>> {
        &self.shards[(key % SESSION_SHARDS as u64) as usize]
    }

    /// Registers a new session; returns its key. While draining, `outbox` is closed with 3000
    /// at once.
    pub(crate) fn register(&self, outbox: &Outbox, transport: &'static str) -> u64 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let transport = self.transport_index(transport);
        let started_s = u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX);
        lock(self.shard(key)).insert(
            key,
            SessionEntry {
                outbox: outbox.clone(),
                identity: None,
                changes: None,
                transport,
                started_s,
                token: 0,
            },
        );
        if self.is_draining() {
            outbox.close(Disconnect::SHUTDOWN);
        }
        key
    }

    /// Every session's outbox gets Disconnect 3000 and sessions registered from now on are
    /// closed with 3000 at once.
    /// Returns how many sessions were told `disconnect`.
    pub(crate) fn shutdown(&self, disconnect: &Disconnect) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let mut told = 0;
        for shard in self.shards.iter() {
            for entry in lock(shard).values() {
                entry.outbox.close(disconnect.clone());
                told += 1;
            }
        }
        told
    }

    /// Whether [`SessionRegistry::shutdown`] was called.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// How many sessions are open.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Counts a connection for `user`; false when the user already has the most allowed.
    pub(crate) fn try_add_user(&self, user: &str) -> bool {
        self.users.try_add(user, self.max_per_user)
    }

    /// Stops counting one connection of `user` (a protocol adapter renamed its session).
    pub(crate) fn remove_user(&self, user: &str) {
        self.users.remove(user);
    }

    pub(crate) fn set_identity(&self, key: u64, info: &ClientInfo) {
        if let Some(entry) = lock(self.shard(key)).get_mut(&key) {
            entry.identity = Some(info.clone());
        }
    }

    /// Records the hash of session `key`'s token id (see `revoke::token_hash`).
    pub(crate) fn set_token(&self, key: u64, token: u64) {
        if let Some(entry) = lock(self.shard(key)).get_mut(&key) {
            entry.token = token;
        }
    }

    /// Closes the sessions holding token `token` (a `revoke::token_hash`, not 0) with
    /// `disconnect`. Returns how many were closed.
    pub(crate) fn disconnect_token(&self, token: u64, disconnect: &Disconnect) -> usize {
        let mut closed = 0;
        for shard in self.shards.iter() {
            for entry in lock(shard).values() {
                if token != 0 && entry.token == token {
                    entry.outbox.close(disconnect.clone());
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Removes a session; returns the server-side changes it had not absorbed, so the caller
    /// can clean them up too.
    pub(crate) fn unregister(&self, key: u64) -> ServerChanges {
        let entry = lock(self.shard(key)).remove(&key);
        entry
            .and_then(|entry| {
                if let Some(info) = &entry.identity {
                    self.users.remove(&info.user);
                }
                entry.changes.map(|changes| *changes)
            })
            .unwrap_or_default()
    }

    /// Takes the server-side changes recorded for session `key`.
    pub(crate) fn take_changes(&self, key: u64) -> Option<ServerChanges> {
        let mut shard = lock(self.shard(key));
        let changes = shard.get_mut(&key)?.changes.take()?;
        Some(*changes)
    }

    /// Connected sessions of `user`: key, outbox and client info.
    pub(crate) fn sessions_of(&self, user: &str) -> Vec<(u64, Outbox, ClientInfo)> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            for (key, entry) in lock(shard).iter() {
                if let Some(info) = entry.identity.as_ref().filter(|i| i.user == user) {
                    found.push((*key, entry.outbox.clone(), info.clone()));
                }
            }
        }
        found
    }

    /// Records a server-side change for session `key`; false when the session is gone.
    pub(crate) fn record_change(&self, key: u64, change: impl FnOnce(&mut ServerChanges)) -> bool {
        match lock(self.shard(key)).get_mut(&key) {
            Some(entry) => {
                change(entry.changes.get_or_insert_default());
                true
            }
            None => false,
        }
    }

    /// Closes the sessions of `user` (only connection `client` when given) with `disconnect`.
    /// Returns how many were closed.
    pub(crate) fn disconnect(
        &self,
        user: &str,
        client: Option<&str>,
        disconnect: &Disconnect,
    ) -> usize {
        let mut closed = 0;
        for shard in self.shards.iter() {
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
}
