//! `order-demo serve` over HTTP: an order placed with `POST /order/{id}/place` reserves and
//! ships stock, an item's `BackInStock` events arrive on `/inventory_item/{sku}/events`,
//! the page is served at `/`, and `/demo/live` streams snapshots that count the orders.

use std::time::Duration;

use futures::StreamExt;
use gears::http::HttpConfig;
use order_demo::serve::{ServeOptions, Simulation};
use order_demo::{InventoryItem, StoreOptions, Workload};

/// The next SSE event named `name` on `body`: its data.
async fn next_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<Vec<u8>>> + Unpin),
    buffer: &mut String,
    name: &str,
) -> String {
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if block.lines().any(|l| l == format!("event: {name}")) {
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    return data.unwrap().to_string();
                }
            }
            let chunk = body.next().await.expect("the stream is open").unwrap();
            buffer.push_str(&String::from_utf8(chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("an event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_items_page_and_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    // A small shop without background orders, so the counts are exact.
    let workload = Workload {
        skus: 3,
        customers: 2,
        initial_stock: 5,
        ..Workload::default()
    };
    order_demo::seed(&rt, &workload).await.unwrap();
    let live = order_demo::serve::start(
        &rt,
        ServeOptions {
            http: HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
            simulation: None,
            tick: Duration::from_millis(100),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", live.local_addr());
    let client = reqwest::Client::new();

    // The page.
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/demo/live"));

    // Watch an item and the live stream before anything happens.
    let events = client
        .get(format!("{base}/inventory_item/sku-0001/events"))
        .send()
        .await
        .unwrap();
    let mut events = events.bytes_stream().map(|r| r.map(|b| b.to_vec()));
    let mut events_buffer = String::new();
    let snapshots = client
        .get(format!("{base}/demo/live"))
        .send()
        .await
        .unwrap();
    let mut snapshots = snapshots.bytes_stream().map(|r| r.map(|b| b.to_vec()));
    let mut snapshots_buffer = String::new();

    // Place an order over HTTP: all 5 units of sku-0001, so it ships.
    let order = serde_json::json!({
        "customer": "c-00001",
        "lines": [{"sku": "sku-0001", "qty": 5}],
        "policy": {"hold_ms": 10_000, "wait_ms": 60_000},
    });
    let placed = client
        .post(format!("{base}/order/o-http-1/place"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status().as_u16(), 200);
    assert_eq!(
        placed.json::<serde_json::Value>().await.unwrap(),
        "Shipping"
    );
    // A second order for the same SKU is backordered (no stock left).
    let second = client
        .post(format!("{base}/order/o-http-2/place"))
        .json(&serde_json::json!({
            "customer": "c-00000",
            "lines": [{"sku": "sku-0001", "qty": 1}],
            "policy": {"hold_ms": 10_000, "wait_ms": 60_000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.json::<serde_json::Value>().await.unwrap(),
        "Backordered"
    );
    // An invalid order is the handler's typed error: 422 named after the variant.
    let invalid = client
        .post(format!("{base}/order/o-http-3/place"))
        .json(&serde_json::json!({"customer": "c-00000", "lines": [], "policy": {"hold_ms": 1, "wait_ms": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status().as_u16(), 422);
    assert_eq!(
        invalid.json::<serde_json::Value>().await.unwrap()["error"],
        "Invalid"
    );

    // The backordered order's subscription to the item is a durable message: it is in
    // place once the outbox is drained (a restock before it would reach no subscriber;
    // CI hit that once).
    assert!(order_demo::settle(&rt, Duration::from_secs(30)).await);
    // A restock over HTTP: the item's event stream carries BackInStock, and the
    // backordered order ships.
    let restock = client
        .post(format!("{base}/inventory_item/sku-0001/restock"))
        .json(&serde_json::json!({"qty": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(restock.json::<serde_json::Value>().await.unwrap(), 4);
    let event: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, &mut events_buffer, "event").await).unwrap();
    assert_eq!(
        event,
        serde_json::json!({"sku": "sku-0001", "available": 4})
    );
    let mut status = serde_json::Value::Null;
    // A condition, bounded generously: a loaded machine delivers the restock's event late.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let order: serde_json::Value = client
            .get(format!("{base}/order/o-http-2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = order["status"].clone();
        if status == "Shipping" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, "Shipping",
        "the backordered order shipped on the restock"
    );
    let level = rt.get::<InventoryItem>("sku-0001").level().await.unwrap();
    assert_eq!(level.shipped, 6);

    // Snapshots stream; each SKU has its stock (orders placed by hand with ids of their
    // own are not in the catalog, so the order counts stay 0).
    let snapshot: serde_json::Value =
        serde_json::from_str(&next_event(&mut snapshots, &mut snapshots_buffer, "snapshot").await)
            .unwrap();
    assert_eq!(snapshot["skus"].as_array().unwrap().len(), 3);
    let later: serde_json::Value =
        serde_json::from_str(&next_event(&mut snapshots, &mut snapshots_buffer, "snapshot").await)
            .unwrap();
    assert!(later["seq"].as_u64() > snapshot["seq"].as_u64());
    assert_eq!(later["skus"][1]["shipped"], 6);
    assert!(later["runtime"]["turns"].as_u64().unwrap() > 0);
    assert!(
        later["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sku"] == "sku-0001"),
        "the restock is listed: {later}"
    );

    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulation_places_orders_that_the_snapshot_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let live = order_demo::serve::start(
        &rt,
        ServeOptions {
            http: HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
            simulation: Some(Simulation {
                rate: 100,
                ..Simulation::default()
            }),
            tick: Duration::from_millis(100),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/demo/snapshot", live.local_addr());
    let mut placed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let snapshot: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let orders = &snapshot["orders"];
        placed = orders["placed"].as_u64().unwrap();
        let sum = ["shipping", "backordered", "cancelled"]
            .iter()
            .map(|s| orders[s].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(placed, sum, "{snapshot}");
        if placed >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(placed >= 50, "the simulation placed orders: {placed}");
    live.stop().await.unwrap();
    // What the simulation did keeps the books.
    let audit = order_demo::audit(&rt, &[]).await.unwrap();
    assert!(audit.passed(), "{audit}");
    rt.shutdown().await.unwrap();
}
