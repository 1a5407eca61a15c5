//! What the cluster tests of the order demo share: starting `order-demo serve` nodes on a
//! NATS cluster, stopping them, and auditing the cluster as its only node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gears_tests::child::{Announced, spawn_until_line};
use gears_tests::nats::NatsCluster;

pub(crate) const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
pub(crate) const LEASE_SECS: u64 = 3;
pub(crate) const LEASE: Duration = Duration::from_secs(LEASE_SECS);

/// The flags that make `node` a node of the demo's cluster on `nats` (R3).
pub(crate) fn cluster_args(nats: &NatsCluster, node: &str) -> Vec<String> {
    [
        "--cluster",
        &nats.urls().join(","),
        "--node",
        node,
        "--replicas",
        "3",
        "--lease-secs",
        &LEASE_SECS.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `order-demo serve` as `node` on `dir` with 100 simulated orders/s over 12 SKUs,
/// snapshotting every `snapshot_after` entries (the default when `None`), once it serves.
pub(crate) async fn start_node(
    nats: &NatsCluster,
    dir: &Path,
    node: &str,
    snapshot_after: Option<u64>,
) -> Announced {
    let mut command = tokio::process::Command::new(DEMO);
    command
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--rate",
            "100",
            "--skus",
            "12",
        ])
        .arg("--data")
        .arg(dir)
        .args(cluster_args(nats, node))
        .args(snapshot_after.map(|n| format!("--snapshot-after={n}")))
        // Orders refused while shards move are expected (and not acknowledged): quiet,
        // unless the test runs with RUST_LOG.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
        );
    let started = spawn_until_line(command, "live page: ").await;
    eprintln!("{node} serves {}", started.rest);
    started
}

/// Stops a node with SIGTERM and checks it exits 0.
pub(crate) async fn stop(node: Announced, name: &str) {
    let status = node.terminate(Duration::from_secs(40)).await;
    assert!(
        status.success(),
        "{name} exited with {status} after SIGTERM"
    );
}

/// Runs `order-demo audit` on `dir` as the cluster's only node (every shard replayed from
/// the log) with the acknowledgement logs of the nodes whose data dirs are `nodes`; checks
/// it passes with every acknowledged order (at least `at_least` of them). Returns its
/// report and the number of acknowledged orders.
pub(crate) async fn audit_passes(
    nats: &NatsCluster,
    dir: &Path,
    nodes: &[PathBuf],
    at_least: usize,
) -> (String, usize) {
    let mut audit = tokio::process::Command::new(DEMO);
    audit
        .args(["audit", "--drain-secs", "60"])
        .arg("--data")
        .arg(dir)
        .args(cluster_args(nats, "auditor"));
    let mut acknowledged = 0;
    for node in nodes {
        let log = order_demo::ack_log_path(node);
        acknowledged += std::fs::read_to_string(&log)
            .expect("an acknowledgement log")
            .lines()
            .count();
        audit.arg("--acks").arg(log);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), audit.output())
        .await
        .expect("the audit ends within 3 minutes")
        .expect("run the audit");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the audit failed: {stdout}");
    assert!(
        acknowledged >= at_least,
        "too little load to tell: {acknowledged} acknowledged orders"
    );
    assert!(
        stdout.contains(&format!("{acknowledged} acknowledged orders checked")),
        "the audit did not check the {acknowledged} acknowledgements: {stdout}"
    );
    (stdout, acknowledged)
}
