//! Admission: which calls the runtime accepts while it runs and while it shuts down, and how
//! many accepted ones are still in flight (what shutdown waits for).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::Failure;

/// Calls accepted and not yet through their turn; whether new ones are.
#[derive(Default)]
pub(crate) struct Admission {
    /// Messages accepted and not yet through their turn.
    inflight: AtomicUsize,
    /// No new calls from outside actors.
    closing: AtomicBool,
    /// No new calls at all.
    closed: AtomicBool,
}

impl Admission {
    /// Admits a new call, or refuses it while shutting down. Calls made by handlers are
    /// admitted until the very end, so in-flight work can finish.
    ///
    /// An admitted call counts as in flight from here until its turn finished (or
    /// [`turn_finished`](Self::turn_finished) is called because it was not enqueued). Counting
    /// before checking, both `SeqCst`, means shutdown either sees the call or the call sees
    /// shutdown.
    pub(crate) fn admit(&self, from_actor: bool) -> Result<(), Failure> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst)
            || (!from_actor && self.closing.load(Ordering::SeqCst))
        {
            self.turn_finished();
            Err(Failure::ShuttingDown)
        } else {
            Ok(())
        }
    }

    pub(crate) fn turn_finished(&self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until no admitted call is in flight.
    pub(crate) async fn drained(&self) {
        while self.inflight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Refuses new calls from outside actors; calls made by handlers are still admitted.
    pub(crate) fn close_outside(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Refuses every new call.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
