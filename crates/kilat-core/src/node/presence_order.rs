//! [`PresenceOrder`]: keeps one client's presence writes in the order of its subscriptions.
//!
//! A session's presence entries are written from more than one task: the session's own commands
//! (subscribe, unsubscribe, close), the server API (server-side subscribe and unsubscribe) and
//! the refresh that each ping starts in a background task (`Session::on_timer` is synchronous).
//! Without an order between them, a refresh started at a ping and run after a leave that
//! overtook it re-adds the entry the leave removed, and it stays until its TTL (the one-hour
//! soak of 2026-12-02 ended with such an entry). So every add and remove of a client's entries
//! happens under its stripe's lock, and an add (join or refresh) first checks, under that lock,
//! that the hub still holds the subscription: the hub is left before the leave takes the lock,
//! so an add after the leave sees it gone and does nothing.
//!
//! Striped by client id: no memory per connection, and no lock on the delivery path (only
//! subscribe, unsubscribe, close and the refresh at each ping take one).

use tokio::sync::{Mutex, MutexGuard};

use crate::engine::shard_of;

/// Stripes: enough that unrelated clients rarely wait for each other's engine call.
const STRIPES: usize = 256;

/// One async lock per stripe of client ids.
pub(crate) struct PresenceOrder {
    stripes: Box<[Mutex<()>]>,
}

impl Default for PresenceOrder {
    fn default() -> Self {
        PresenceOrder {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl PresenceOrder {
    /// Waits for `client`'s stripe; its presence writes run while the guard is held.
    pub(crate) async fn lock(&self, client: &str) -> MutexGuard<'_, ()> {
        self.stripes[shard_of(client, self.stripes.len())]
            .lock()
            .await
    }
}
