//! The wake-up of one Engine.IO session's task: "the shared state changed, look at it".
//!
//! Hot path. The task waits for it in every `recv`, and the driver starts a new `recv` after
//! every delivery it writes, so what a wait costs is paid once per delivery. A
//! `tokio::sync::Notify` waiter takes the notify's lock to register and again to deregister
//! when the `recv` is dropped for a write, and the task also locked the shared state each time
//! to see whether anything had changed: three lock round trips per delivery for a signal that
//! almost never comes on a WebSocket session. Here a wait is an atomic flag read and an
//! `AtomicWaker` registration, and the state is locked only after a signal. There is one
//! waiter (the session's task), which is all an `AtomicWaker` serves.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// A flag set by [`Signal::notify_one`] and taken by the session's task, with the task's waker.
pub(crate) struct Signal {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Default for Signal {
    /// Set: the task looks at the shared state once when it starts.
    fn default() -> Self {
        Signal {
            set: AtomicBool::new(true),
            waker: AtomicWaker::new(),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("set", &self.set.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Signal {
    /// Tells the task to look at the shared state (after the change is made under its lock).
    pub(crate) fn notify_one(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a signal came since the last `take`, clearing it: the caller then looks at the
    /// shared state.
    pub(crate) fn take(&self) -> bool {
        // A plain load first: the common answer (no) writes nothing.
        self.set.load(Ordering::Acquire) && self.set.swap(false, Ordering::AcqRel)
    }

    /// Sets the flag again without waking anyone: a caller that took a signal for one purpose
    /// leaves it for the next look at the whole state.
    pub(crate) fn keep(&self) {
        self.set.store(true, Ordering::Release);
    }

    /// Waits until the flag is set (without clearing it; [`Signal::take`] does). Cancel safe.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A signal between the first look and the registration woke the old waker (or
            // none): look again now that this one is registered.
            if self.set.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn starts_set_and_take_clears_it() {
        let signal = Signal::default();
        assert!(signal.take());
        assert!(!signal.take());
        signal.notify_one();
        assert!(signal.take());
        assert!(!signal.take());
        signal.keep();
        assert!(signal.take());
    }

    #[tokio::test]
    async fn wait_returns_at_once_when_set_and_does_not_clear() {
        let signal = Signal::default();
        tokio::time::timeout(Duration::from_secs(5), signal.wait())
            .await
            .expect("a set signal is ready");
        assert!(signal.take());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signal_from_another_task_wakes_the_waiter() {
        let signal = Arc::new(Signal::default());
        assert!(signal.take());
        for _ in 0..200 {
            let notifier = signal.clone();
            let handle = tokio::spawn(async move { notifier.notify_one() });
            tokio::time::timeout(Duration::from_secs(5), signal.wait())
                .await
                .expect("the signal wakes the waiter");
            assert!(signal.take());
            handle.await.expect("the notifier ran");
        }
    }

    #[tokio::test]
    async fn a_pending_wait_dropped_for_other_work_loses_nothing() {
        let signal = Signal::default();
        assert!(signal.take());
        // The recv is dropped for a write, as in the driver's select.
        assert!(
            futures_util::FutureExt::now_or_never(signal.wait()).is_none(),
            "nothing was signalled yet"
        );
        signal.notify_one();
        tokio::time::timeout(Duration::from_secs(5), signal.wait())
            .await
            .expect("the signal given while nobody waited is kept");
        assert!(signal.take());
    }
}
