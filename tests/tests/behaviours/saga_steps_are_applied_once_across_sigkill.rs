//! A saga's steps, made as calls from the turn that delivers a send, are applied exactly
//! once across SIGKILLs at any moment (also after the callee committed and before the
//! calling turn did), with no bookkeeping in the actors: after every restart, once the
//! outbox drained, the debits and credits the accounts applied equal the transfers done,
//! and money is conserved.

use std::path::Path;
use std::time::Duration;

use gears::Runtime;
use gears_tests::bank::{Account, Transfer};
use gears_tests::child::run_until_sigkill;
use gears_tests::{open, settle};

/// Accounts (`ACCOUNTS` in `src/bin/child/saga_child.rs`).
const ACCOUNTS: u64 = 4;
/// Each account's opening balance: no transfer can fail for want of funds.
const OPENING: i64 = 1_000_000;
/// Give up waiting for acknowledgements after this (then check what was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(120);

/// The transfers stored (a transfer is stored by the turn that completes it), after checking
/// that those of run `run` are done with both answers.
async fn transfers_done(rt: &Runtime, run: usize) -> usize {
    let prefix = format!("r{run}-");
    let mut stored = 0;
    let mut after: Option<String> = None;
    loop {
        let page = rt.keys::<Transfer>(after.as_deref(), 1000).await.unwrap();
        let Some(last) = page.last().cloned() else {
            return stored;
        };
        stored += page.len();
        for key in page.iter().filter(|k| k.starts_with(&prefix)) {
            let (finished, answers) = rt.get::<Transfer>(key).outcome().await.unwrap();
            assert!(
                finished && answers.len() == 2,
                "Transfer({key}) is stored but not done"
            );
        }
        after = Some(last);
    }
}

/// Reopens the store, lets the outbox drain, and checks the books. Returns the transfers
/// done.
async fn check_books(dir: &Path, run: usize, acked: usize) -> usize {
    let rt = open(dir).await;
    settle(&rt).await;
    let (mut balance, mut debits, mut credits) = (0, 0, 0);
    for i in 0..ACCOUNTS {
        let account = rt.get::<Account>(format!("a{i}")).show().await.unwrap();
        balance += account.balance;
        debits += account.debits;
        credits += account.credits;
    }
    let done = transfers_done(&rt, run).await;
    // The opening credits are one per account.
    let credits = credits - ACCOUNTS;
    assert_eq!(
        (debits, credits),
        (done as u64, done as u64),
        "{done} transfers are done: each debit and credit must be applied once"
    );
    assert_eq!(balance, OPENING * ACCOUNTS as i64, "money is conserved");
    assert!(done >= acked, "{acked} transfers acknowledged, {done} done");
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_steps_are_applied_once_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    for i in 0..ACCOUNTS {
        rt.get::<Account>(format!("a{i}"))
            .credit(OPENING)
            .await
            .unwrap();
    }
    rt.shutdown().await.unwrap();
    // `GEARS_SAGA_CYCLES` lengthens the run (RELIABILITY.md reports one of 100).
    let cycles: usize = std::env::var("GEARS_SAGA_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(6);
    let kills = [150, 600, 350, 900, 250, 500, 50, 1200, 10];
    let mut acked = 0;
    for (run, kill_after) in kills.into_iter().cycle().take(cycles).enumerate() {
        let lines = run_until_sigkill(
            env!("CARGO_BIN_EXE_child"),
            [
                "saga_child".as_ref(),
                dir.path().as_os_str(),
                run.to_string().as_ref(),
            ],
            kill_after,
            READ_BOUND,
        )
        .await;
        assert!(lines.iter().all(|l| l == "ack"), "{lines:?}");
        acked += lines.len();
        check_books(dir.path(), run, acked).await;
    }
}
