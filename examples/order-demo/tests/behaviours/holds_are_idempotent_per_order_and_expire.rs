//! An item holds stock once per order id however often it is asked, refuses with a typed
//! `OutOfStock` when short (changing nothing), ignores a release from an older attempt, ships
//! a committed hold, and gets back the stock of a hold that nobody commits or releases when it
//! expires (after asking the order), publishing `BackInStock` as it comes back from zero.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gears::{CallError, Watched};
use order_demo::{BackInStock, InventoryItem, OutOfStock, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_is_idempotent_release_checks_the_attempt_commit_ships() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let item = rt.get::<InventoryItem>("sku-a");
    assert_eq!(item.seed(5).await.unwrap(), 5);
    assert_eq!(
        item.seed(50).await.unwrap(),
        5,
        "seeding twice adds nothing"
    );

    // The same order reserving twice holds once.
    let hour = 3_600_000;
    item.reserve("o-1".into(), 1, 3, hour).await.unwrap();
    item.reserve("o-1".into(), 1, 3, hour).await.unwrap();
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved), (2, 3));
    assert_eq!(level.holds.len(), 1);
    assert!(level.holds[0].expires.is_some());

    // Short: a typed error, and nothing changed.
    let short = item.reserve("o-2".into(), 2, 3, hour).await;
    match short {
        Err(CallError::Handler(e)) => assert_eq!(
            e,
            OutOfStock {
                sku: "sku-a".into(),
                requested: 3,
                available: 2
            }
        ),
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    assert_eq!(item.level().await.unwrap(), level);

    // A new attempt takes the hold over; a release of the old attempt is ignored.
    item.reserve("o-1".into(), 9, 3, hour).await.unwrap();
    assert!(!item.release("o-1".into(), 1).await.unwrap());
    assert_eq!(item.level().await.unwrap().reserved, 3);
    assert!(item.release("o-1".into(), 9).await.unwrap());
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved), (5, 0));

    // Commit ships the hold.
    item.reserve("o-1".into(), 10, 2, hour).await.unwrap();
    item.commit("o-1".into(), 10, 2).await.unwrap();
    let level = item.level().await.unwrap();
    assert_eq!((level.available, level.reserved, level.shipped), (3, 0, 2));
    assert!(level.holds.is_empty());
    assert_eq!(level.unheld_commits, 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_hold_expires_and_is_back_in_stock() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let item = rt.get::<InventoryItem>("sku-b");
    item.seed(2).await.unwrap();
    let mut events = rt.watch::<InventoryItem>("sku-b").unwrap();
    // Held for an order that was never placed (its placing turn was lost, say).
    item.reserve("o-lost".into(), 1, 2, 100).await.unwrap();
    assert_eq!(item.level().await.unwrap().available, 0);

    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the hold expires and its stock comes back");
    assert_eq!(
        event,
        Some(Watched::Event(BackInStock {
            sku: "sku-b".into(),
            available: 2
        }))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let level = item.level().await.unwrap();
        if level.holds.is_empty() {
            assert_eq!((level.available, level.reserved), (2, 0));
            break;
        }
        assert!(Instant::now() < deadline, "{level:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rt.shutdown().await.unwrap();
}
