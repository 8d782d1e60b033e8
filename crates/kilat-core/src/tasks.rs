//! [`Tasks`]: the node's background tasks, tracked so a graceful shutdown can wait for them.
//!
//! Synchronous code (timers, the broker handler, `Session::on_timer`) sometimes starts async
//! work it cannot wait for: the engine unsubscribe and leave of a subscription whose token
//! expired, a gap repair, the end of a conflation window, a backend hook. All of it goes
//! through the one tracker the node owns, never a detached `tokio::spawn`.

use std::future::Future;
use std::time::Duration;

use tokio_util::task::TaskTracker;

/// The node-owned task tracker. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks(TaskTracker);

impl Tasks {
    /// Starts `task` on the current runtime, tracked. False when there is no runtime (a node
    /// used outside tokio, e.g. in a synchronous unit test): the caller falls back to doing
    /// without the task.
    pub(crate) fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.0.spawn_on(task, &runtime);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits up to `timeout` for every task started so far, and any they start, to finish.
    /// True when they did. Tasks may still be started afterwards; they are tracked too.
    pub(crate) async fn finish(&self, timeout: Duration) -> bool {
        self.0.close();
        let finished = tokio::time::timeout(timeout, self.0.wait()).await.is_ok();
        self.0.reopen();
        finished
    }

    /// How many tasks are running.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
