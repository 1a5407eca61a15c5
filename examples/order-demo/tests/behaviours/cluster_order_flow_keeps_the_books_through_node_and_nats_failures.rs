//! The order demo on a cluster: three NATS JetStream servers (R3) and `order-demo serve`
//! nodes (child processes, each with its simulated customers and its acknowledgement log)
//! under order load while, one after another:
//! - a node is SIGKILLed, and restarted on its store once its shards moved;
//! - the JetStream leader of the replicated log is SIGKILLed, and restarted;
//! - a fourth node joins, and the first leaves (SIGTERM: it hands its shards over).
//!
//! Then the nodes stop, and `order-demo audit` runs as the cluster's only node (every shard
//! replayed from the log): every order any node acknowledged is there with its status, every
//! unit of stock is accounted for (available + reserved + shipped = initial + restocked), no
//! order holds what it does not own.

use std::path::PathBuf;
use std::time::Duration;

use gears_tests::nats::NatsCluster;

use crate::common;

use common::{LEASE, audit_passes, stop};

async fn start_node(
    nats: &NatsCluster,
    dir: &std::path::Path,
    node: &str,
) -> gears_tests::child::Announced {
    common::start_node(nats, dir, node, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_flow_keeps_the_books_through_node_and_nats_failures() {
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("start nats");
    let root = tempfile::tempdir().expect("dir");
    let dir = |name: &str| -> PathBuf { root.path().join(name) };

    let node1 = start_node(&nats, &dir("node-1"), "node-1").await;
    let node2 = start_node(&nats, &dir("node-2"), "node-2").await;
    let node3 = start_node(&nats, &dir("node-3"), "node-3").await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // A node dies under load; its shards move; it comes back on its store.
    let mut node2 = node2;
    node2.child.start_kill().expect("SIGKILL node-2");
    let _ = node2.child.wait().await;
    eprintln!("node-2 killed");
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    let node2 = start_node(&nats, &dir("node-2"), "node-2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The log's JetStream leader dies, and comes back.
    let leader = tokio::task::spawn_blocking(move || {
        let leader = nats.wait_stream_leader("GEARS_order_demo_LOG", Duration::from_secs(30));
        nats.kill(leader);
        eprintln!("the log's leader, NATS server {leader}, killed");
        std::thread::sleep(Duration::from_secs(4));
        nats.restart(leader);
        eprintln!("NATS server {leader} restarted");
        nats
    });
    let nats = leader.await.expect("kill and restart the leader");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A node joins and another leaves, under load.
    let node4 = start_node(&nats, &dir("node-4"), "node-4").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(node1, "node-1").await;
    eprintln!("node-1 left");
    tokio::time::sleep(Duration::from_secs(3)).await;

    for (node, name) in [(node2, "node-2"), (node3, "node-3"), (node4, "node-4")] {
        stop(node, name).await;
    }

    // The audit, as the only node: every shard is replayed from the log into its store.
    let nodes = ["node-1", "node-2", "node-3", "node-4"].map(dir);
    audit_passes(&nats, &dir("auditor"), &nodes, 500).await;
}
