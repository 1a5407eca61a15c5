//! Snapshots bound what a node replays to take a shard over. Gears nodes (child processes
//! with an HTTP ingress) on a real NATS server, snapshotting each shard every 8 log entries:
//! - the node serving the shards writes their snapshots and purges their logs;
//! - a new node with an empty store, taking every shard after the first is SIGKILLed, loads
//!   the snapshots and replays only what follows: counters read what was acknowledged, an
//!   idempotent call retried there is answered from its kept result (not run again), and
//!   timers armed before the kill ring once;
//! - the first node, restarted on its old store (behind the purged logs, and holding an actor
//!   deleted since), takes the shards back from snapshots too: its stale records are replaced,
//!   so the deleted actor is gone and every counter reads its latest value;
//! - each shard keeps one snapshot: one that a newer one replaces is deleted.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use gears_tests::http_nodes::{HttpNode, nats_stores_and_client};
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(3);
const NODE: &str = env!("CARGO_BIN_EXE_child");
const SNAPSHOT_AFTER: u64 = 8;
const KEYS: usize = 24;
const ALARMS: usize = 4;

/// Posts until a node answers for the key's shard (it moves during the test); the status and
/// body of the answer.
async fn post(http: &reqwest::Client, url: &str, path: &str, body: Value) -> (u16, String) {
    let (status, text, _) = post_with(http, url, path, body, None).await;
    (status, text)
}

async fn post_with(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: Value,
    idempotency_key: Option<&str>,
) -> (u16, String, bool) {
    let started = Instant::now();
    loop {
        let mut request = http.post(format!("{url}/{path}")).json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotency-replayed");
        let text = response.text().await.expect("body");
        // Refused before it ran while the shard is between owners.
        if status == 503 || status == 421 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path}: still refused after 30 s: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return (status, text, replayed);
    }
}

async fn number(http: &reqwest::Client, url: &str, path: &str, body: Value) -> u64 {
    let (status, text, _) = post_with(http, url, path, body, None).await;
    assert_eq!(status, 200, "{path}: {text}");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path}: {text}"))
}

