//! [`Outbox`]: one connection's outbound queue, bounded in bytes.
//!
//! Producers (the hub's fan-out, the session's replies) push without ever waiting; the
//! connection task is the single consumer. A connection that lets more than `max_bytes` pile up
//! is closed with 3001 (slow consumer) instead of slowing the publishers down.
//!
//! Replies to the client's own commands are counted apart ([`Outbox::push_reply`]): a history
//! page or a recovery of a megabyte is not the client falling behind, and publications that
//! arrive while it is written must not close the connection either (issue 20).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kilat_protocol::{Disconnect, SharedFrame};
use tokio::sync::Notify;

use crate::util::lock;

#[derive(Debug, Default)]
struct State {
    /// Frames not yet taken by the connection task, oldest first.
    frames: VecDeque<SharedFrame>,
    /// Sum of `frames`' lengths.
    bytes: usize,
    /// The part of `bytes` that is replies; the slow-consumer limit counts `bytes` without it.
    reply_bytes: usize,
    /// The close requested (first one wins); reported once the frames before it are drained.
    close: Option<Disconnect>,
    /// Pushes are being held back to share one write ([`Outbox::hold`]): they queue without
    /// waking the consumer. Replies and closes still wake it.
    holding: bool,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the consumer; `notify_one` keeps a permit when it is not waiting yet.
    notify: Notify,
    max_bytes: usize,
}

/// Bounded-in-bytes outbound queue shared between the hub (producers) and the connection task
/// (consumer). Cheap clone.
#[derive(Debug, Clone)]
pub struct Outbox(Arc<Inner>);

impl Outbox {
    /// An empty outbox that holds at most `max_bytes` of frames.
    pub fn new(max_bytes: usize) -> Self {
        Outbox(Arc::new(Inner {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes,
        }))
    }

    /// Queues `frame`. Non-blocking. If the queued bytes would exceed `max_bytes` the outbox is
    /// closed with Disconnect 3001 (slow consumer) and the frame dropped; producers never wait.
    /// Frames pushed after a close are dropped. A reply frame ([`SharedFrame::reply`]) is
    /// queued as by [`Outbox::push_reply`].
    pub fn push(&self, frame: SharedFrame) {
        if frame.is_reply() {
            return self.push_reply(frame);
        }
        let mut state = lock(&self.0.state);
        if state.close.is_some() {
            return;
        }
        let wake = if state.bytes - state.reply_bytes + frame.len() > self.0.max_bytes {
            state.close = Some(Disconnect::SLOW);
            true
        } else {
            state.bytes += frame.len();
            state.frames.push_back(frame);
            !state.holding
        };
        drop(state);
        if wake {
            self.0.notify.notify_one();
        }
    }

    /// Queues a reply to the client's own command. Non-blocking. A reply may take the queue
    /// past `max_bytes` and does not count toward the slow-consumer limit; only a client that
    /// keeps asking while more than `max_bytes` of earlier replies wait unread is closed with
    /// 3001. So the queue holds at most twice `max_bytes` plus one reply, and a reply's own size
    /// is bounded where it is built (history pages, the history window for recovery).
    pub fn push_reply(&self, frame: SharedFrame) {
        let mut state = lock(&self.0.state);
        if state.close.is_some() {
            return;
        }
        if state.reply_bytes > self.0.max_bytes {
            state.close = Some(Disconnect::SLOW);
        } else {
            state.bytes += frame.len();
            if frame.is_reply() {
                state.reply_bytes += frame.len();
            }
            state.frames.push_back(frame);
        }
        drop(state);
        self.0.notify.notify_one();
    }

    /// Asks the connection to close with `disconnect` after the frames already queued. The first
    /// close wins; later ones are ignored.
    pub fn close(&self, disconnect: Disconnect) {
        let mut state = lock(&self.0.state);
        if state.close.is_none() {
            state.close = Some(disconnect);
        }
        drop(state);
        self.0.notify.notify_one();
    }

