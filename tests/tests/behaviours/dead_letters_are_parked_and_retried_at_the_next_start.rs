//! A message that cannot be processed is parked, not lost: one to an actor type this run does
//! not register is parked at once, one whose turn fails every attempt is parked after
//! `MAX_ATTEMPTS` (5) failures; either stays in the outbox (a dead letter, counted and
//! logged), frees its place in the backlog, and is delivered, once, at the next start where it
//! can be processed.

use gears::prelude::*;
use gears_tests::{
    EncodingFault, Fragile, arm_encoding_fault, builder, open, settle, wait_for_stats,
};

/// An actor type registered in some runs only.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "sometimes")]
struct Sometimes {
    got: Vec<u64>,
}

#[handlers]
impl Sometimes {
    /// Records `n`.
    async fn take(&mut self, n: u64) {
        self.got.push(n);
    }

    /// Arms a timer `t{n}` that records `n` in `ms` milliseconds.
    async fn arm(&mut self, ctx: &Context, n: u64, ms: u64) {
        ctx.timer::<Self>(
            format!("t{n}"),
            Timer::after(std::time::Duration::from_millis(ms)),
        )
        .take(n);
    }

    /// What was recorded.
    async fn got(&self) -> Vec<u64> {
        self.got.clone()
    }
}

/// A runtime on `dir` that registers [`Sometimes`].
async fn with_sometimes(dir: &std::path::Path) -> gears::Runtime {
    builder(dir).register::<Sometimes>().open().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_unregistered_type_is_parked_until_a_start_that_registers_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .register::<Sometimes>()
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    rt.send::<Sometimes>("x").take(7).await.unwrap();
    rt.shutdown().await.unwrap();

    // Without the type: parked at once, its backlog place freed, still stored.
    let rt = open(dir.path()).await;
    wait_for_stats(&rt, "the message parked", |s| s.dead_letters == 1).await;
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.outbox_backlog), (0, 0), "{stats:?}");
    rt.shutdown().await.unwrap();

    // With the type again: delivered, once.
    let rt = with_sometimes(dir.path()).await;
    settle(&rt).await;
    assert_eq!(rt.get::<Sometimes>("x").got().await.unwrap(), [7]);
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.dead_letters), (1, 0), "{stats:?}");
    rt.shutdown().await.unwrap();

    let rt = with_sometimes(dir.path()).await;
    settle(&rt).await;
    assert_eq!(rt.get::<Sometimes>("x").got().await.unwrap(), [7]);
    assert_eq!(rt.stats().delivered, 0, "delivered again");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_every_attempt_is_parked_and_retried_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    // Every attempt panics while encoding the new state (outside the handler): 5 of them.
    arm_encoding_fault("doomed", EncodingFault::Panic, 5);
    rt.send::<Fragile>("doomed").add(3).await.unwrap();
    wait_for_stats(&rt, "the message parked", |s| s.dead_letters == 1).await;
    let stats = rt.stats();
    assert_eq!(
        (stats.panics, stats.delivered, stats.outbox_backlog),
        (5, 0, 0),
        "{stats:?}"
    );
    assert_eq!(rt.get::<Fragile>("doomed").total().await.unwrap(), 0);
    rt.shutdown().await.unwrap();

    // The next start tries again; the fault is gone, so it is processed, once.
    let rt = open(dir.path()).await;
    settle(&rt).await;
    assert_eq!(rt.get::<Fragile>("doomed").total().await.unwrap(), 3);
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.dead_letters), (1, 0), "{stats:?}");
    rt.shutdown().await.unwrap();
}

/// A timer of a type this run does not register is parked when it comes due; discarded
/// then (no turn of its actor can run), it is gone from its actor's record: a later start
/// that registers the type fires the timers kept beside it, and never the discarded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_timer_of_an_unregistered_type_never_fires() {
    let dir = tempfile::tempdir().unwrap();
    let rt = with_sometimes(dir.path()).await;
    let x = rt.get::<Sometimes>("x");
    // Due after this runtime is gone (a loaded machine's syncs can take a while): a timer
    // that fired here, with its type registered, would never be parked.
    x.arm(1, 3_000).await.unwrap();
    x.arm(2, 3_000).await.unwrap();
    rt.shutdown().await.unwrap();

    // Without the type: both are parked when due; one is discarded.
    let rt = open(dir.path()).await;
    wait_for_stats(&rt, "both timers parked", |s| s.dead_letters == 2).await;
    let letters = rt.dead_letters(None, 10).letters;
    let first = letters
        .iter()
        .find(|l| l.timer.as_deref() == Some("t1"))
        .unwrap_or_else(|| panic!("t1 is not listed: {letters:?}"));
    assert!(rt.discard_dead_letter(first.id).await.unwrap());
    assert_eq!(rt.dead_letters(None, 10).letters.len(), 1);
    rt.shutdown().await.unwrap();

    // With the type again: the kept timer fires; the discarded one never does.
    let rt = with_sometimes(dir.path()).await;
    let x = rt.get::<Sometimes>("x");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while x.got().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "t2 never fired");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Not pending (timers first: one that left the list since has fired).
    let timers = rt.timers::<Sometimes>("x").await.unwrap();
    assert!(timers.is_empty(), "{timers:?}");
    assert_eq!(x.got().await.unwrap(), [2]);
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}
