//! A delivered message whose handler returns `Err` is consumed once: its turn is rolled back
//! (the state change is gone) and its outbox entry removed in the same commit, so it is not
//! retried, not parked, and not delivered again after a restart.

use std::time::Duration;

use gears_tests::{Counter, open, settle, wait_for_stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_message_whose_handler_fails_is_consumed_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    // `add_checked` adds first, then refuses: 5 is over the limit of 1.
    rt.send::<Counter>("c").add_checked(5, 1).await.unwrap();
    settle(&rt).await;
    wait_for_stats(&rt, "the delivery done", |s| s.delivered == 1).await;
    // A retry would come after a backoff of 200 ms: give it the time to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = rt.stats();
    assert_eq!(stats.turns, 1, "the handler ran once: {stats:?}");
    assert_eq!(
        (stats.delivered, stats.dead_letters, stats.outbox_backlog),
        (1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        rt.get::<Counter>("c").get().await.unwrap(),
        0,
        "rolled back"
    );
    rt.shutdown().await.unwrap();

    // Consumed: nothing is left to deliver after a restart.
    let rt = open(dir.path()).await;
    settle(&rt).await;
    assert_eq!(rt.get::<Counter>("c").get().await.unwrap(), 0);
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.turns), (0, 1), "{stats:?}");
    rt.shutdown().await.unwrap();
}
