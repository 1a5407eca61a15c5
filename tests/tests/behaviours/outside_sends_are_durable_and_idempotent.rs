//! `Runtime::send` returns once the message is durable and it is processed once; with an
//! idempotency key, a retried send is processed at most once. Bad targets are refused.

use gears::CallError;
use gears_tests::{Receiver, Stock, open, settle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_sends_are_durable_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.send::<Receiver>("r")
        .receive("app".into(), 1)
        .await
        .unwrap();
    rt.send::<Receiver>("r")
        .receive("app".into(), 1)
        .await
        .unwrap();
    for _ in 0..3 {
        rt.send_idempotent::<Receiver>("r", "payment-7")
            .receive("app".into(), 10)
            .await
            .unwrap();
    }
    // The same idempotency key to another actor is another message.
    rt.send_idempotent::<Receiver>("other", "payment-7")
        .receive("app".into(), 10)
        .await
        .unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (12, 3));
    assert_eq!(rt.get::<Receiver>("other").totals().await.unwrap(), (10, 1));
    rt.shutdown().await.unwrap();

    // The window survives a restart.
    let rt = open(dir.path()).await;
    rt.send_idempotent::<Receiver>("r", "payment-7")
        .receive("app".into(), 10)
        .await
        .unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (12, 3));

    // A delivered message whose turn is refused (here: an event of the wrong type) is
    // consumed once, not retried or dead-lettered.
    let before = rt.stats();
    rt.send::<Stock>("p").publish_wrong_type().await.unwrap();
    settle(&rt).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = rt.stats();
    assert_eq!(after.delivered - before.delivered, 1);
    assert_eq!(after.turns - before.turns, 1);
    assert_eq!(after.dead_letters, 0);

    let empty = rt.send::<Receiver>("").receive("app".into(), 1).await;
    assert!(matches!(empty, Err(CallError::InvalidKey(_))), "{empty:?}");
    rt.shutdown().await.unwrap();
    let closed = rt.send::<Receiver>("r").receive("app".into(), 1).await;
    assert!(matches!(closed, Err(CallError::ShuttingDown)), "{closed:?}");
}
