//! Turns are serial per key (no lost updates) and concurrent across keys: a handler busy on
//! key A does not delay key B, and a call to A queued while A's turn runs waits for it.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use gears_tests::latch::Latch;
use gears_tests::{Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_key_does_not_block_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let latch = Latch::new();
    let slow = rt.get::<Counter>("slow");
    let slow_call = tokio::spawn({
        let latch = latch.name();
        async move { slow.add_when_open(1, latch).await }
    });
    latch.wait_for_waiters(1).await;
    // Key B completes many turns while A's single turn is still running.
    for i in 1..=20 {
        assert_eq!(rt.get::<Counter>("fast").add(1).await.unwrap(), i);
    }
    assert_eq!(latch.waiting(), 1, "the slow turn is still running");
    assert!(!slow_call.is_finished());
    latch.open();
    assert_eq!(slow_call.await.unwrap().unwrap(), 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_key_queue_behind_its_running_turn() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let key = rt.get::<Counter>("k");
    let latch = Latch::new();
    let first = tokio::spawn({
        let (key, latch) = (key.clone(), latch.name());
        async move { key.add_when_open(10, latch).await }
    });
    latch.wait_for_waiters(1).await;
    // The second call is queued by its first poll, while the first turn waits mid-handler.
    let mut second = Box::pin({
        let key = key.clone();
        async move { key.add(1).await }
    });
    let polled = std::future::poll_fn(|cx| Poll::Ready(second.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "a call ran while its key was busy");
    let second = tokio::spawn(second);
    // Give turns that wrongly interleave the time to do so before the first one goes on.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "a call ran while its key was busy");
    latch.open();
    // Queued behind the running turn, so it sees its result: the turns never interleave.
    assert_eq!(second.await.unwrap().unwrap(), 11);
    assert_eq!(first.await.unwrap().unwrap(), 10);
    rt.shutdown().await.unwrap();
}
