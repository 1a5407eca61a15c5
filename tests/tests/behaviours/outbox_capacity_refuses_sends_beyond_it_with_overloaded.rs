//! The outbox is bounded: with `outbox_capacity(3)` and nothing delivered yet, three sends
//! are accepted and the fourth, from a turn or from outside, fails with `Overloaded`; the
//! refused turn is rolled back (its state change and its send are gone); nothing accepted is
//! lost, and after a restart exactly the accepted messages are delivered, once.

use gears::CallError;
use gears_tests::{Receiver, Sender, builder, open, settle};

const CAPACITY: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_the_outbox_capacity_are_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    // Deliveries held: the outbox only fills.
    let rt = builder(dir.path())
        .outbox_capacity(CAPACITY)
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    let sender = rt.get::<Sender>("s");
    for i in 1..=CAPACITY as u64 {
        assert_eq!(sender.send_to("r".into(), 1).await.unwrap(), i);
    }
    assert_eq!(rt.stats().outbox_backlog, CAPACITY as u64);
    let refused = sender.send_to("r".into(), 1).await;
    assert!(
        matches!(refused, Err(CallError::Overloaded(_))),
        "{refused:?}"
    );
    assert_eq!(
        sender.sent().await.unwrap(),
        CAPACITY as u64,
        "the refused turn was rolled back"
    );
    let outside = rt.send::<Receiver>("r").receive("app".into(), 1).await;
    assert!(
        matches!(outside, Err(CallError::Overloaded(_))),
        "{outside:?}"
    );
    let stats = rt.stats();
    assert_eq!(
        (stats.outbox_backlog, stats.sends, stats.delivered),
        (CAPACITY as u64, CAPACITY as u64, 0),
        "{stats:?}"
    );
    rt.shutdown().await.unwrap();

    // Delivered after a restart: exactly the accepted ones.
    let rt = open(dir.path()).await;
    settle(&rt).await;
    assert_eq!(
        rt.get::<Receiver>("r").totals().await.unwrap(),
        (CAPACITY as u64, CAPACITY as u64)
    );
    assert_eq!(rt.stats().delivered, CAPACITY as u64);
    rt.shutdown().await.unwrap();
}
