//! Three Gears nodes (child processes with an HTTP ingress) on a real NATS server: durable
//! messages whose sender and target are in different shards (so mostly on different nodes)
//! arrive exactly once and in order, through a node's death:
//! - numbered sends (`Numberer` → `Tally`): each tally holds 1, 2, … n of each sender, n being
//!   what the sender committed;
//! - events of durable subscriptions (`Stock` → `Listener`): each listener saw every event of
//!   its stock, in order;
//! - timers fire on whichever node serves their actor's shard: every armed timer fired once,
//!   in order;
//! - the stocks' events reach watchers (server-sent events) on every node, in order, whichever
//!   node runs the stock's turns.
//!
//! One node is SIGKILLed while the sends, events and timers are under way through the other
//! two; its shards, their outbox entries and timers move to the survivors.

use std::time::{Duration, Instant};

use gears_tests::http_nodes::{HttpCluster, post_ok};
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(3);
const NODE: &str = env!("CARGO_BIN_EXE_child");
const SENDERS: usize = 8;
const TALLIES: usize = 4;
const STOCKS: usize = 3;
const LISTENERS: usize = 6;

async fn state(http: &reqwest::Client, url: &str, path: &str) -> Value {
    let response = http
        .get(format!("{url}/{path}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.expect("json")
}

/// Watches `path` (server-sent events of a stock) and collects the `seq` of every event.
async fn watch(
    http: &reqwest::Client,
    url: &str,
    path: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<u64>>> {
    use futures::StreamExt;
    let response = http
        .get(format!("{url}/{path}"))
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut text = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find('\n') {
                let line: String = text.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:")
                    && let Ok(event) = serde_json::from_str::<Value>(data.trim())
                    && let Some(seq) = event["seq"].as_u64()
                {
                    into.lock().unwrap().push(seq);
                }
            }
        }
    });
    seen
}

