//! [`Observer`]: the seam through which the server counts what the hub does (metrics), without
//! the hub knowing any metrics library.
//!
//! The hub calls an observer only where the work is already per connection, per command or per
//! publication; nothing is called per delivered frame (deliveries are counted by the hub's own
//! counter and handed over per publication). Without an observer set, each call site costs one
//! atomic load of an unset `OnceLock`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kilat_protocol::Method;

/// Receives the hub's events for metrics. Every method has an empty default, so an observer
/// implements only what it counts. Implementations must be cheap and must not block: they run
/// on the connection task or under the fan-out's caller.
pub trait Observer: Send + Sync + fmt::Debug + 'static {
    /// A session started on `transport` (before its `connect`).
    fn session_opened(&self, transport: &'static str) {
        let _ = transport;
    }

    /// A session on `transport` ended (closed or dropped).
    fn session_closed(&self, transport: &'static str) {
        let _ = transport;
    }

    /// A connection on `transport` ends with `code` (a client disconnect code; 3001 is a slow
    /// consumer). Connections that just went away without a close are not reported.
    fn disconnected(&self, transport: &'static str, code: u32) {
        let _ = (transport, code);
    }

    /// A connection on `transport` ended without a close frame, for `reason`: `"client_gone"`
    /// (the client closed the socket or reset it), `"write_timeout"` (it stopped reading and a
    /// write stayed blocked past the bound), `"write_failed"` (a write failed) or
    /// `"teardown_timeout"` (the final flush and close did not finish in time).
    fn dropped(&self, transport: &'static str, reason: &'static str) {
        let _ = (transport, reason);
    }

    /// A command with an id was answered after `elapsed`: `error` is the client error code it
    /// got, `None` on success. `connect` is reported too (a refused connect disconnects and
    /// reports its disconnect code as `error`).
    fn command(&self, method: Method, elapsed: Duration, error: Option<u32>) {
        let _ = (method, elapsed, error);
    }

    /// A publication to `channel` was accepted by the broker through this node.
    fn published(&self, channel: &str) {
        let _ = channel;
    }

    /// A publication of `channel` was fanned out to `delivered` local subscribers in `elapsed`
    /// (encoding included). Called once per publication that reached the hub.
    fn fanned_out(&self, channel: &str, delivered: u64, elapsed: Duration) {
        let _ = (channel, delivered, elapsed);
    }

    /// A connection on `transport` wrote `bytes` of frames to its socket in one write;
    /// `stamp` is the oldest publication stamp among them ([`kilat_protocol::SharedFrame::stamp`]).
    /// Called per socket write: keep it to a counter add, and sample anything dearer.
    fn wrote(&self, transport: &'static str, bytes: usize, stamp: Option<std::time::Instant>) {
        let _ = (transport, bytes, stamp);
    }

    /// A subscribe asked to recover from a position; `recovered` is what it was told.
    fn recovery(&self, channel: &str, recovered: bool) {
        let _ = (channel, recovered);
    }
}

/// The observer slot shared by the node and the broker's delivery handler: set once, read
/// without a lock.
#[derive(Debug, Default)]
pub(crate) struct ObserverSlot(OnceLock<Arc<dyn Observer>>);

impl ObserverSlot {
    /// The observer, when one was set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Arc<dyn Observer>> {
        self.0.get()
    }

    /// Sets the observer; returns false when one was already set (the first one stays).
    pub(crate) fn set(&self, observer: Arc<dyn Observer>) -> bool {
        self.0.set(observer).is_ok()
    }
}
