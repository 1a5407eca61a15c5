//! [`CommitGate`]: holds the committer at one [`CommitStage`] until the test opens the gate,
//! or fails the held batches, through the hidden `Builder::__fault_hook`.
//!
//! The committer calls the hook on its own thread at every stage of every batch, so a hook
//! that blocks holds that batch (and every write queued behind it) exactly as long as the test
//! wants: at `BeforeWrite` before anything reached the store, at `Sync` between the write
//! (journal and memtables) and the journal sync. Tests use it to show what must not be
//! visible before a write is durable, and that writes queued meanwhile go into one batch.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gears::__private::{CommitStage, FaultHook};

/// How long [`CommitGate::wait_holding`] waits before failing the test.
const WAIT_BOUND: Duration = Duration::from_secs(20);

/// A gate on the commit path. Starts open; dropping it opens it, so a failed test never
/// leaves a committer blocked.
pub struct CommitGate {
    inner: Arc<Inner>,
}

struct Inner {
    stage: CommitStage,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Batches waiting at the gate now.
    holding: usize,
    /// Batches that have been held at the gate, in all.
    held: u64,
    /// Batches that have reached the gate's stage, in all (held or not).
    reached: u64,
    /// Waiters numbered below this fail with the message when released.
    failing: Option<(u64, String)>,
}

impl CommitGate {
    /// A gate at `stage`, open.
    pub fn at(stage: CommitStage) -> CommitGate {
        CommitGate {
            inner: Arc::new(Inner {
                stage,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// A runtime on `dir` with the test actors ([`crate::builder`]) and this gate on its
    /// commit path. It writes the outbox frontier only when it shuts down: a frontier write
    /// after deliveries comes at no moment a test chooses, and would add a batch to the
    /// counts a gated test compares (it passes by the gate, as the hook's doc says).
    pub async fn open_runtime(&self, dir: &Path) -> gears::Runtime {
        crate::builder(dir)
            .__fault_hook(self.hook())
            .__outbox_frontier_every(std::time::Duration::from_secs(3600))
            .open()
            .await
            .expect("open runtime")
    }

    /// The hook to give to `Builder::__fault_hook`.
    pub fn hook(&self) -> FaultHook {
        let inner = self.inner.clone();
        Arc::new(move |stage| {
            if stage != inner.stage {
                return Ok(());
            }
            let mut state = inner.lock();
            let ticket = state.reached;
            state.reached += 1;
            if !state.closed {
                return Ok(());
            }
            state.holding += 1;
            state.held += 1;
            while state.closed {
                state = inner
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.holding -= 1;
            match &state.failing {
                Some((below, why)) if ticket < *below => Err(why.clone()),
                _ => Ok(()),
            }
        })
    }

    /// Holds every batch that reaches the stage from now on.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// Lets the held batches (and all later ones) through.
    pub fn open(&self) {
        let mut state = self.inner.lock();
        state.closed = false;
        self.inner.changed.notify_all();
    }

    /// Fails every batch held now with `why` (as a storage error at the gate's stage would)
    /// and lets later batches through.
    pub fn fail_held_and_open(&self, why: &str) {
        let mut state = self.inner.lock();
        state.failing = Some((state.reached, why.to_string()));
        state.closed = false;
        self.inner.changed.notify_all();
    }

    /// Batches waiting at the gate now.
    pub fn holding(&self) -> usize {
        self.inner.lock().holding
    }

    /// Batches held at the gate so far, in all.
    pub fn held(&self) -> u64 {
        self.inner.lock().held
    }

    /// Waits until `n` batches are held at the gate; panics with `context` after 20 s.
    pub async fn wait_holding(&self, n: usize, context: impl Fn() -> String) {
        let deadline = Instant::now() + WAIT_BOUND;
        while self.holding() < n {
            assert!(
                Instant::now() < deadline,
                "{} batches held at {:?} after {WAIT_BOUND:?}, waiting for {n}: {}",
                self.holding(),
                self.inner.stage,
                context()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the counts are still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for CommitGate {
    fn drop(&mut self) {
        self.open();
    }
}
