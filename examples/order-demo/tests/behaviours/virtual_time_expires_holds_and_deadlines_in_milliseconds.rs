//! The order flow's timers on a test runtime's virtual clock (`gears::testing`): a hold
//! expires after its 10 minutes and gives its stock back, a backordered order is cancelled
//! at its one-hour deadline (also across a crash), and a restock ships a waiting order with
//! the customer told each step. Hours of the flow's time in milliseconds of wall time, with
//! no sleep and no dependence on the machine's speed.

use std::time::{Duration, Instant};

use gears::testing::TestRuntime;
use order_demo::{
    Customer, InventoryItem, Line, Notice, Order, Policy, Status, StoreOptions, register,
};

const MINUTE: Duration = Duration::from_secs(60);

async fn shop() -> TestRuntime {
    TestRuntime::new(|b| register(b, &StoreOptions::default()))
        .await
        .unwrap()
}

fn one(sku: &str) -> Vec<Line> {
    vec![Line {
        sku: sku.into(),
        qty: 1,
    }]
}

async fn notices(t: &TestRuntime, customer: &str) -> Vec<Notice> {
    let inbox = t.runtime().get::<Customer>(customer).inbox().await.unwrap();
    inbox.recent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_hold_expires_after_its_time_and_gives_the_stock_back() {
    let started = Instant::now();
    let t = shop().await;
    let item = t.runtime().get::<InventoryItem>("sku-1");
    item.seed(5).await.unwrap();
    // A hold for an order that never ships: at expiry the item asks the order, which
    // releases it (the saga's timer, a send each way).
    item.reserve("o-ghost".into(), 1, 2, 10 * 60 * 1000)
        .await
        .unwrap();
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved), (3, 2));
    assert_eq!(level.holds[0].expires, Some(t.now() + 10 * MINUTE));
    let timers = t.timers::<InventoryItem>("sku-1").await.unwrap();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(timers[0].name, "hold:o-ghost");

    t.advance(10 * MINUTE - Duration::from_millis(1))
        .await
        .unwrap();
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved), (3, 2), "not yet");

    t.advance(Duration::from_millis(1)).await.unwrap();
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved), (5, 0), "{level:?}");
    assert!(level.holds.is_empty());
    assert!(t.timers::<InventoryItem>("sku-1").await.unwrap().is_empty());
    t.shutdown().await.unwrap();
    eprintln!("10 minutes of holds in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backordered_order_is_cancelled_at_its_deadline_also_after_a_crash() {
    let started = Instant::now();
    let mut t = shop().await;
    t.runtime()
        .get::<InventoryItem>("sku-2")
        .seed(0)
        .await
        .unwrap();
    let policy = Policy {
        hold_ms: 60_000,
        wait_ms: 60 * 60 * 1000,
    };
    let status = t
        .runtime()
        .get::<Order>("o-1")
        .place("c-1".into(), one("sku-2"), policy)
        .await
        .unwrap();
    assert_eq!(status, Status::Backordered);
    t.advance(Duration::ZERO).await.unwrap();
    assert!(
        matches!(&notices(&t, "c-1").await[..], [Notice::Backordered { .. }]),
        "the customer is told at once"
    );

    t.advance(59 * MINUTE).await.unwrap();
    assert_eq!(
        t.state::<Order>("o-1").await.unwrap().status().await,
        Some(Status::Backordered)
    );

    // What was acknowledged survives a crash, the deadline timer with it; the clock goes on.
    t.crash_and_reopen().await.unwrap();
    t.advance(MINUTE).await.unwrap();
    assert_eq!(
        t.runtime().get::<Order>("o-1").status().await.unwrap(),
        Some(Status::Cancelled)
    );
    let told = notices(&t, "c-1").await;
    assert!(
        matches!(&told[..], [Notice::Backordered { .. }, Notice::Cancelled { order }] if order == "o-1"),
        "{told:?}"
    );
    let level = t
        .runtime()
        .get::<InventoryItem>("sku-2")
        .level()
        .await
        .unwrap();
    assert_eq!((level.available, level.reserved, level.shipped), (0, 0, 0));
    t.shutdown().await.unwrap();
    eprintln!("an hour of backorder in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_ships_the_waiting_order_and_tells_the_customer() {
    let t = shop().await;
    let item = t.runtime().get::<InventoryItem>("sku-3");
    item.seed(0).await.unwrap();
    let policy = Policy {
        hold_ms: 60_000,
        wait_ms: 60 * 60 * 1000,
    };
    let order = t.runtime().get::<Order>("o-2");
    let status = order
        .place("c-2".into(), one("sku-3"), policy)
        .await
        .unwrap();
    assert_eq!(status, Status::Backordered);
    t.advance(30 * MINUTE).await.unwrap();

    item.restock(4).await.unwrap();
    // The back-in-stock event reaches the order, which places itself again and ships.
    t.advance(Duration::ZERO).await.unwrap();
    assert_eq!(order.status().await.unwrap(), Some(Status::Shipping));
    let told = notices(&t, "c-2").await;
    assert!(
        matches!(
            &told[..],
            [
                Notice::Backordered { .. },
                Notice::BackInStock { .. },
                Notice::Shipped { .. }
            ]
        ),
        "{told:?}"
    );
    // The deadline is gone with the wait: nothing happens when it would have come.
    t.advance(31 * MINUTE).await.unwrap();
    assert_eq!(order.status().await.unwrap(), Some(Status::Shipping));
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved, level.shipped), (3, 0, 1));
    t.shutdown().await.unwrap();
}
