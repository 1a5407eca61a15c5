//! The demo binary killed with SIGKILL in the middle of a run loses nothing it acknowledged
//! and leaves nothing it cannot finish: after a restart the outbox drains, holds of orders
//! whose placing died with the process expire and come back, backordered orders ship or are
//! cancelled, and the audit passes (in-process, and as `order-demo audit`). A second run on
//! the same store, killed too, adds to it and the audit still passes.

use std::path::Path;
use std::time::Duration;

use gears_tests::child::run_until_sigkill;
use order_demo::{Status, StoreOptions};

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
/// Orders per child run: far more than it places before it is killed.
const ORDERS: &str = "5000";
/// Give up waiting for acknowledgements after this (then check what was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(60);

/// Runs the demo on `dir` until it acknowledged `acks` orders, kills it, and returns the
/// acknowledged orders with their status.
async fn run_and_kill(dir: &Path, fresh: bool, acks: usize) -> Vec<(String, Status)> {
    let mut args = vec![
        "run",
        "--data",
        dir.to_str().expect("UTF-8 temp dir"),
        "--orders",
        ORDERS,
        "--skus",
        "16",
        "--customers",
        "50",
        "--concurrency",
        "16",
        "--initial-stock",
        "15",
        "--restock-every",
        "10",
        "--restock-qty",
        "10",
        "--hold-ms",
        "1000",
        "--wait-ms",
        "500",
        "--print-acks",
    ];
    if fresh {
        args.push("--fresh");
    }
    let lines = run_until_sigkill(DEMO, args, acks, READ_BOUND).await;
    lines
        .iter()
        .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            ["ack", order, status] => (order.to_string(), status.parse().expect("a status")),
            _ => panic!("unexpected output line {l:?}"),
        })
        .collect()
}

/// Restarts on `dir`, lets pending work finish, and audits against `acked`.
async fn restart_and_audit(dir: &Path, acked: &[(String, Status)]) {
    let rt = order_demo::open(dir, StoreOptions::default())
        .await
        .unwrap();
    let drained = order_demo::drain_store(&rt, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        drained.is_complete(),
        "pending work did not finish: {drained:?}"
    );
    let audit = order_demo::audit(&rt, acked).await.unwrap();
    assert!(audit.passed(), "{audit}");
    assert!(audit.quiescent, "{audit}");
    assert_eq!(audit.acked_checked, acked.len());
    assert!(audit.orders.shipping > 0, "{audit}");
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_runs_recover_and_pass_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for (fresh, kill_after) in [(true, 300), (false, 500)] {
        let got = run_and_kill(dir.path(), fresh, kill_after).await;
        assert!(
            got.len() >= kill_after,
            "only {} acknowledgements",
            got.len()
        );
        acked.extend(got);
        restart_and_audit(dir.path(), &acked).await;
    }

    // The binary's own audit agrees (and exits 0).
    let out = std::process::Command::new(DEMO)
        .args(["audit", "--data"])
        .arg(dir.path())
        .output()
        .expect("run order-demo audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", out.status);
    assert!(stdout.contains("audit:   PASSED"), "{stdout}");
    // It checked the acknowledgements the killed runs recorded in the store's log: at least
    // those they printed (a line is logged before it is printed).
    let checked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("acks:    "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count of checked acknowledgements: {stdout}"));
    assert!(checked >= acked.len(), "{checked} < {}", acked.len());
}
