//! The order saga: an order with every line in stock ships at once (its items ship the
//! units); one with a line short is backordered, releases what it held, ships when that item
//! is restocked, and tells its customer each step; one that waits past its deadline is
//! cancelled. Placing an order id again is idempotent; other contents are a conflict.

use std::time::{Duration, Instant};

use gears::CallError;
use order_demo::{
    Customer, InventoryItem, Line, Notice, Order, PlaceError, Policy, Status, StoreOptions,
};

fn line(sku: &str, qty: u32) -> Line {
    Line {
        sku: sku.into(),
        qty,
    }
}

async fn wait_for(rt: &gears::Runtime, order: &str, want: Status) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rt.get::<Order>(order).status().await.unwrap();
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{order} is {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_saga_ships_backorders_retries_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    rt.get::<InventoryItem>("apple").seed(10).await.unwrap();
    rt.get::<InventoryItem>("pear").seed(1).await.unwrap();
    let policy = Policy {
        hold_ms: 60_000,
        wait_ms: 60_000,
    };

    // In stock: ships.
    let lines = vec![line("apple", 2), line("pear", 1)];
    let order = rt.get::<Order>("o-1");
    let placed = order.place("alice".into(), lines.clone(), policy).await;
    assert_eq!(placed.unwrap(), Status::Shipping);
    // Idempotent, and a conflicting placement is refused.
    let again = order.place("alice".into(), lines.clone(), policy).await;
    assert_eq!(again.unwrap(), Status::Shipping);
    let other = order.place("bob".into(), lines, policy).await;
    assert!(matches!(
        other,
        Err(CallError::Handler(PlaceError::Conflict))
    ));
    let invalid = rt
        .get::<Order>("o-bad")
        .place("alice".into(), vec![line("apple", 0)], policy)
        .await;
    assert!(matches!(
        invalid,
        Err(CallError::Handler(PlaceError::Invalid(_)))
    ));
    assert_eq!(rt.get::<Order>("o-bad").status().await.unwrap(), None);

    // Pear is out: backordered, and the apples it held are released.
    let lines = vec![line("apple", 3), line("pear", 2)];
    let placed = rt
        .get::<Order>("o-2")
        .place("bob".into(), lines, policy)
        .await;
    assert_eq!(placed.unwrap(), Status::Backordered);
    let details = rt.get::<Order>("o-2").details().await.unwrap();
    assert_eq!(details.missing.as_deref(), Some("pear"));
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    let apple = rt.get::<InventoryItem>("apple").level().await.unwrap();
    assert_eq!((apple.available, apple.reserved, apple.shipped), (8, 0, 2));

    // Restocking pear ships it.
    rt.get::<InventoryItem>("pear").restock(5).await.unwrap();
    wait_for(&rt, "o-2", Status::Shipping).await;
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    let pear = rt.get::<InventoryItem>("pear").level().await.unwrap();
    assert_eq!((pear.available, pear.reserved, pear.shipped), (3, 0, 3));
    let inbox = rt.get::<Customer>("bob").inbox().await.unwrap();
    assert_eq!(
        inbox.recent,
        [
            Notice::Backordered {
                order: "o-2".into(),
                sku: "pear".into()
            },
            Notice::BackInStock {
                order: "o-2".into(),
                sku: "pear".into()
            },
            Notice::Shipped {
                order: "o-2".into()
            },
        ]
    );

    // Nothing comes back in time: cancelled, nothing held or shipped for it.
    let hurry = Policy {
        hold_ms: 60_000,
        wait_ms: 200,
    };
    let placed = rt
        .get::<Order>("o-3")
        .place(
            "carol".into(),
            vec![line("apple", 1), line("pear", 50)],
            hurry,
        )
        .await;
    assert_eq!(placed.unwrap(), Status::Backordered);
    wait_for(&rt, "o-3", Status::Cancelled).await;
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    let counts = rt.get::<Customer>("carol").inbox().await.unwrap().counts;
    assert_eq!(
        (counts.backordered, counts.cancelled, counts.shipped),
        (1, 1, 0)
    );
    let apple = rt.get::<InventoryItem>("apple").level().await.unwrap();
    assert_eq!((apple.available, apple.reserved, apple.shipped), (5, 0, 5));
    // A later restock does not revive a cancelled order.
    rt.get::<InventoryItem>("pear").restock(100).await.unwrap();
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    assert_eq!(
        rt.get::<Order>("o-3").status().await.unwrap(),
        Some(Status::Cancelled)
    );
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}
