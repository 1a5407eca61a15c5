//! A small simulated run in-process (orders shipped at once, backordered then shipped on a
//! restock, backordered then cancelled at their deadline) leaves books the audit accepts,
//! with every acknowledged order present; a second run on the same store adds to it and the
//! audit still passes.

use std::sync::Arc;
use std::time::Duration;

use order_demo::{Policy, Silent, Status, StoreOptions, Workload, audit, drain, sku_id};

fn workload() -> Workload {
    Workload {
        orders: 400,
        skus: 12,
        customers: 40,
        concurrency: 16,
        max_lines: 3,
        max_qty: 3,
        initial_stock: 20,
        restock_every: 10,
        restock_qty: 12,
        policy: Policy {
            hold_ms: 5_000,
            wait_ms: 300,
        },
        seed: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_simulation_passes_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let w = workload();
    let skus: Vec<String> = (0..w.skus).map(sku_id).collect();
    let mut acked = Vec::new();
    for run in 0..2 {
        order_demo::seed(&rt, &w).await.unwrap();
        let placement = order_demo::place_orders(&rt, &w, Arc::new(Silent))
            .await
            .unwrap();
        assert!(placement.failed.is_empty(), "{:?}", placement.failed);
        assert_eq!(placement.acked.len() as u64, w.orders);
        assert_eq!(placement.first, run * w.orders);
        assert!(placement.acked_with(Status::Shipping) > 0);
        assert!(
            placement.acked_with(Status::Backordered) > 0,
            "the workload is meant to run items out of stock"
        );
        let backordered = placement.ids_with(Status::Backordered);
        let drained = drain(&rt, backordered, &skus, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(drained.is_complete(), "{drained:?}");
        acked.extend(placement.acked);

        let audit = audit(&rt, &acked).await.unwrap();
        assert!(audit.passed(), "{audit}");
        assert!(audit.quiescent, "{audit}");
        assert_eq!(audit.acked_checked, acked.len());
        let o = audit.orders;
        assert_eq!(o.allocated, (run + 1) * w.orders);
        assert_eq!(o.placed, o.allocated, "{audit}");
        assert_eq!(o.shipping + o.cancelled, o.placed, "{audit}");
        assert!(o.cancelled > 0, "{audit}");
        assert!(o.shipped_after_backorder > 0, "{audit}");
        // Seeding again did not add stock.
        assert_eq!(audit.stock.initial, i64::from(w.skus * w.initial_stock));
    }
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}
