//! The order saga when a turn runs again (`examples/order-demo/src/order.rs`, module docs).
//!
//! A turn that may run again (a delivered event, a request retried under its idempotency
//! key) makes the same calls when it does, answered from the results the items kept. Its
//! compensations must therefore leave only if it commits:
//! - an attempt that cannot hold every line *sends* its releases with the turn: until the
//!   turn commits, the items still hold (a `release` *called* by a run that is then lost
//!   freed holds that the next run, told by the kept results that they are held, shipped: a
//!   `commit` that found no hold, seen on the cluster test under node failures);
//! - an attempt whose holds expired (the item asked, the order released) never ships, even
//!   if its turn runs again and every reserve answers "held".
//!
//! A [`TestContext`](gears::testing::TestContext) runs the order's handlers on a plain value
//! and keeps what they asked for unapplied, as in a run that is lost before it commits; a
//! context's `turn_id` is the attempt id its run of `try_lines` uses.

use gears::testing::TestRuntime;
use order_demo::{
    BackInStock, InventoryItem, InventoryItemMessage, Line, Order, Policy, Status, StoreOptions,
    register,
};

fn line(sku: &str, qty: u32) -> Line {
    Line {
        sku: sku.into(),
        qty,
    }
}

/// The `(sku, order, attempt)` of every release a turn sent.
fn releases(sends: &[gears::testing::RecordedSend]) -> Vec<(String, String, u64)> {
    sends
        .iter()
        .filter_map(|s| match s.message::<InventoryItem>()? {
            InventoryItemMessage::Release { order, attempt } => {
                Some((s.key.clone(), order, attempt))
            }
            _ => None,
        })
        .collect()
}

fn commits(sends: &[gears::testing::RecordedSend]) -> usize {
    sends
        .iter()
        .filter(|s| {
            matches!(
                s.message::<InventoryItem>(),
                Some(InventoryItemMessage::Commit { .. })
            )
        })
        .count()
}

/// The demo's actors on a test runtime: sku-1 has 5 units, sku-2 none.
async fn shop() -> TestRuntime {
    let t = TestRuntime::new(|b| register(b, &StoreOptions::default()))
        .await
        .unwrap();
    let rt = t.runtime();
    rt.get::<InventoryItem>("sku-1").seed(5).await.unwrap();
    rt.get::<InventoryItem>("sku-2").seed(0).await.unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_attempt_releases_with_its_turn_not_before() {
    let t = shop().await;
    let rt = t.runtime();

    let ctx = t.context::<Order>("o-1");
    let attempt = ctx.turn_id() as u64;
    let mut order = Order::default();
    let placed = order
        .place(
            &ctx,
            "c-1".into(),
            vec![line("sku-1", 2), line("sku-2", 1)],
            Policy::default(),
        )
        .await;
    assert_eq!(placed, Ok(Status::Backordered));

    // The turn has not committed: sku-1 still holds for this attempt.
    let level = rt.get::<InventoryItem>("sku-1").level().await.unwrap();
    assert_eq!((level.available, level.reserved), (3, 2), "{level:?}");
    assert_eq!(level.holds[0].hold.attempt, attempt);
    // Its release leaves with the turn; sku-2 refused (its error is kept), so it holds
    // nothing for this attempt and is sent nothing.
    let sent = ctx.recorded().sends;
    assert_eq!(
        releases(&sent),
        vec![("sku-1".to_string(), "o-1".to_string(), attempt)]
    );
    assert_eq!(commits(&sent), 0);

    // Through the runtime, the turn commits and the release is delivered.
    let placed = rt
        .get::<Order>("o-2")
        .place(
            "c-1".into(),
            vec![line("sku-1", 2), line("sku-2", 1)],
            Policy::default(),
        )
        .await
        .unwrap();
    assert_eq!(placed, Status::Backordered);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let level = rt.get::<InventoryItem>("sku-1").level().await.unwrap();
        if level.holds.iter().all(|h| h.order != "o-2") {
            // o-1's hold stays: its turn never committed, so only its expiry frees it.
            assert_eq!((level.available, level.reserved), (3, 2), "{level:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "o-2's release never arrived: {level:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_holds_expired_never_ships_when_its_turn_runs_again() {
    let t = shop().await;
    let rt = t.runtime();

    // Placed while sku-2 is out: backordered.
    let mut order = Order::default();
    let placed = order
        .place(
            &t.context::<Order>("o-1"),
            "c-1".into(),
            vec![line("sku-1", 1), line("sku-2", 1)],
            Policy::default(),
        )
        .await;
    assert_eq!(placed, Ok(Status::Backordered));
    rt.get::<InventoryItem>("sku-2").restock(5).await.unwrap();

    // The back-in-stock turn that will run again: its first run was lost, its holds expired
    // and sku-1 asked the order, which released them.
    let rerun = t.context::<Order>("o-1");
    let attempt = rerun.turn_id() as u64;
    let asked = t.context::<Order>("o-1");
    order.confirm_hold(&asked, "sku-1".into(), attempt).await;
    assert_eq!(
        releases(&asked.recorded().sends),
        vec![("sku-1".to_string(), "o-1".to_string(), attempt)]
    );

    // It runs again: every reserve answers "held", and still it must not ship.
    let event = BackInStock {
        sku: "sku-2".into(),
        available: 5,
    };
    order.on_back_in_stock(&rerun, event.clone()).await;
    let sent = rerun.recorded().sends;
    assert_eq!(commits(&sent), 0, "an expired attempt shipped: {sent:?}");
    assert_eq!(order.details().await.status, Some(Status::Backordered));
    let mut released = releases(&sent);
    released.sort();
    assert_eq!(
        released,
        vec![
            ("sku-1".to_string(), "o-1".to_string(), attempt),
            ("sku-2".to_string(), "o-1".to_string(), attempt),
        ],
        "what the attempt holds goes back with the turn"
    );

    // Any other attempt ships.
    let next = t.context::<Order>("o-1");
    order.on_back_in_stock(&next, event).await;
    assert_eq!(commits(&next.recorded().sends), 2);
    assert_eq!(order.details().await.status, Some(Status::Shipping));
    t.shutdown().await.unwrap();
}

/// An order stored by version 1 (no expired attempts) loads as version 2.
#[test]
fn an_order_of_version_1_loads() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/order_v1_backordered.bin");
    let v1: order_demo::OrderV1 = serde_json::from_value(serde_json::json!({
        "customer": "c-1",
        "lines": [{"sku": "sku-1", "qty": 2}],
        "policy": {"hold_ms": 10000, "wait_ms": 2000},
        "status": "Backordered",
        "missing": "sku-1",
        "attempts": 1,
        "shipped_attempt": null,
    }))
    .unwrap();
    let bytes = gears::__private::encode_state(&v1);
    if !fixture.exists() && std::env::var_os("GEARS_WRITE_FIXTURES").is_some() {
        std::fs::write(&fixture, &bytes).unwrap();
    }
    let golden = std::fs::read(&fixture).expect("the golden fixture");
    assert_eq!(golden, bytes, "version 1's encoding changed");
    let order: Order = gears::__private::decode_state(&golden).unwrap();
    let view = futures::executor::block_on(order.details());
    assert_eq!(view.status, Some(Status::Backordered));
    assert_eq!(view.customer, "c-1");
    assert_eq!(view.lines, vec![line("sku-1", 2)]);
    assert_eq!(view.missing.as_deref(), Some("sku-1"));
    assert_eq!(view.attempts, 1);
}
