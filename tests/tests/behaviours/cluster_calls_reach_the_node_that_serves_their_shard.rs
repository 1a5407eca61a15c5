//! Three Gears nodes (child processes with an HTTP ingress) on a real NATS server: a call made
//! on any node reaches the node that serves its actor's shard (NATS request/reply on the
//! shard's subject), and the answer comes back as if the actor were local:
//! - calls, state reads and idempotent calls (`Idempotency-Key`, retried through another
//!   node) answer the same whichever node is asked, and each node ran calls routed to it;
//! - every node lists every node's keys (`/admin/<type>`), whole or page by page;
//! - calls between actors cross nodes (a relay through three keys), and a cycle across nodes
//!   is refused as one on a node is;
//! - while one node is SIGKILLed under load (calls and bank transfers made through the other
//!   two), every call is answered once its shard has moved, and none is applied twice: each
//!   counter equals the adds acknowledged, each account the transfers acknowledged, and the
//!   money is conserved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gears_tests::http_nodes::{HttpCluster, post};
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(3);
const NODE: &str = env!("CARGO_BIN_EXE_child");

async fn get(http: &reqwest::Client, url: String) -> Value {
    let response = http.get(url).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_node_that_serves_their_shard() {
    let mut cluster = HttpCluster::start(NODE, 1, 3, LEASE).await;
    let (http, urls) = (cluster.http.clone(), cluster.urls.clone());
    let nodes = &mut cluster.nodes;

    // Calls through every node, to keys served everywhere.
    const KEYS: usize = 48;
    for key in 0..KEYS {
        let (status, body) = post(
            &http,
            &urls[key % 3],
            &format!("counter/k{key}/add"),
            json!({ "n": key + 1 }),
        )
        .await;
        assert_eq!((status, body.trim()), (200, (key + 1).to_string().as_str()));
    }
    for url in &urls {
        for key in 0..KEYS {
            let state = get(&http, format!("{url}/counter/k{key}")).await;
            assert_eq!(
                state,
                json!({ "value": key + 1 }),
                "k{key} read through {url}"
            );
        }
    }
    // Each node lists every node's keys, whole or page by page.
    let mut all: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    all.sort();
    for url in &urls {
        let page = get(&http, format!("{url}/admin/counter?limit=1000")).await;
        let mut keys: Vec<String> = serde_json::from_value(page["keys"].clone()).expect("keys");
        keys.sort();
        assert_eq!(keys, all, "the keys listed by {url}");
    }
    let mut paged = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let after = next
            .as_ref()
            .map_or(String::new(), |k| format!("&after={k}"));
        let page = get(&http, format!("{}/admin/counter?limit=7{after}", urls[2])).await;
        paged.extend(serde_json::from_value::<Vec<String>>(page["keys"].clone()).expect("keys"));
        match page["next"].as_str() {
            Some(k) => next = Some(k.to_string()),
            None => break,
        }
    }
    let mut sorted = paged.clone();
    sorted.sort();
    assert_eq!(sorted, all, "paged through {}: {paged:?}", urls[2]);
    for node in nodes.iter() {
        let served = node.metric(&http, "routed_served_total").await.unwrap_or(0);
        assert!(served > 0, "{} ran no routed call", node.url);
    }

    // An idempotent call, retried through another node, runs once.
    for key in 0..6 {
        let mut answers = Vec::new();
        for url in [&urls[key % 3], &urls[(key + 1) % 3]] {
            let response = http
                .post(format!("{url}/counter/k{key}/add"))
                .header("Idempotency-Key", format!("once-{key}"))
                .json(&json!({ "n": 1000 }))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status().as_u16(), 200);
            let replayed = response.headers().contains_key("idempotency-replayed");
            answers.push((response.text().await.expect("body"), replayed));
        }
        let first = (key + 1 + 1000).to_string();
        assert_eq!(answers, vec![(first.clone(), false), (first, true)]);
    }

    // Calls between actors cross nodes; a cycle across them is refused, not a deadlock.
    let (status, body) = post(
        &http,
        &urls[0],
        "relay/r0/forward",
        json!({ "route": ["r1", "r2", "r3", "r4"] }),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "1"));
    let started = Instant::now();
    let (status, body) = post(
        &http,
        &urls[1],
        "relay/c0/forward",
        json!({ "route": ["c1", "c2", "c3", "c0"] }),
    )
    .await;
    assert!(
        status != 200 && body.contains("cycle"),
        "a cycle across nodes answered {status} {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the cycle was found only after {:?}",
        started.elapsed()
    );

    // Load through two nodes while the third is killed.
    const ACCOUNTS: usize = 16;
    const OPENING: i64 = 1_000;
    for a in 0..ACCOUNTS {
        let (status, _) = post(
            &http,
            &urls[a % 2],
            &format!("bank_account/a{a}/credit"),
            json!({ "amount": OPENING }),
        )
        .await;
        assert_eq!(status, 200);
    }
    let survivors = vec![urls[0].clone(), urls[1].clone()];
    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..4usize {
        let (http, survivors, running) = (http.clone(), survivors.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            // Per counter: adds acknowledged; per account: net amount acknowledged.
            let mut adds = vec![0u64; KEYS];
            let mut net = vec![0i64; ACCOUNTS];
            let mut i = w;
            while running.load(Ordering::Relaxed) {
                let url = &survivors[i % 2];
                if i % 2 == 0 {
                    let key = (i / 2) % KEYS;
                    let (status, body) = post(
                        &http,
                        url,
                        &format!("counter/k{key}/add"),
                        json!({ "n": 1 }),
                    )
                    .await;
                    assert_eq!(status, 200, "add to k{key}: {body}");
                    adds[key] += 1;
                } else {
                    let (from, to) = ((i / 2) % ACCOUNTS, (i / 2 + 1 + w) % ACCOUNTS);
                    let (status, body) = post(
                        &http,
                        url,
                        &format!("transfer/t{w}-{i}/run"),
                        json!({ "from": format!("a{from}"), "to": format!("a{to}"), "amount": 1 }),
                    )
                    .await;
                    assert_eq!(status, 200, "transfer t{w}-{i}: {body}");
                    if from != to {
                        net[from] -= 1;
                        net[to] += 1;
                    }
                }
                i += 4;
            }
            (adds, net)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut killed = nodes.pop().expect("three nodes");
    killed.child.start_kill().expect("SIGKILL");
    let _ = killed.child.wait().await;
    eprintln!("node-2 killed");
    tokio::time::sleep(LEASE + Duration::from_secs(4)).await;
    running.store(false, Ordering::Relaxed);
    let mut adds = [0u64; KEYS];
    let mut net = [0i64; ACCOUNTS];
    for worker in workers {
        let (a, n) = worker.await.expect("worker");
        adds.iter_mut().zip(a).for_each(|(x, y)| *x += y);
        net.iter_mut().zip(n).for_each(|(x, y)| *x += y);
    }
    let acked: u64 = adds.iter().sum();
    eprintln!("{acked} adds and the transfers acknowledged through the survivors");
    assert!(acked > 50, "too little load to tell ({acked} adds)");

    for key in 0..KEYS {
        let state = get(&http, format!("{}/counter/k{key}", survivors[key % 2])).await;
        let once = if key < 6 { 1000 } else { 0 };
        let expected = (key + 1) as u64 + once + adds[key];
        assert_eq!(state["value"], json!(expected), "k{key}");
    }
    let mut total = 0;
    for a in 0..ACCOUNTS {
        let account = get(&http, format!("{}/bank_account/a{a}", survivors[a % 2])).await;
        let balance = account["balance"].as_i64().expect("balance");
        assert_eq!(balance, OPENING + net[a], "a{a}: {account}");
        total += balance;
    }
    assert_eq!(total, OPENING * ACCOUNTS as i64);

    cluster.stop().await;
}
