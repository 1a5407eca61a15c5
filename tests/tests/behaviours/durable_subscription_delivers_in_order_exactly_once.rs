//! A durable subscription delivers every event of its publisher, in order, exactly once,
//! across restarts (also with events still in the outbox at shutdown); unsubscribing and
//! deleting the subscriber stop the deliveries.

use gears_tests::{Listener, Stock, builder, open, settle};

const PER_RUN: u64 = 100;
const CALLERS: u64 = 4;

async fn publish(rt: &gears::Runtime, stock: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let stock = rt.get::<Stock>(stock);
        tasks.spawn(async move {
            for _ in 0..PER_RUN / CALLERS {
                stock.add(1).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscription_delivers_in_order_exactly_once_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    for listener in ["a", "b"] {
        rt.get::<Listener>(listener)
            .follow("s".into())
            .await
            .unwrap();
    }
    settle(&rt).await;
    publish(&rt, "s").await;
    settle(&rt).await;
    rt.shutdown().await.unwrap();

    // Events published while deliveries are held stay in the outbox over a restart.
    let rt = builder(dir.path())
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    publish(&rt, "s").await;
    assert_eq!(rt.stats().outbox_backlog, 2 * PER_RUN);
    rt.shutdown().await.unwrap();

    let rt = open(dir.path()).await;
    publish(&rt, "s").await;
    settle(&rt).await;
    let all: Vec<u64> = (1..=3 * PER_RUN).collect();
    for listener in ["a", "b"] {
        assert_eq!(rt.get::<Listener>(listener).seen().await.unwrap(), all);
    }

    // Unsubscribed and deleted listeners get nothing more.
    rt.get::<Listener>("a").unfollow("s".into()).await.unwrap();
    rt.get::<Listener>("b").delete().await.unwrap();
    settle(&rt).await;
    publish(&rt, "s").await;
    settle(&rt).await;
    assert_eq!(rt.get::<Listener>("a").seen().await.unwrap(), all);
    assert!(rt.get::<Listener>("b").seen().await.unwrap().is_empty());
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}
