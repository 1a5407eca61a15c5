//! The audit is not a rubber stamp: a commit that bypasses the saga (units shipped with no
//! hold and no shipping order behind them) and an acknowledged order that is missing are
//! reported, and `order-demo audit` exits with status 1.

use std::time::Duration;

use order_demo::{
    CATALOG, Catalog, InventoryItem, Line, Order, Policy, Status, StoreOptions, order_id, sku_id,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_violations_and_the_binary_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let catalog = rt.get::<Catalog>(CATALOG);
    catalog.ensure(2, 1).await.unwrap();
    assert_eq!(catalog.allocate_orders(2).await.unwrap(), 0);
    for n in 0..2 {
        rt.get::<InventoryItem>(sku_id(n)).seed(10).await.unwrap();
    }
    let lines = vec![Line {
        sku: sku_id(0),
        qty: 2,
    }];
    let placed = rt
        .get::<Order>(order_id(0))
        .place(order_demo::customer_id(0), lines, Policy::default())
        .await
        .unwrap();
    assert_eq!(placed, Status::Shipping);
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    let acked = vec![(order_id(0), Status::Shipping)];
    let clean = order_demo::audit(&rt, &acked).await.unwrap();
    assert!(clean.passed(), "{clean}");

    // Ship units of item 1 behind the saga's back, and claim order 1 was acknowledged.
    rt.get::<InventoryItem>(sku_id(1))
        .commit("o-rogue".into(), 1, 3)
        .await
        .unwrap();
    let acked = vec![
        (order_id(0), Status::Shipping),
        (order_id(1), Status::Backordered),
    ];
    let broken = order_demo::audit(&rt, &acked).await.unwrap();
    assert!(!broken.passed());
    let all = broken.violations.join("\n");
    assert!(all.contains("sku-0001: 1 commits found no hold"), "{all}");
    assert!(
        all.contains("sku-0001: shipped 3 units, but shipping orders have 0"),
        "{all}"
    );
    assert!(
        all.contains("o-0000001: acknowledged as backordered, now missing"),
        "{all}"
    );
    assert_eq!(broken.violation_count, 3, "{all}");
    rt.shutdown().await.unwrap();

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-demo"))
        .args(["audit", "--drain-secs", "1", "--data"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("audit:   FAILED"), "{stdout}");
}
