//! The crash loop: the demo binary runs the order workload on one store and is killed with
//! SIGKILL again and again at random moments, some while it recovers right after a start
//! (redelivering the outbox, firing timers that came due), most while orders, holds,
//! commits, notices and expiry timers are in flight. The driver records every order the
//! child acknowledged (printed and flushed before the driver can kill it), and every few
//! cycles, and at the end, opens the store itself, lets pending work finish and audits it:
//! per-SKU conservation exact, nothing negative or oversold, every acknowledged order present
//! with a status at least as far along as acknowledged and never going backwards between
//! audits, holds consistent with orders, sends (commits, notices) and timers (expiries,
//! deadlines) processed exactly once once quiet.
//!
//! `GEARS_CRASH_CYCLES` sets the number of cycles (default 40); `GEARS_CRASH_SEED` the seed.
//! The extended run (RELIABILITY.md):
//! `GEARS_CRASH_CYCLES=1000 cargo test --release -p order-demo --test behaviours
//! crash_loop -- --nocapture` (from `examples/order-demo`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use order_demo::{Status, StoreOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
const DEFAULT_CYCLES: u64 = 40;
/// Orders each child run allocates: more than it acknowledges before it is killed.
const ORDERS_PER_RUN: u64 = 400;
/// Most acknowledgements a child gets before it is killed.
const MAX_ACKS_BEFORE_KILL: usize = 250;
/// An audit every this many cycles (and after the last).
const AUDIT_EVERY: u64 = 10;
/// Longest a child may take to print its first acknowledgement.
const START_BOUND: Duration = Duration::from_secs(60);

/// How one cycle ended.
struct Cycle {
    acked: Vec<(String, Status)>,
    /// Killed before it acknowledged anything: while opening and recovering the store.
    during_recovery: bool,
}

