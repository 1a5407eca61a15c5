//! The demo binary killed with SIGKILL in the middle of a run loses nothing it acknowledged
//! and leaves nothing it cannot finish: after a restart the outbox drains, holds of orders
//! whose placing died with the process expire and come back, backordered orders ship or are
//! cancelled, and the audit passes (in-process, and as `order-demo audit`). A second run on
//! the same store, killed too, adds to it and the audit still passes.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use order_demo::{CATALOG, Catalog, Status, StoreOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
/// Orders per child run: far more than it places before it is killed.
const ORDERS: &str = "5000";
/// Give up waiting for acknowledgements after this (then check what was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(60);

/// Runs `program args…` until it has printed `lines` complete lines (or `bound` passed),
/// SIGKILLs it, and returns every complete line it printed before dying (those still in
/// the pipe included; a last line cut by the kill is dropped). Panics if the child exits on
/// its own.
async fn run_until_sigkill<I, S>(
    program: &str,
    args: I,
    lines: usize,
    bound: Duration,
) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut seen = Vec::new();
    let mut line = Vec::new();
    let deadline = tokio::time::Instant::now() + bound;
    while seen.len() < lines {
        match tokio::time::timeout_at(deadline, stdout.read_until(b'\n', &mut line)).await {
            Err(_) => break,
            Ok(Ok(0)) => panic!(
                "{program} exited before it was killed ({:?}) after {} lines",
                child.wait().await,
                seen.len()
            ),
            Ok(Ok(_)) if line.ends_with(b"\n") => {
                seen.push(text(&line));
                line.clear();
            }
            Ok(Ok(_)) => panic!("{program} closed its stdout mid-line: {line:?}"),
            Ok(Err(e)) => panic!("reading {program}'s stdout: {e}"),
        }
    }
    child.kill().await.expect("SIGKILL the child");
    stdout
        .read_to_end(&mut line)
        .await
        .expect("drain the child's stdout");
    for complete in line.split_inclusive(|b| *b == b'\n') {
        if complete.ends_with(b"\n") {
            seen.push(text(complete));
        }
    }
    seen
}

fn text(line: &[u8]) -> String {
    std::str::from_utf8(line)
        .expect("the child prints UTF-8")
        .trim_end_matches('\n')
        .to_string()
}

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
    let contents = rt.get::<Catalog>(CATALOG).contents().await.unwrap();
    let drained = order_demo::drain(
        &rt,
        contents.order_ids(),
        &contents.sku_ids(),
        Duration::from_secs(30),
    )
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
    let out = Command::new(DEMO)
        .args(["audit", "--data"])
        .arg(dir.path())
        .output()
        .await
        .expect("run order-demo audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", out.status);
    assert!(stdout.contains("audit:   PASSED"), "{stdout}");
}
