//! Over HTTP only a shop's client actions are reachable: the saga's steps between actors
//! (`reserve`, `release`, `commit`, `expire`, `confirm_hold`, `on_back_in_stock`,
//! `give_up`, `notify`) and the catalog's maintenance (`ensure`, `allocate_orders`, `seed`)
//! answer 404 `unknown_handler`, by call and by send, are not listed among the valid
//! handlers, and change nothing; what stays public refuses out-of-range arguments with a
//! 4xx naming the range.

use order_demo::serve::ServeOptions;
use order_demo::{CATALOG, Catalog, InventoryItem, StoreOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_steps_answer_404_and_public_ones_check_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    rt.get::<InventoryItem>("x").seed(5).await.unwrap();
    let live = order_demo::serve::start(&rt, ServeOptions::loopback())
        .await
        .unwrap();
    let base = format!("http://{}", live.local_addr());
    let client = reqwest::Client::new();

    let internal = [
        (
            "inventory_item/x/commit",
            json!({"order": "nobody", "attempt": 1, "qty": 4294967295u32}),
        ),
        (
            "inventory_item/x/reserve",
            json!({"order": "o", "attempt": 1, "qty": 1, "hold_ms": 1}),
        ),
        (
            "inventory_item/x/release",
            json!({"order": "o", "attempt": 1}),
        ),
        ("inventory_item/x/expire", json!({"order": "o"})),
        ("inventory_item/x/seed", json!({"qty": 4294967295u32})),
        ("order/o-1/confirm_hold", json!({"sku": "x", "attempt": 1})),
        (
            "order/o-1/on_back_in_stock",
            json!({"event": {"sku": "x", "available": 1}}),
        ),
        ("order/o-1/give_up", json!({})),
        (
            "customer/c-1/notify",
            json!({"notice": {"Shipped": {"order": "o-1"}}}),
        ),
        (
            "catalog/demo/ensure",
            json!({"skus": 4294967295u32, "customers": 0}),
        ),
        (
            "catalog/demo/allocate_orders",
            json!({"n": 1_000_000_000_000u64}),
        ),
    ];
    for (path, body) in &internal {
        for suffix in ["", "/send"] {
            let response = client
                .post(format!("{base}/{path}{suffix}"))
                .json(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 404, "{path}{suffix}");
            let error: serde_json::Value = response.json().await.unwrap();
            assert_eq!(error["error"], "unknown_handler", "{path}{suffix}: {error}");
            let handler = path.rsplit('/').next().unwrap();
            let valid = error["valid"].as_array().unwrap();
            assert!(
                !valid.iter().any(|v| v == handler),
                "{path}: {handler} is not listed: {error}"
            );
        }
    }
    // Nothing changed.
    let level = rt.get::<InventoryItem>("x").level().await.unwrap();
    assert_eq!((level.available, level.shipped, level.initial), (5, 0, 5));
    assert!(level.holds.is_empty());
    let contents = rt.get::<Catalog>(CATALOG).contents().await.unwrap();
    assert_eq!(contents, order_demo::Contents::default());

    // Public handlers check their ranges: a 422 with the handler's typed error.
    for (path, body, why) in [
        (
            "inventory_item/x/restock",
            json!({"qty": 0}),
            "not 1 to 1000000",
        ),
        (
            "inventory_item/x/restock",
            json!({"qty": 4294967295u32}),
            "not 1 to 1000000",
        ),
        (
            "order/o-2/place",
            json!({"customer": "c-1", "lines": [{"sku": "x", "qty": 1}],
                   "policy": {"hold_ms": 1_000_000_000_000_000u64, "wait_ms": 1}}),
            "hold_ms must be 1 to 86400000",
        ),
    ] {
        let response = client
            .post(format!("{base}/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "{path} {body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"], "Invalid", "{error}");
        assert!(
            error["detail"]["Invalid"].as_str().unwrap().contains(why),
            "{error}"
        );
    }
    // Still callable in-process (the simulation seeds and allocates this way).
    assert_eq!(
        rt.get::<Catalog>(CATALOG).allocate_orders(3).await.unwrap(),
        0
    );
    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}