/// Starts the demo on `dir`, kills it with SIGKILL after `kill_after` (from its start) or
/// once it acknowledged `max_acks` orders, and returns what it acknowledged.
async fn run_and_kill(dir: &Path, fresh: bool, kill_after: Duration, max_acks: usize) -> Cycle {
    let mut cmd = Command::new(DEMO);
    cmd.args(["run", "--data"])
        .arg(dir)
        .args([
            "--orders",
            &ORDERS_PER_RUN.to_string(),
            "--skus",
            "12",
            "--customers",
            "40",
            "--concurrency",
            "16",
            "--initial-stock",
            "12",
            "--restock-every",
            "8",
            "--restock-qty",
            "6",
            "--hold-ms",
            "300",
            "--wait-ms",
            "400",
            "--order-idle-ms",
            "200",
            "--print-acks",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if fresh {
        cmd.arg("--fresh");
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn order-demo");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let deadline = tokio::time::Instant::now() + kill_after;
    let mut acked = Vec::new();
    while acked.len() < max_acks {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => break,
            Ok(Ok(Some(line))) => acked.push(parse_ack(&line)),
            Ok(Ok(None)) => panic!(
                "order-demo exited before it was killed ({:?}) after {} acknowledgements",
                child.wait().await,
                acked.len()
            ),
            Ok(Err(e)) => panic!("reading order-demo's stdout: {e}"),
        }
    }
    assert!(
        !acked.is_empty() || started.elapsed() < START_BOUND,
        "order-demo acknowledged nothing in {START_BOUND:?}"
    );
    child.kill().await.expect("SIGKILL order-demo");
    let during_recovery = acked.is_empty();
    // Acknowledgements still in the pipe were printed before the kill: they count.
    while let Ok(Some(line)) = lines.next_line().await {
        acked.push(parse_ack(&line));
    }
    Cycle {
        acked,
        during_recovery,
    }
}

fn parse_ack(line: &str) -> (String, Status) {
    match line.split(' ').collect::<Vec<_>>()[..] {
        ["ack", order, status] => (order.to_string(), status.parse().expect("a status")),
        _ => panic!("unexpected output line {line:?}"),
    }
}

/// How far along a status is: a status may only move to a higher rank (or stay).
fn rank(status: Status) -> u8 {
    match status {
        Status::Backordered => 0,
        Status::Shipping | Status::Cancelled => 1,
    }
}

/// Opens the store, lets pending work finish, audits it against every acknowledgement, and
/// checks that no acknowledged order's status went backwards since the last audit. Returns
/// the number of violations (after printing them).
async fn audit(
    dir: &Path,
    acked: &HashMap<String, Status>,
    seen: &mut HashMap<String, Status>,
    label: &str,
) -> usize {
    let rt = order_demo::open(dir, StoreOptions::default())
        .await
        .expect("open the store after a SIGKILL");
    let drained = order_demo::drain_store(&rt, Duration::from_secs(60))
        .await
        .unwrap();
    let acked_list: Vec<(String, Status)> = acked.iter().map(|(id, s)| (id.clone(), *s)).collect();
    let report = order_demo::audit(&rt, &acked_list).await.unwrap();
    let mut violations = report.violations.clone();
    if !drained.is_complete() {
        violations.push(format!("{label}: pending work did not finish: {drained:?}"));
    }
    if !report.quiescent {
        violations.push(format!("{label}: not quiescent after draining"));
    }
    if report.acked_checked != acked.len() {
        violations.push(format!(
            "{label}: audit checked {} of {} acks",
            report.acked_checked,
            acked.len()
        ));
    }
    let ids: Vec<String> = acked.keys().cloned().collect();
    let statuses = order_demo::read_all(&ids, |id| {
        let h = rt.get::<order_demo::Order>(id);
        async move { h.status().await }
    })
    .await
    .unwrap();
    for (id, now) in ids.into_iter().zip(statuses) {
        let Some(now) = now else {
            continue; // reported by the audit as a missing acknowledged order
        };
        if let Some(before) = seen.get(&id)
            && (rank(now) < rank(*before) || (rank(*before) == 1 && now != *before))
        {
            violations.push(format!("{label}: {id} went from {before} to {now}"));
        }
        seen.insert(id, now);
    }
    let dead_letters = rt.stats().dead_letters;
    if dead_letters > 0 {
        violations.push(format!("{label}: {dead_letters} dead letters"));
    }
    rt.shutdown().await.unwrap();
    eprintln!(
        "{label}: audit {} · {} orders ({} shipping, {} cancelled) · stock {:?} · {} \
         violations",
        if violations.is_empty() {
            "PASSED"
        } else {
            "FAILED"
        },
        report.orders.shipping + report.orders.cancelled + report.orders.backordered,
        report.orders.shipping,
        report.orders.cancelled,
        report.stock,
        report.violation_count + violations.len() - report.violations.len(),
    );
    for v in &violations {
        eprintln!("  violation: {v}");
    }
    report.violation_count + violations.len() - report.violations.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_never_breaks_the_books() {
    let cycles: u64 = std::env::var("GEARS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let seed: u64 = std::env::var("GEARS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked: HashMap<String, Status> = HashMap::new();
    let mut seen = HashMap::new();
    let (mut recovery_kills, mut violations, mut audits) = (0u64, 0usize, 0u64);
    for cycle in 1..=cycles {
        // A quarter of the kills land in the first 150 ms (opening, recovering); the rest
        // after 0.1-1.5 s or 1-250 acknowledgements, mid-saga.
        let (kill_after, max_acks) = if cycle > 1 && rng.random_bool(0.25) {
            (Duration::from_millis(rng.random_range(0..150)), usize::MAX)
        } else {
            (
                Duration::from_millis(rng.random_range(100..1_500)),
                rng.random_range(1..=MAX_ACKS_BEFORE_KILL),
            )
        };
        let run = run_and_kill(dir.path(), cycle == 1, kill_after, max_acks).await;
        recovery_kills += u64::from(run.during_recovery);
        for (id, status) in run.acked {
            if let Some(before) = acked.insert(id.clone(), status) {
                panic!("{id} acknowledged twice: {before} then {status}");
            }
        }
        if cycle % AUDIT_EVERY == 0 || cycle == cycles {
            audits += 1;
            violations += audit(dir.path(), &acked, &mut seen, &format!("cycle {cycle}")).await;
        }
    }
    // The binary's own audit agrees.
    let out = std::process::Command::new(DEMO)
        .args(["audit", "--data"])
        .arg(dir.path())
        .output()
        .expect("run order-demo audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("audit:   PASSED") {
        violations += 1;
        eprintln!("order-demo audit failed: {}\n{stdout}", out.status);
    }
    eprintln!(
        "crash loop: {cycles} cycles (seed {seed}), {recovery_kills} kills during recovery, \
         {} acknowledged orders, {audits} audits, {violations} violations, {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(violations, 0, "the crash loop found violations (above)");
    assert!(
        acked.len() as u64 >= cycles,
        "too few acknowledged orders to mean anything"
    );
}