/// Waits (30 s at most) until `node`'s metric `name` reaches `at_least`; returns it.
async fn metric_reaches(http: &reqwest::Client, node: &HttpNode, name: &str, at_least: u64) -> u64 {
    let started = Instant::now();
    loop {
        let value = node.metric(http, name).await.unwrap_or(0);
        if value >= at_least {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} is {value} on {} after 30 s, waiting for {at_least}",
            node.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn adds(http: &reqwest::Client, url: &str, rounds: u64) {
    for _ in 0..rounds {
        for key in 0..KEYS {
            number(http, url, &format!("counter/k{key}/add"), json!({ "n": 1 })).await;
        }
    }
}

async fn counters(http: &reqwest::Client, url: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for key in 0..KEYS {
        values.push(number(http, url, &format!("counter/k{key}/get"), json!({})).await);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeovers_start_from_snapshots_of_a_purged_log() {
    let (nats, dirs, http) = nats_stores_and_client(1, 2).await;
    let start = |dir: usize, id: &'static str| {
        HttpNode::start_snapshotting(
            NODE,
            &nats,
            dirs[dir].path(),
            id,
            LEASE,
            Some(SNAPSHOT_AFTER),
        )
    };

    // Node A serves every shard; each counter's shard gathers 2 × 8 entries.
    let a = start(0, "node-a").await;
    adds(&http, &a.url, 2 * SNAPSHOT_AFTER).await;
    let (status, once, replayed) = post_with(
        &http,
        &a.url,
        "counter/k0/add",
        json!({ "n": 1000 }),
        Some("once"),
    )
    .await;
    assert_eq!((status, replayed), (200, false), "{once}");
    for alarm in 0..ALARMS {
        let (status, text) = post(
            &http,
            &a.url,
            &format!("alarm/a{alarm}/arm"),
            json!({ "name": "t", "ms": 8_000 }),
        )
        .await;
        assert_eq!(status, 200, "{text}");
    }
    // Every counter's shard is snapshotted (and its log purged).
    let written = metric_reaches(&http, &a, "snapshots_written_total", KEYS as u64 / 2).await;
    eprintln!("node a wrote {written} snapshots");

    // A dies; B, with an empty store, takes every shard from its snapshot and log tail.
    let mut a = a;
    a.child.start_kill().expect("SIGKILL a");
    let _ = a.child.wait().await;
    let b = start(1, "node-b").await;
    let mut expected = vec![2 * SNAPSHOT_AFTER; KEYS];
    expected[0] += 1000;
    assert_eq!(counters(&http, &b.url).await, expected, "read on node b");
    let loaded = metric_reaches(&http, &b, "snapshots_loaded_total", KEYS as u64 / 2).await;
    eprintln!("node b loaded {loaded} snapshots");
    // The idempotent call's result came with the snapshot: a retry is answered from it.
    let retried = post_with(
        &http,
        &b.url,
        "counter/k0/add",
        json!({ "n": 1000 }),
        Some("once"),
    )
    .await;
    assert_eq!(retried, (200, once, true));
    // Timers armed on A ring once on B.
    for alarm in 0..ALARMS {
        let started = Instant::now();
        loop {
            let path = format!("alarm/a{alarm}/rings");
            let rings = number(&http, &b.url, &path, json!({ "name": "t" })).await;
            if rings == 1 {
                break;
            }
            assert_eq!(rings, 0);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a{alarm} did not ring"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // B goes on (more snapshots, past everything A's store holds) and deletes an alarm; a
    // counter in the alarm's shard gathers a snapshot's worth of entries after that.
    adds(&http, &b.url, 2 * SNAPSHOT_AFTER).await;
    let (status, text) = post(&http, &b.url, "alarm/a0/delete", json!({})).await;
    assert_eq!(status, 200, "{text}");
    let written = b
        .metric(&http, "snapshots_written_total")
        .await
        .unwrap_or(0);
    let alarm_shard = gears::__private::shard_of("alarm", "a0");
    let neighbour = (0..)
        .map(|i| format!("n{i}"))
        .find(|key| gears::__private::shard_of("counter", key) == alarm_shard)
        .expect("a counter key in the alarm's shard");
    for _ in 0..2 * SNAPSHOT_AFTER {
        number(
            &http,
            &b.url,
            &format!("counter/{neighbour}/add"),
            json!({ "n": 1 }),
        )
        .await;
    }
    adds(&http, &b.url, SNAPSHOT_AFTER).await;
    // Each of these shards gathered a snapshot's worth of entries after the delete, so each
    // is snapshotted after it.
    let mut shards: Vec<u16> = (0..KEYS)
        .map(|key| gears::__private::shard_of("counter", &format!("k{key}")))
        .collect();
    shards.push(alarm_shard);
    shards.sort_unstable();
    shards.dedup();
    let after = written + shards.len() as u64;
    metric_reaches(&http, &b, "snapshots_written_total", after).await;

    // A comes back on its old store and B leaves: A takes the shards from the snapshots.
    let a = start(0, "node-a").await;
    b.stop().await;
    for value in &mut expected {
        *value += 3 * SNAPSHOT_AFTER;
    }
    assert_eq!(counters(&http, &a.url).await, expected, "read on node a");
    metric_reaches(&http, &a, "snapshots_loaded_total", 1).await;
    let (status, pending) = post(&http, &a.url, "alarm/a0/pending", json!({})).await;
    assert_eq!(
        (status, pending.as_str()),
        (200, "[]"),
        "a0's timer came back"
    );
    let rings = number(&http, &a.url, "alarm/a0/rings", json!({ "name": "t" })).await;
    assert_eq!(
        rings, 0,
        "the deleted alarm came back from node a's old store"
    );
    let neighbour = number(
        &http,
        &a.url,
        &format!("counter/{neighbour}/get"),
        json!({}),
    )
    .await;
    assert_eq!(neighbour, 2 * SNAPSHOT_AFTER);

    // A snapshot replaced by a newer one was deleted: one object per shard is left.
    let addrs: Vec<async_nats::ServerAddr> = nats
        .urls()
        .iter()
        .map(|url| url.parse().expect("a NATS URL"))
        .collect();
    let js = async_nats::jetstream::new(async_nats::connect(addrs).await.expect("connect"));
    let objects = js
        .get_object_store("gears_replication_snapshots")
        .await
        .expect("the snapshots' bucket");
    let names: Vec<String> = objects
        .list()
        .await
        .expect("list the snapshots")
        .map_ok(|info| info.name)
        .try_collect()
        .await
        .expect("list the snapshots");
    let mut shards: Vec<&str> = names
        .iter()
        .map(|name| name.split('.').next().expect("a shard"))
        .collect();
    let listed = shards.len();
    shards.sort_unstable();
    shards.dedup();
    assert!(listed >= KEYS / 2, "{names:?}");
    assert_eq!(
        shards.len(),
        listed,
        "more than one snapshot of a shard: {names:?}"
    );
    let rings = number(&http, &a.url, "alarm/a1/rings", json!({ "name": "t" })).await;
    assert_eq!(rings, 1);
    a.stop().await;
}
