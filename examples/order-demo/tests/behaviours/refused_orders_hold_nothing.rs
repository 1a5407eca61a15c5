//! `Order::place` checks everything before it holds anything: an order refused for its
//! customer, a SKU, a quantity, its number of lines, its `hold_ms`/`wait_ms` or its own id
//! gets `PlaceError::Invalid` with a message naming what is wrong, and leaves no hold, no
//! timer and no order behind; the item's stock is untouched.

use gears::CallError;
use order_demo::{
    InventoryItem, Line, MAX_LINES, MAX_POLICY_MS, MAX_QTY, Order, PlaceError, Policy, Status,
    StoreOptions,
};

fn line(sku: &str, qty: u32) -> Line {
    Line {
        sku: sku.into(),
        qty,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_orders_leave_no_hold() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let item = rt.get::<InventoryItem>("sku-a");
    item.seed(10).await.unwrap();
    let policy = Policy::default();
    let long = "k".repeat(gears::MAX_KEY_LEN + 1);
    let many: Vec<Line> = std::iter::once(line("sku-a", 1))
        .chain((1..=MAX_LINES).map(|n| line(&format!("sku-{n}"), 1)))
        .collect();
    // Each starts with a line the item could hold, so an order that held before checking
    // would leave stock held.
    let cases: Vec<(&str, String, Vec<Line>, Policy, &str)> = vec![
        (
            "o-1",
            String::new(),
            vec![line("sku-a", 5)],
            policy,
            "the customer is empty",
        ),
        (
            "o-2",
            "c\n1".into(),
            vec![line("sku-a", 5)],
            policy,
            "control characters",
        ),
        (
            "o-3",
            long.clone(),
            vec![line("sku-a", 5)],
            policy,
            "the customer is 1025 bytes",
        ),
        (
            "o-4",
            "c-1".into(),
            vec![line("sku-a", 5), line("", 1)],
            policy,
            "SKU is empty",
        ),
        (
            "o-5",
            "c-1".into(),
            vec![line("sku-a", 5), line(&long, 1)],
            policy,
            "SKU is 1025",
        ),
        (
            "o-6",
            "c-1".into(),
            vec![line("sku-a", 5), line("sku-b", 0)],
            policy,
            "quantity 0",
        ),
        (
            "o-7",
            "c-1".into(),
            vec![line("sku-a", 5), line("sku-b", MAX_QTY + 1)],
            policy,
            "quantity 10001",
        ),
        ("o-8", "c-1".into(), many, policy, "at most 32 lines"),
        (
            "o-9",
            "c-1".into(),
            vec![line("sku-a", 5), line("sku-a", 1)],
            policy,
            "sku-a appears twice",
        ),
        (
            "o-10",
            "c-1".into(),
            vec![line("sku-a", 5)],
            Policy {
                hold_ms: 1_000_000_000_000_000,
                wait_ms: 1_000,
            },
            "hold_ms must be 1 to 86400000",
        ),
        (
            "o-11",
            "c-1".into(),
            vec![line("sku-a", 5)],
            Policy {
                hold_ms: 0,
                wait_ms: 1_000,
            },
            "hold_ms must be",
        ),
        (
            "o-12",
            "c-1".into(),
            vec![line("sku-a", 5)],
            Policy {
                hold_ms: 1_000,
                wait_ms: MAX_POLICY_MS + 1,
            },
            "wait_ms must be",
        ),
        (
            "o-\u{7}",
            "c-1".into(),
            vec![line("sku-a", 5)],
            policy,
            "the order id holds control",
        ),
    ];
    for (id, customer, lines, policy, why) in cases {
        let placed = rt.get::<Order>(id).place(customer, lines, policy).await;
        match placed {
            Err(CallError::Handler(PlaceError::Invalid(message))) => {
                assert!(
                    message.contains(why),
                    "{id}: {message:?} should say {why:?}"
                )
            }
            other => panic!("{id}: expected Invalid ({why}), got {other:?}"),
        }
        let level = item.level().await.unwrap();
        assert!(level.holds.is_empty(), "{id}: {level:?}");
        assert_eq!(level.available, 10, "{id}: {level:?}");
        assert_eq!(rt.get::<Order>(id).status().await.unwrap(), None, "{id}");
    }
    assert!(
        rt.timers::<InventoryItem>("sku-a")
            .await
            .unwrap()
            .is_empty()
    );

    // The same order, valid, is placed and ships.
    let placed = rt
        .get::<Order>("o-1")
        .place("c-1".into(), vec![line("sku-a", 5)], policy)
        .await
        .unwrap();
    assert_eq!(placed, Status::Shipping);
    rt.shutdown().await.unwrap();
}
