//! Child process of `tests/saga_steps_are_applied_once_across_sigkill.rs`: sends transfers of
//! 1 between the accounts `a0`..`a3` until the process is killed, printing every send that
//! is durable (`ack`). Each transfer is a saga of two calls (debit, credit) made from the
//! turn that delivers the send.
//!
//! Usage: `child saga_child <data_dir> <run>`: transfers are named `r<run>-<n>`, new in each run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gears_tests::bank::Transfer;

use crate::{BoxError, first_end};

/// Accounts the transfers go round.
pub(crate) const ACCOUNTS: u64 = 4;
/// Concurrent senders.
const TASKS: usize = 8;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child saga_child <data_dir> <run>";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let run: u64 = args.next().ok_or(usage)?.parse()?;
    let rt = gears_tests::builder(&dir).open().await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        tasks.spawn(send(rt.clone(), run, next.clone()));
    }
    first_end(tasks).await
}

/// Sends transfers, printing each acknowledgement; returns only on an error.
async fn send(rt: gears::Runtime, run: u64, next: Arc<AtomicU64>) -> Result<(), BoxError> {
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let from = format!("a{}", n % ACCOUNTS);
        let to = format!("a{}", (n + 1) % ACCOUNTS);
        rt.send::<Transfer>(format!("r{run}-{n}"))
            .run(from, to, 1)
            .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack")?;
        out.flush()?;
    }
}