    /// Whether a close has been requested (frames pushed now are dropped).
    pub fn is_closed(&self) -> bool {
        lock(&self.0.state).close.is_some()
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.0.state).bytes
    }

    /// Resolves when frames or a close are pending.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing; the next call sees the same state.
    pub async fn ready(&self) {
        loop {
            {
                let state = lock(&self.0.state);
                if !state.frames.is_empty() || state.close.is_some() {
                    return;
                }
            }
            self.0.notify.notified().await;
        }
    }

    /// Starts holding pushes back so that those arriving in the next moments share one write
    /// (`node.write_delay_ms`). Returns `false`, and holds nothing, when a reply or a close is
    /// pending: those go out at once. While holding, pushes queue without waking the consumer
    /// (no wake-up per delivery); a reply or a close resolves [`Outbox::urgent`]. The next
    /// [`Outbox::drain`] ends the hold.
    pub fn hold(&self) -> bool {
        let mut state = lock(&self.0.state);
        state.holding = state.reply_bytes == 0 && state.close.is_none();
        state.holding
    }

    /// Resolves when a reply or a close is pending: what ends a [`Outbox::hold`] early.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`Outbox::ready`].
    pub async fn urgent(&self) {
        loop {
            {
                let state = lock(&self.0.state);
                if state.reply_bytes > 0 || state.close.is_some() {
                    return;
                }
            }
            self.0.notify.notified().await;
        }
    }

    /// Moves pending frames into `out` (at least one when any is pending, then while the batch
    /// stays under `max_bytes_per_batch`). Returns `Some(disconnect)` when a close is pending and
    /// every frame queued before it has been taken (again on every later call).
    ///
    /// When everything queued goes into an empty `out`, the queue's buffer goes with it, so an
    /// outbox holds no allocation between deliveries (most connections are idle most of the
    /// time); the caller frees `out` after writing it.
    pub fn drain(
        &self,
        out: &mut Vec<SharedFrame>,
        max_bytes_per_batch: usize,
    ) -> Option<Disconnect> {
        let mut state = lock(&self.0.state);
        state.holding = false;
        if out.is_empty() && state.bytes <= max_bytes_per_batch {
            state.bytes = 0;
            state.reply_bytes = 0;
            *out = Vec::from(std::mem::take(&mut state.frames));
            return state.close.clone();
        }
        let mut taken = 0;
        while let Some(front) = state.frames.front() {
            if taken > 0 && taken + front.len() > max_bytes_per_batch {
                break;
            }
            taken += front.len();
            if let Some(frame) = state.frames.pop_front() {
                if frame.is_reply() {
                    state.reply_bytes -= frame.len();
                }
                out.push(frame);
            }
        }
        state.bytes -= taken;
        if state.frames.is_empty() {
            state.close.clone()
        } else {
            // More to take: make sure the consumer comes back without waiting for a producer.
            self.0.notify.notify_one();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn frame(n: usize) -> SharedFrame {
        SharedFrame::new(vec![b'x'; n])
    }

    #[test]
    fn overflow_closes_with_slow_and_keeps_earlier_frames() {
        let outbox = Outbox::new(10);
        outbox.push(frame(6));
        outbox.push(frame(6));
        outbox.push(frame(1));
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 100), Some(Disconnect::SLOW));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_large_reply_is_not_slowness_and_publications_still_fit_beside_it() {
        let outbox = Outbox::new(10);
        outbox.push_reply(SharedFrame::reply(vec![b'r'; 25]));
        outbox.push(frame(6));
        outbox.push(frame(4));
        assert!(
            !outbox.is_closed(),
            "a reply over the limit is not a slow consumer"
        );
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 31), None);
        assert_eq!(out.len(), 2, "the reply, then the first publication");
        outbox.push(frame(6));
        assert!(!outbox.is_closed(), "the drained reply no longer counts");
        outbox.push(frame(1));
        assert!(
            outbox.is_closed(),
            "publications alone still close at the limit"
        );
    }

    #[test]
    fn a_client_that_keeps_asking_without_reading_is_slow() {
        let outbox = Outbox::new(10);
        outbox.push_reply(SharedFrame::reply(vec![b'r'; 8]));
        outbox.push_reply(SharedFrame::reply(vec![b'r'; 8]));
        assert!(!outbox.is_closed());
        outbox.push_reply(SharedFrame::reply(vec![b'r'; 8]));
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 100), Some(Disconnect::SLOW));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn drain_respects_the_batch_size_and_reports_close_last() {
        let outbox = Outbox::new(100);
        for _ in 0..4 {
            outbox.push(frame(10));
        }
        outbox.close(Disconnect::SHUTDOWN);
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 25), None);
        assert_eq!(out.len(), 2);
        assert_eq!(outbox.drain(&mut out, 25), Some(Disconnect::SHUTDOWN));
        assert_eq!(out.len(), 4);
        assert_eq!(
            outbox.drain(&mut out, 25),
            Some(Disconnect::SHUTDOWN),
            "reported again"
        );
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn a_drained_outbox_keeps_no_buffer() {
        let outbox = Outbox::new(100);
        for _ in 0..3 {
            outbox.push(frame(10));
        }
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 100), None);
        assert_eq!(out.len(), 3);
        assert_eq!(lock(&outbox.0.state).frames.capacity(), 0);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_hold_is_refused_with_a_reply_pending_and_ended_early_by_one() {
        let outbox = Outbox::new(100);
        outbox.push_reply(SharedFrame::reply(vec![b'r'; 4]));
        assert!(!outbox.hold(), "a pending reply goes out at once");
        let mut out = Vec::new();
        outbox.drain(&mut out, 100);
        out.clear();

        outbox.push(frame(3));
        assert!(outbox.hold(), "only pushes pending: hold them");
        outbox.push(frame(3));
        assert!(
            outbox.urgent().now_or_never().is_none(),
            "pushes do not end the hold"
        );
        let producer = outbox.clone();
        let task =
            tokio::spawn(async move { producer.push_reply(SharedFrame::reply(vec![b'r'; 2])) });
        outbox.urgent().await;
        task.await.expect("producer");
        assert_eq!(outbox.drain(&mut out, 100), None);
        assert_eq!(out.len(), 3, "both pushes and the reply, in order");
        assert!(out[2].is_reply());
    }

    #[tokio::test]
    async fn a_close_ends_a_hold() {
        let outbox = Outbox::new(100);
        outbox.push(frame(3));
        assert!(outbox.hold());
        outbox.close(Disconnect::SHUTDOWN);
        outbox.urgent().await;
        assert!(!outbox.hold());
    }

    #[tokio::test]
    async fn ready_wakes_on_push_from_another_task() {
        let outbox = Outbox::new(100);
        let producer = outbox.clone();
        let task = tokio::spawn(async move { producer.push(frame(1)) });
        outbox.ready().await;
        task.await.expect("producer");
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out, 100), None);
        assert_eq!(out.len(), 1);
    }
}
