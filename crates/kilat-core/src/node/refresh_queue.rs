//! The presence refreshes a node has queued for its next window, per channel (sent by
//! `refresh.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use kilat_protocol::ClientInfo;

use crate::util::lock;

/// The refreshes queued for the next window, per channel.
#[derive(Debug, Default)]
pub(crate) struct RefreshQueue(Mutex<HashMap<String, Pending>>);

/// One channel's queued refreshes: the sessions' keys and their entries, index for index.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) keys: Vec<u64>,
    pub(super) infos: Vec<ClientInfo>,
}

impl RefreshQueue {
    /// Queues session `key`'s entry `info` in each of `channels`; `true` when the queue was
    /// empty (the caller starts the window).
    pub(super) fn push(&self, key: u64, info: &ClientInfo, channels: Vec<String>) -> bool {
        let mut queued = lock(&self.0);
        let first = queued.is_empty();
        for channel in channels {
            let pending = queued.entry(channel).or_default();
            pending.keys.push(key);
            pending.infos.push(info.clone());
        }
        first
    }

    /// Everything queued, leaving the queue empty.
    pub(super) fn take(&self) -> HashMap<String, Pending> {
        std::mem::take(&mut *lock(&self.0))
    }
}
