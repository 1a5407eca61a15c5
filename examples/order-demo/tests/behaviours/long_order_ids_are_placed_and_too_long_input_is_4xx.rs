//! An order id of any valid key length (up to 1,024 bytes) can be placed over HTTP, though
//! its holds' timer names are longer than 256 bytes; input that is too long (an order id, a
//! customer or a SKU of 1,025 bytes) gets a 4xx that says what is too long, never a 5xx nor
//! "Unavailable, retry", and holds nothing.

use std::time::Duration;

use order_demo::serve::ServeOptions;
use order_demo::{InventoryItem, StoreOptions};
use serde_json::json;

fn order(customer: &str, sku: &str) -> serde_json::Value {
    json!({
        "customer": customer,
        "lines": [{"sku": sku, "qty": 1}],
        "policy": {"hold_ms": 60_000, "wait_ms": 1_000},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ids_place_and_too_long_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    rt.get::<InventoryItem>("sku-1").seed(100).await.unwrap();
    let live = order_demo::serve::start(&rt, ServeOptions::loopback())
        .await
        .unwrap();
    let base = format!("http://{}", live.local_addr());
    let client = reqwest::Client::new();

    for len in [252, 253, 300, 1_000, gears::MAX_KEY_LEN] {
        let id = format!("o-{}", "x".repeat(len - 2));
        let response = client
            .post(format!("{base}/order/{id}/place"))
            .json(&order("c-1", "sku-1"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "an order id of {len} bytes: {body}");
        assert_eq!(body, "\"Shipping\"", "{len}");
    }

    let long = "k".repeat(gears::MAX_KEY_LEN + 1);
    for (path, body, status, name, says) in [
        (
            format!("order/o-{long}/place"),
            order("c-1", "sku-1"),
            400,
            "invalid_key",
            "longer than the limit of 1024",
        ),
        (
            "order/o-a/place".into(),
            order(&long, "sku-1"),
            422,
            "Invalid",
            "the customer is 1025 bytes",
        ),
        (
            "order/o-b/place".into(),
            order("c-1", &long),
            422,
            "Invalid",
            "a line's SKU is 1025 bytes",
        ),
    ] {
        let response = client
            .post(format!("{base}/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{}", &path[..20]);
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"], name, "{error}");
        assert!(error.to_string().contains(says), "{error}");
        assert!(!error.to_string().contains("retry"), "{error}");
    }
    // The refused orders hold nothing: the 5 placed orders hold nothing either, once their
    // commits (sent through the outbox) have arrived.
    assert!(order_demo::settle(&rt, Duration::from_secs(20)).await);
    let level = rt.get::<InventoryItem>("sku-1").level().await.unwrap();
    assert_eq!((level.available, level.shipped), (95, 5), "{level:?}");
    assert!(level.holds.is_empty(), "{level:?}");
    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}
