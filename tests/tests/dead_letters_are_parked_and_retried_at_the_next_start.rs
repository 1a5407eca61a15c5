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

    /// What was recorded.
    async fn got(&self) -> Vec<u64> {
        self.got.clone()
    }
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
    let rt = builder(dir.path())
        .register::<Sometimes>()
        .open()
        .await
        .unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Sometimes>("x").got().await.unwrap(), [7]);
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.dead_letters), (1, 0), "{stats:?}");
    rt.shutdown().await.unwrap();

    let rt = builder(dir.path())
        .register::<Sometimes>()
        .open()
        .await
        .unwrap();
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
