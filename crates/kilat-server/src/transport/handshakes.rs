//! The bound on concurrent handshakes (`server.max_handshakes`): how many connections may be
//! between their admission and their connect reply at once.
//!
//! A handshake is the expensive part of a connection's life: the token is checked, and the
//! `connect` command subscribes, adds presence, publishes joins and reads history for
//! recovery, each a call to the engine. After a node dies its clients all reconnect to the
//! others at once; unbounded, those handshakes queue on the engine until its calls time out
//! and everyone fails (docs/reliability.md, the reconnect storm). Bounded, a node serves a
//! fixed number at a time and answers the rest `503` with `Retry-After` before the upgrade,
//! cheaply, so they come back with their backoff: the storm is admitted at the rate the node
//! can serve it, and the clients already connected keep their latency.
//!
//! The permit taken at admission goes into the session ([`kilat_core::Session::hold_until_connected`])
//! and is released once the connect reply is queued, or when the handshake fails; it is not
//! held for the connection's life. The client's first message after the reply (the SDK
//! resubscribes in one message right after connecting) waits for a permit of the same pool
//! and holds it while it is handled: in a storm, admitted clients' resubscriptions go first
//! (new upgrades are refused while they wait), and a client silent after connecting holds none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's handshake permits and the count of refusals for `/metrics`.
#[derive(Debug)]
pub(crate) struct Handshakes {
    /// `None` when unbounded (`max_handshakes = 0`).
    permits: Option<Arc<Semaphore>>,
    /// The configured bound (0: none).
    limit: usize,
    /// Connection attempts refused because every permit was taken.
    refused: AtomicU64,
}

impl Handshakes {
    /// At most `limit` handshakes at once; 0: no bound.
    pub(crate) fn new(limit: usize) -> Self {
        Handshakes {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            limit,
            refused: AtomicU64::new(0),
        }
    }

    /// A permit for one more handshake, `Ok(None)` when unbounded.
    ///
    /// # Errors
    /// When all `limit` permits are held; counted in [`Handshakes::refused`].
    pub(crate) fn try_start(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(permits) = &self.permits else {
            return Ok(None);
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                // Counted with a relaxed add: only on refusals, never on an admitted handshake.
                let before = self.refused.fetch_add(1, Ordering::Relaxed);
                // One line per 1000 refusals: a storm refuses tens of thousands.
                if before.is_multiple_of(1000) {
                    tracing::warn!(
                        limit = self.limit,
                        refused = before + 1,
                        "handshake limit reached; refusing connections with 503 and Retry-After (server.max_handshakes)"
                    );
                }
                Err(())
            }
        }
    }

    /// Handshakes in progress now.
    pub(crate) fn in_progress(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |permits| self.limit - permits.available_permits())
    }

    /// The configured bound (0: none).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Connection attempts refused at the bound since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_refuses_past_the_limit_and_frees_on_drop() {
        let handshakes = Handshakes::new(2);
        let one = handshakes.try_start().expect("1").expect("bounded");
        let _two = handshakes.try_start().expect("2");
        assert_eq!(handshakes.in_progress(), 2);
        assert!(handshakes.try_start().is_err());
        assert_eq!(handshakes.refused(), 1);
        drop(one);
        assert!(handshakes.try_start().is_ok());
        assert!(Handshakes::new(0).try_start().expect("unbounded").is_none());
    }
}
