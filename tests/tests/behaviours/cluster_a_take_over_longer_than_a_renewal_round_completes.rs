//! A node takes each shard handed to it once, even when catching its store up with the
//! shards' logs spans renewal rounds (an eighth of a lease each). Gears nodes (child
//! processes with an HTTP ingress) on a real NATS server, 1 s leases: node A writes the logs
//! of many shards; node B joins on an empty store, and A hands B its half in steps of 64
//! shards, whose catch-ups queue 8 at a time. B must catch each of them up exactly once.
//! (A catch-up used to count as "lost" in every renewal round, since the shard's log could
//! not be appended to yet: its lease was given back and taken again, forever when one
//! catch-up took longer than a round.)

use std::time::{Duration, Instant};

use gears_tests::http_nodes::{HttpNode, nats_stores_and_client, post, wait_until_shared};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(1);
const NODE: &str = env!("CARGO_BIN_EXE_child");
const KEYS: u64 = 128;
const ADDS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_longer_than_a_renewal_round_completes() {
    let (nats, dirs, http) = nats_stores_and_client(1, 2).await;

    let a = HttpNode::start(NODE, &nats, dirs[0].path(), "node-a", LEASE).await;
    for _ in 0..ADDS {
        for key in 0..KEYS {
            let (status, body) = call(&http, &a.url, key, "add", json!({ "n": 1 })).await;
            assert_eq!(status, 200, "add to k{key}: {body}");
        }
    }

    let b = HttpNode::start(NODE, &nats, dirs[1].path(), "node-b", LEASE).await;
    let started = Instant::now();
    wait_until_shared(&http, &[&a, &b], Duration::from_secs(30)).await;
    // Until nothing moves any more (the hand-over goes in steps).
    let mut served = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = b.metric(&http, "shards_served").await.unwrap_or(0);
        if now == served {
            break;
        }
        served = now;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "shards still move"
        );
    }
    let catch_ups = b.metric(&http, "catch_ups_total").await.unwrap_or(0);
    eprintln!("node b serves {served} shards after {catch_ups} catch-ups");
    assert!(served > 0);
    assert_eq!(
        catch_ups, served,
        "node b caught up more shards than it was handed: some went back and forth"
    );
    for key in 0..KEYS {
        let (status, body) = call(&http, &b.url, key, "get", json!({})).await;
        assert_eq!((status, body.trim()), (200, ADDS.to_string().as_str()));
    }
    b.stop().await;
    a.stop().await;
}

/// Calls `handler` of counter `k{key}` through `node`: the status and body.
async fn call(
    http: &reqwest::Client,
    node: &str,
    key: u64,
    handler: &str,
    body: serde_json::Value,
) -> (u16, String) {
    post(http, node, &format!("counter/k{key}/{handler}"), body).await
}
