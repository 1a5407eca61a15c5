//! `handle.timeout(d)` bounds how long a call waits (`CallError::Timeout(d)`, whatever the
//! runtime's call timeout) and only the wait: a turn that had started when its caller gave
//! up commits in full, and a call still queued behind a busy actor never runs. No state is
//! ever half-applied.

use std::time::Duration;

use gears::CallError;
use gears::prelude::*;
use gears_tests::latch::{self, Latch};

/// Two halves that a turn always changes together.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "halves")]
pub struct Halves {
    first: u64,
    second: u64,
}

#[handlers]
impl Halves {
    /// Adds `n` to the first half, waits for the latch, then adds `n` to the second half.
    pub async fn add_across_a_wait(&mut self, n: u64, latch: String) -> u64 {
        self.first += n;
        latch::wait(&latch).await;
        self.second += n;
        self.second
    }

    /// Adds `n` to both halves at once.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.first += n;
        self.second += n;
        self.second
    }

    /// A handler whose stored and HTTP name is `timeout`: only its method needs another name.
    #[handler(name = "timeout")]
    pub async fn reset(&mut self) {
        self.first = 0;
        self.second = 0;
    }
}

/// The runtime's own call timeout: far longer than any wait in this test, so a `Timeout`
/// here can only come from the handle's.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_millis(100);

async fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .path(dir)
        .call_timeout(RUNTIME_TIMEOUT)
        .register::<Halves>()
        .open()
        .await
        .unwrap()
}

async fn halves(rt: &Runtime, key: &str) -> (u64, u64) {
    rt.read::<Halves, _>(key, |h| (h.first, h.second))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_turn_commits_in_full_after_its_caller_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let gate = Latch::new();
    let bounded = rt.get::<Halves>("h").timeout(SHORT);
    // Clones keep the timeout.
    let copy = bounded.clone();
    match copy.add_across_a_wait(5, gate.name()).await {
        Err(CallError::Timeout(waited)) => assert_eq!(waited, SHORT),
        other => panic!("expected the handle's timeout, got {other:?}"),
    }
    // The caller gave up while the handler was still halfway (or before it got there: on a
    // loaded machine the load can outlast the timeout): the turn runs on without its caller
    // and reaches the latch.
    gate.wait_for_waiters(1).await;
    gate.open();
    // A read queued behind the turn sees it whole: both halves.
    assert_eq!(halves(&rt, "h").await, (5, 5));
    // A timeout that is not reached changes nothing. (Generous: a commit's sync on a
    // loaded machine can take longer than `SHORT`.)
    let patient = bounded.timeout(Duration::from_secs(60));
    assert_eq!(patient.add(1).await.unwrap(), 6);
    patient.reset().await.unwrap();
    assert_eq!(halves(&rt, "h").await, (0, 0));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_whose_caller_timed_out_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let gate = Latch::new();
    let handle = rt.get::<Halves>("q");
    // Hold the actor busy with a turn that waits at the latch (no timeout of its own).
    let busy = tokio::spawn({
        let handle = handle.clone();
        let gate = gate.name();
        async move { handle.add_across_a_wait(1, gate).await }
    });
    gate.wait_for_waiters(1).await;
    // Queued behind it, this call gives up before its turn comes.
    match handle.timeout(SHORT).add(100).await {
        Err(CallError::Timeout(waited)) => assert_eq!(waited, SHORT),
        other => panic!("expected the handle's timeout, got {other:?}"),
    }
    gate.open();
    assert_eq!(busy.await.unwrap().unwrap(), 1);
    // The busy turn committed whole; the abandoned call was never applied, neither half.
    assert_eq!(halves(&rt, "q").await, (1, 1));
    rt.shutdown().await.unwrap();
}
