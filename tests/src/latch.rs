//! [`Latch`]: a named barrier a handler waits on, so a test holds a turn open for exactly as
//! long as it wants (instead of a handler that sleeps and a test that hopes the sleep is long
//! enough). Handlers take the latch's name as an argument and call [`wait`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long [`Latch::wait_for_waiters`] waits before failing the test.
const WAIT_BOUND: Duration = Duration::from_secs(20);

struct Shared {
    open: watch::Sender<bool>,
    waiting: AtomicUsize,
    passed: AtomicUsize,
}

static LATCHES: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> = LazyLock::new(Default::default);
static NEXT: AtomicU64 = AtomicU64::new(0);

fn latches() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Shared>>> {
    LATCHES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A closed latch with a name of its own (tests running in parallel never share one).
/// Dropping it opens it and forgets its name.
pub struct Latch {
    name: String,
    shared: Arc<Shared>,
}

impl Latch {
    /// A new, closed latch.
    pub fn new() -> Latch {
        let name = format!("latch-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(Shared {
            open: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
            passed: AtomicUsize::new(0),
        });
        latches().insert(name.clone(), shared.clone());
        Latch { name, shared }
    }

    /// The name to pass to handlers.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Lets every waiter (and every later one) through.
    pub fn open(&self) {
        self.shared.open.send_replace(true);
    }

    /// Handlers waiting at the latch now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Handlers that went through the latch, in all.
    pub fn passed(&self) -> usize {
        self.shared.passed.load(Ordering::SeqCst)
    }

    /// Waits until `n` handlers wait at the latch; panics after 20 s.
    pub async fn wait_for_waiters(&self, n: usize) {
        let deadline = Instant::now() + WAIT_BOUND;
        while self.waiting() < n {
            assert!(
                Instant::now() < deadline,
                "{} handlers at {} after {WAIT_BOUND:?}, waiting for {n}",
                self.waiting(),
                self.name
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Default for Latch {
    fn default() -> Self {
        Latch::new()
    }
}

impl Drop for Latch {
    fn drop(&mut self) {
        self.open();
        latches().remove(&self.name);
    }
}

/// Waits until the latch named `name` is open (at once if there is no such latch: it was
/// dropped, which opens it).
pub async fn wait(name: &str) {
    let Some(shared) = latches().get(name).cloned() else {
        return;
    };
    let mut open = shared.open.subscribe();
    let waiter = Waiter::new(&shared);
    // The sender lives in `shared`, which this holds: the wait ends only when it opens.
    let _ = open.wait_for(|open| *open).await;
    shared.passed.fetch_add(1, Ordering::SeqCst);
    drop(waiter);
}

/// Counts one waiter for as long as it lives (a cancelled handler stops counting too).
struct Waiter<'a>(&'a Shared);

impl<'a> Waiter<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter(shared)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
