//! Chaos on the demo's cluster: three NATS JetStream servers (R3) and three `order-demo
//! serve` nodes (each with its simulated customers and acknowledgement log, snapshotting each
//! shard every 64 log entries). Again and again, a random node is SIGKILLed; the survivors
//! must serve every shard again within the lease time + 5 s; the node restarts, on its store
//! or (one time in four) on an empty one, which takes its shards from their snapshots and log
//! tails. At the end the nodes stop and `order-demo audit` runs as the cluster's only node:
//! every order any node acknowledged is there with its status, every unit of stock is
//! accounted for, no order holds what it does not own.
//!
//! `GEARS_CHAOS_KILLS` sets the number of kills (default 3), `GEARS_CHAOS_SEED` the seed.
//! The extended run (RELIABILITY.md): `GEARS_CHAOS_KILLS=100 cargo test --release -p
//! order-demo --test behaviours cluster_chaos_node_kills_keep_the_books -- --nocapture`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gears_tests::child::Announced;
use gears_tests::nats::NatsCluster;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::common;

use common::{LEASE, audit_passes, start_node, stop};

const NODES: usize = 3;
const SNAPSHOT_AFTER: u64 = 64;
const SHARDS: u64 = 256;

/// A running node: its id, its process, its data dir.
struct Node {
    id: String,
    process: Announced,
    dir: PathBuf,
}

/// The value of `gears_<name>` on a node's `/metrics` (0 when it does not answer).
async fn metric(http: &reqwest::Client, node: &Node, name: &str) -> u64 {
    let url = format!("{}metrics", node.process.rest);
    let Ok(response) = http.get(url).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    let prefix = format!("gears_{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

async fn total(http: &reqwest::Client, nodes: &[Node], name: &str) -> u64 {
    let mut sum = 0;
    for node in nodes {
        sum += metric(http, node, name).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kills_keep_the_books() {
    let kills: usize = std::env::var("GEARS_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("GEARS_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("chaos: {kills} kills, GEARS_CHAOS_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("start nats");
    let root = tempfile::tempdir().expect("dir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Every data dir a node ran on: each holds an acknowledgement log.
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let (id, dir) = (format!("node-{i}"), root.path().join(format!("node-{i}-0")));
        let process = start_node(&nats, &dir, &id, Some(SNAPSHOT_AFTER)).await;
        dirs.push(dir.clone());
        nodes.push(Node { id, process, dir });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = Instant::now();
    let mut reowned = Vec::new();
    let mut fresh = 0;
    let mut snapshots_written = 0;
    let mut snapshots_loaded = 0;
    for kill in 1..=kills {
        let victim = nodes.remove(rng.random_range(0..nodes.len()));
        snapshots_written += metric(&http, &victim, "snapshots_written_total").await;
        snapshots_loaded += metric(&http, &victim, "snapshots_loaded_total").await;
        let Node {
            id,
            mut process,
            dir,
        } = victim;
        process.child.start_kill().expect("SIGKILL");
        let _ = process.child.wait().await;
        let killed = Instant::now();
        // The survivors serve every shard again.
        loop {
            if total(&http, &nodes, "shards_served").await == SHARDS {
                break;
            }
            if killed.elapsed() > LEASE + Duration::from_secs(5) {
                let mut served = Vec::new();
                for node in &nodes {
                    served.push((&node.id, metric(&http, node, "shards_served").await));
                }
                panic!(
                    "kill {kill} ({id}): {:?} after it, the survivors serve {served:?} shards",
                    killed.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reowned.push(killed.elapsed());
        // Back on its store, or on an empty one (a replaced machine).
        let dir = if rng.random_bool(0.25) {
            fresh += 1;
            let dir = root.path().join(format!("{id}-{kill}"));
            dirs.push(dir.clone());
            dir
        } else {
            dir
        };
        let process = start_node(&nats, &dir, &id, Some(SNAPSHOT_AFTER)).await;
        nodes.push(Node { id, process, dir });
        let pause = Duration::from_millis(rng.random_range(500..3_000));
        tokio::time::sleep(pause).await;
        eprintln!(
            "kill {kill}/{kills}: {:?} to re-serve every shard, {:?} in",
            reowned.last().copied().unwrap_or_default(),
            started.elapsed()
        );
    }
    snapshots_written += total(&http, &nodes, "snapshots_written_total").await;
    snapshots_loaded += total(&http, &nodes, "snapshots_loaded_total").await;
    for node in nodes {
        stop(node.process, &node.id).await;
    }

    let (_, acknowledged) = audit_passes(&nats, &root.path().join("auditor"), &dirs, 100).await;
    reowned.sort();
    let percentile = |p: usize| reowned[(reowned.len() - 1) * p / 100];
    eprintln!(
        "chaos: {kills} node kills ({fresh} restarts on an empty store) in {:?}; audit PASSED \
         with {acknowledged} acknowledged orders; every shard served again after a kill in \
         p50 {:?}, p90 {:?}, max {:?} (lease {LEASE:?}); snapshots written {snapshots_written}, \
         loaded {snapshots_loaded}",
        started.elapsed(),
        percentile(50),
        percentile(90),
        percentile(100),
    );
}