/// One round of work through `url`: a send from every sender, an event of every stock, a
/// timer of every other sender.
async fn round(http: &reqwest::Client, urls: &[String], round: usize) {
    for s in 0..SENDERS {
        let url = &urls[(s + round) % urls.len()];
        let tally = format!("t{}", (s + round) % TALLIES);
        post_ok(
            http,
            url,
            &format!("numberer/n{s}/send_next"),
            json!({ "target": tally }),
        )
        .await;
        if s % 2 == 0 {
            post_ok(
                http,
                url,
                &format!("numberer/n{s}/arm_next"),
                json!({ "ms": 300 }),
            )
            .await;
        }
    }
    for s in 0..STOCKS {
        let url = &urls[(s + round) % urls.len()];
        post_ok(http, url, &format!("stock/s{s}/add"), json!({ "n": 1 })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_nodes_exactly_once_and_in_order() {
    let mut cluster = HttpCluster::start(NODE, 1, 3, LEASE).await;
    let (http, urls) = (cluster.http.clone(), cluster.urls.clone());
    let nodes = &mut cluster.nodes;

    // Subscriptions are durable messages too.
    for l in 0..LISTENERS {
        post_ok(
            &http,
            &urls[l % 3],
            &format!("listener/l{l}/follow"),
            json!({ "stock": format!("s{}", l % STOCKS) }),
        )
        .await;
    }
    // Before the first event: a subscription is a message to the stock, and events are
    // published to the subscribers the stock has when it publishes.
    let started = Instant::now();
    'subscribed: loop {
        for s in 0..STOCKS {
            post_ok(
                &http,
                &urls[0],
                &format!("stock/s{s}/add"),
                json!({ "n": 0 }),
            )
            .await;
        }
        for l in 0..LISTENERS {
            let seen = post_ok(&http, &urls[1], &format!("listener/l{l}/seen"), json!({})).await;
            if seen.as_array().is_none_or(Vec::is_empty) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "l{l} saw nothing"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'subscribed;
            }
        }
        break;
    }

    // Watchers of every stock on every node: a stock's turns run on one node, its events
    // reach the watchers of all (`watch` across nodes, here its server-sent events).
    let mut watchers = Vec::new();
    for url in &urls {
        for s in 0..STOCKS {
            watchers.push((
                s,
                url.clone(),
                watch(&http, url, &format!("stock/s{s}/events")).await,
            ));
        }
    }
    for r in 0..20 {
        round(&http, &urls, r).await;
    }
    let started = Instant::now();
    for (s, url, seen) in &watchers {
        let changes = state(&http, &urls[0], &format!("stock/s{s}")).await["changes"]
            .as_u64()
            .expect("changes");
        loop {
            let seen = seen.lock().unwrap().clone();
            let first = seen.first().copied().unwrap_or(1);
            let contiguous: Vec<u64> = (first..first + seen.len() as u64).collect();
            assert_eq!(seen, contiguous, "the events of s{s} watched through {url}");
            if seen.last() == Some(&changes) && seen.len() >= 15 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the watcher of s{s} through {url} saw {seen:?}, the stock is at {changes}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(watchers);
    let mut killed = nodes.pop().expect("three nodes");
    killed.child.start_kill().expect("SIGKILL");
    let _ = killed.child.wait().await;
    eprintln!("node-2 killed");
    let survivors = &urls[..2];
    for r in 20..60 {
        round(&http, survivors, r).await;
    }

    // Everything arrives, once and in order (the killed node's shards, their outbox entries
    // and timers included).
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for s in 0..SENDERS {
            let numbers = post_ok(
                &http,
                &survivors[s % 2],
                &format!("numberer/n{s}/numbers"),
                json!({}),
            )
            .await;
            let (sent, armed) = (numbers[0].as_u64().unwrap(), numbers[1].as_u64().unwrap());
            let fired: Vec<u64> = serde_json::from_value(numbers[2].clone()).unwrap();
            let expected: Vec<u64> = (1..=armed).collect();
            assert!(
                expected.starts_with(&fired),
                "n{s}'s timers fired as {fired:?}"
            );
            if fired != expected {
                missing.push(format!("n{s} fired {} of {armed}", fired.len()));
            }
            let mut received = Vec::new();
            for t in 0..TALLIES {
                let got: Vec<u64> = serde_json::from_value(
                    post_ok(
                        &http,
                        &survivors[t % 2],
                        &format!("tally/t{t}/received"),
                        json!({ "from": format!("n{s}") }),
                    )
                    .await,
                )
                .unwrap();
                // In order at each tally.
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "t{t} from n{s}: {got:?}"
                );
                received.extend(got);
            }
            received.sort_unstable();
            let expected: Vec<u64> = (1..=sent).collect();
            assert!(
                expected.len() >= received.len()
                    && received.iter().all(|n| expected.binary_search(n).is_ok())
                    && received.windows(2).all(|w| w[0] < w[1]),
                "n{s} sent 1..={sent}, the tallies got {received:?}"
            );
            if received != expected {
                missing.push(format!("n{s} delivered {} of {sent}", received.len()));
            }
        }
        for l in 0..LISTENERS {
            let stock = state(&http, &survivors[l % 2], &format!("stock/s{}", l % STOCKS)).await;
            let changes = stock["changes"].as_u64().expect("changes");
            let seen: Vec<u64> = serde_json::from_value(
                post_ok(
                    &http,
                    &survivors[l % 2],
                    &format!("listener/l{l}/seen"),
                    json!({}),
                )
                .await,
            )
            .unwrap();
            let first = seen.first().copied().unwrap_or(1);
            let contiguous: Vec<u64> = (first..first + seen.len() as u64).collect();
            assert_eq!(seen, contiguous, "l{l} saw events out of order or twice");
            if seen.last().copied() != Some(changes) {
                missing.push(format!("l{l} saw up to {:?} of {changes}", seen.last()));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not everything arrived within 60 s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.stop().await;
}
