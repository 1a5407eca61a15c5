//! Turns are serial per key (no lost updates) and concurrent across keys: a slow handler on
//! key A does not delay key B.

use std::time::Duration;

use gears_tests::{Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_key_does_not_block_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let slow = rt.get::<Counter>("slow");
    let slow_call = tokio::spawn(async move { slow.slow_add(1, 3_000).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Key B completes many turns while A's single turn is still running.
    for i in 1..=20 {
        assert_eq!(rt.get::<Counter>("fast").add(1).await.unwrap(), i);
    }
    assert!(
        !slow_call.is_finished(),
        "the slow turn should still be running"
    );
    assert_eq!(slow_call.await.unwrap().unwrap(), 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_key_queue_behind_its_running_turn() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let key = rt.get::<Counter>("k");
    let first = tokio::spawn({
        let key = key.clone();
        async move { key.slow_add(10, 300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the running turn, so it sees its result: the turns never interleave.
    assert_eq!(key.add(1).await.unwrap(), 11);
    assert_eq!(first.await.unwrap().unwrap(), 10);
    rt.shutdown().await.unwrap();
}
