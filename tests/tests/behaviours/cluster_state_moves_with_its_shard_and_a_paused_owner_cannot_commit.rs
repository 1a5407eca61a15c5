//! Gears nodes (child processes with an HTTP ingress) on a real NATS server replicate every
//! commit through the shard's log, so a shard that moves takes its state along: counters
//! written on one node read the same on the node that takes their shard when a second node
//! joins, when a node is killed (SIGKILL: its keys are served by the survivor within its lease
//! time + 5 s), and when a node is paused (SIGSTOP) past its lease under load and resumed.
//! Every acknowledged add is counted exactly once; an add whose outcome was unknown to its
//! caller is counted at most once; whichever node a call is made on, it is answered by the
//! node that holds the key's shard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gears_tests::http_nodes::{HttpNode, nats_stores_and_client};

const LEASE: Duration = Duration::from_secs(3);
const KEYS: usize = 32;

const NODE: &str = env!("CARGO_BIN_EXE_child");

/// What a call came to.
enum Outcome {
    /// Answered by the node holding the shard.
    Done(u64),
    /// Refused before it ran (not this node's shard, or nobody's right now).
    Refused,
    /// It may or may not have been applied (a timeout, a lost connection, a server error).
    Unknown,
}

async fn call(http: &reqwest::Client, node: &str, key: usize, handler: &str, n: u64) -> Outcome {
    let body = if handler == "add" {
        serde_json::json!({ "n": n })
    } else {
        serde_json::json!({})
    };
    let response = http
        .post(format!("{node}/counter/k{key}/{handler}"))
        .json(&body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        // Nothing was sent to a node that is gone.
        Err(e) if e.is_connect() => return Outcome::Refused,
        Err(e) => {
            eprintln!("UNKNOWN send {e}");
            return Outcome::Unknown;
        }
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match status {
        200 => Outcome::Done(
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {text}")),
        ),
        // not_owner, or fenced/unavailable: refused before anything was written.
        421 | 503
            if text.contains("not_owner")
                || text.contains("unavailable")
                || text.contains("fenced") =>
        {
            Outcome::Refused
        }
        _ => {
            eprintln!("UNKNOWN {status} {text}");
            Outcome::Unknown
        }
    }
}

/// Calls `key` on whichever node holds its shard, retrying refusals for up to 30 s.
async fn call_anywhere(
    http: &reqwest::Client,
    nodes: &[String],
    key: usize,
    handler: &str,
    n: u64,
) -> Outcome {
    let started = Instant::now();
    loop {
        for node in nodes {
            match call(http, node, key, handler, n).await {
                Outcome::Refused => continue,
                outcome => return outcome,
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!("no node served k{key} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every counter, each from the node that holds it; retries unknown outcomes.
async fn read_all(http: &reqwest::Client, nodes: &[String]) -> Vec<u64> {
    let mut values = Vec::new();
    for key in 0..KEYS {
        loop {
            match call_anywhere(http, nodes, key, "get", 0).await {
                Outcome::Done(v) => {
                    values.push(v);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    values
}

/// Per key: adds acknowledged, and adds whose outcome is unknown.
#[derive(Default, Clone, Copy, Debug)]
struct Count {
    acked: u64,
    unknown: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_moves_with_its_shard_and_a_paused_owner_cannot_commit() {
    let (nats, dirs, http) = nats_stores_and_client(1, 2).await;
    let counts: Arc<Mutex<HashMap<usize, Count>>> = Arc::default();
    let add = {
        let (http, counts) = (http.clone(), counts.clone());
        move |nodes: Vec<String>, key: usize| {
            let (http, counts) = (http.clone(), counts.clone());
            async move {
                let outcome = call_anywhere(&http, &nodes, key, "add", 1).await;
                let mut counts = counts.lock().unwrap();
                let count = counts.entry(key).or_default();
                match outcome {
                    Outcome::Done(_) => count.acked += 1,
                    _ => count.unknown += 1,
                }
            }
        }
    };

    // One node owns every shard; its writes go through the log.
    let a = HttpNode::start(NODE, &nats, dirs[0].path(), "node-a", LEASE).await;
    for round in 0..2 {
        for key in 0..KEYS {
            add(vec![a.url.clone()], key).await;
        }
        eprintln!("round {round} on one node done");
    }

    // A second node joins: the shards it takes come with their counters.
    let b = HttpNode::start(NODE, &nats, dirs[1].path(), "node-b", LEASE).await;
    let both = vec![a.url.clone(), b.url.clone()];
    let started = Instant::now();
    loop {
        let on_b = b.metric(&http, "shards_served").await.unwrap_or(0);
        if on_b > 0 {
            eprintln!("the joining node serves {on_b} shards");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node b took no shard"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let values = read_all(&http, &both).await;
    assert!(values.iter().all(|&v| v == 2), "after b joined: {values:?}");

    // Load on both while b is paused past its lease, then resumed.
    let running = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (running, nodes, add) = (running.clone(), both.clone(), add.clone());
        writers.push(tokio::spawn(async move {
            let mut key = w;
            while running.load(Ordering::Relaxed) {
                add(nodes.clone(), key % KEYS).await;
                key += 4;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal("-STOP");
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    b.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A killed node's shards move too, with what it acknowledged.
    let mut b = b;
    b.child.start_kill().expect("SIGKILL b");
    let _ = b.child.wait().await;
    let killed = Instant::now();
    read_all(&http, std::slice::from_ref(&a.url)).await;
    let moved = killed.elapsed();
    eprintln!("the killed node's keys were served by the survivor after {moved:?}");
    assert!(
        moved < LEASE + Duration::from_secs(5),
        "the killed node's shards took {moved:?} to move (its lease is {LEASE:?})"
    );
    running.store(false, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }

    let values = read_all(&http, std::slice::from_ref(&a.url)).await;
    let counts = counts.lock().unwrap().clone();
    let mut unknown = 0;
    for (key, value) in values.iter().enumerate() {
        let count = counts.get(&key).copied().unwrap_or_default();
        unknown += count.unknown;
        assert!(
            count.acked <= *value && *value <= count.acked + count.unknown,
            "k{key} reads {value}, but {} adds were acknowledged and {} unknown",
            count.acked,
            count.unknown
        );
    }
    let acked: u64 = counts.values().map(|c| c.acked).sum();
    eprintln!("{acked} adds acknowledged, {unknown} with an unknown outcome; all counted");
    assert!(
        acked > 200,
        "too little load to tell ({acked} acknowledged adds)"
    );

    // A clean shutdown of the last node.
    a.stop().await;
}
