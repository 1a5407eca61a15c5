//! A send survives a SIGKILL between the sender's commit and its delivery, and one killed
//! mid-delivery is neither lost nor processed twice: after restarting, every receiver's
//! total equals exactly what its sender committed (sender and outbox entry commit together).

use std::path::Path;
use std::time::Duration;

use gears_tests::child::run_until_sigkill;
use gears_tests::{Receiver, Sender, open, settle};

/// Sender/receiver pairs (`PAIRS` in `src/bin/child/send_child.rs`).
const PAIRS: u64 = 4;
/// Give up waiting for acknowledgements after this (then check what was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(120);

/// Reopens the store, lets the outbox drain, and checks that every receiver processed
/// exactly what its sender committed. Returns the total processed.
async fn check_exactly_once(dir: &Path, acked: usize) -> u64 {
    let rt = open(dir).await;
    settle(&rt).await;
    let mut total = 0;
    for pair in 0..PAIRS {
        let sent = rt.get::<Sender>(format!("s{pair}")).sent().await.unwrap();
        let (received, messages) = rt
            .get::<Receiver>(format!("r{pair}"))
            .totals()
            .await
            .unwrap();
        assert_eq!(
            (received, messages),
            (sent, sent),
            "pair {pair}: the sender committed {sent} sends"
        );
        total += received;
    }
    assert!(
        total >= acked as u64,
        "{acked} sends were acknowledged, {total} processed"
    );
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
    total
}

async fn run_child(dir: &Path, mode: &str, acks: usize) -> usize {
    let lines = run_until_sigkill(
        env!("CARGO_BIN_EXE_child"),
        ["send_child".as_ref(), dir.as_os_str(), mode.as_ref()],
        acks,
        READ_BOUND,
    )
    .await;
    assert!(lines.iter().all(|l| l.starts_with("ack ")), "{lines:?}");
    lines.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_committed_but_not_delivered_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child(dir.path(), "hold", 500).await;
    assert!(acked > 0, "the child acknowledged nothing");
    check_exactly_once(dir.path(), acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_killed_mid_delivery_are_processed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 0;
    let mut processed = 0;
    for kill_after in [300, 1100, 700] {
        acked += run_child(dir.path(), "deliver", kill_after).await;
        let total = check_exactly_once(dir.path(), acked).await;
        assert!(total >= processed);
        processed = total;
    }
}
