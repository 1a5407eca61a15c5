//! A message delivered to another shard is kept by its target under the sender's shard and
//! outbox sequence number (so a repeat after a hand-over is dropped): a node that takes a
//! shard must therefore number the shard's new messages after every number an earlier owner
//! gave, or the target drops new messages as repeats of old ones. Here the new owner's clock
//! (what a run numbers from) is behind the old owner's, as between two machines: node A
//! numbers from 50, node B from 1.
//!
//! A serves every shard and sends 5 numbered messages from a sender to a target in another
//! shard; then B starts, A leaves (SIGTERM: B takes every shard), and 100 more are sent
//! through B. The target holds all 105, once each and in order.

use std::time::{Duration, Instant};

use gears_tests::http_nodes::{HttpNode, nats_stores_and_client, post_ok};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const NODE: &str = env!("CARGO_BIN_EXE_child");

async fn serves_every_shard(http: &reqwest::Client, node: &HttpNode) {
    let started = Instant::now();
    while node.metric(http, "shards_served").await != Some(u64::from(gears::SHARDS)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} does not serve every shard",
            node.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `tally` received from `sender` once it holds `n` numbers (or 20 s passed).
async fn received(
    http: &reqwest::Client,
    url: &str,
    tally: &str,
    sender: &str,
    n: usize,
) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let got: Vec<u64> = serde_json::from_value(
            post_ok(
                http,
                url,
                &format!("tally/{tally}/received"),
                json!({ "from": sender }),
            )
            .await,
        )
        .expect("numbers");
        if got.len() >= n || started.elapsed() > Duration::from_secs(20) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_shard_numbers_its_messages_after_every_earlier_owner() {
    let (nats, dirs, http) = nats_stores_and_client(1, 2).await;
    // A sender and a target in different shards: delivered apart, kept by the target.
    let sender = "x";
    let tally = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| {
            gears::__private::shard_of("tally", t) != gears::__private::shard_of("numberer", sender)
        })
        .expect("a tally in another shard");

    let a = HttpNode::start_with(
        NODE,
        &nats,
        dirs[0].path(),
        "node-a",
        LEASE,
        None,
        &[("GEARS_TEST_OUTBOX_FROM", "50")],
    )
    .await;
    serves_every_shard(&http, &a).await;
    for _ in 0..5 {
        post_ok(
            &http,
            &a.url,
            &format!("numberer/{sender}/send_next"),
            json!({ "target": tally }),
        )
        .await;
    }
    assert_eq!(
        received(&http, &a.url, &tally, sender, 5).await,
        (1..=5).collect::<Vec<u64>>(),
        "through A"
    );

    let b = HttpNode::start_with(
        NODE,
        &nats,
        dirs[1].path(),
        "node-b",
        LEASE,
        None,
        &[("GEARS_TEST_OUTBOX_FROM", "1")],
    )
    .await;
    a.stop().await;
    serves_every_shard(&http, &b).await;
    for _ in 0..100 {
        post_ok(
            &http,
            &b.url,
            &format!("numberer/{sender}/send_next"),
            json!({ "target": tally }),
        )
        .await;
    }
    assert_eq!(
        received(&http, &b.url, &tally, sender, 105).await,
        (1..=105).collect::<Vec<u64>>(),
        "every number sent, once and in order, after the shards moved to B"
    );
    b.stop().await;
}
