//! A turn that is rolled back (the handler returned `Err`, or the turn was refused) sends
//! nothing and publishes nothing; the next committed turn's events are the first ones seen.

use std::time::Duration;

use futures::StreamExt;
use gears::{CallError, Watched};
use gears_tests::{Listener, Receiver, Sender, Stock, StockChanged, open, settle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_turn_publishes_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;

    // A send in a turn that fails is never written, so never delivered.
    let sender = rt.get::<Sender>("s");
    let failed = sender.send_then_fail("r".into(), 5).await;
    assert!(matches!(failed, Err(CallError::Handler(_))), "{failed:?}");
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (0, 0));
    assert_eq!(sender.sent().await.unwrap(), 0);
    assert_eq!(rt.stats().sends, 0);

    // A durable subscriber and a watcher see nothing of a failed turn...
    rt.get::<Listener>("l").follow("p".into()).await.unwrap();
    settle(&rt).await;
    let mut watch = rt.watch::<Stock>("p").unwrap();
    let stock = rt.get::<Stock>("p");
    assert!(stock.add_then_fail(3).await.is_err());
    // ...nor of a turn refused for publishing the wrong event type.
    let refused = stock.publish_wrong_type().await;
    assert!(matches!(refused, Err(CallError::Invalid(_))), "{refused:?}");
    // The next committed change is change number 1: the failed ones left no trace.
    assert_eq!(stock.add(2).await.unwrap(), 1);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert_eq!(
        first,
        Some(Watched::Event(StockChanged { seq: 1, level: 2 }))
    );
    settle(&rt).await;
    assert_eq!(rt.get::<Listener>("l").seen().await.unwrap(), [1]);
    assert_eq!(rt.stats().events, 1);

    // A subscription to a handler that does not take the events is refused, not stored.
    let wrong = rt
        .get::<Listener>("l2")
        .follow_wrong_handler("p".into())
        .await;
    assert!(matches!(wrong, Err(CallError::Invalid(_))), "{wrong:?}");
    rt.shutdown().await.unwrap();
}
