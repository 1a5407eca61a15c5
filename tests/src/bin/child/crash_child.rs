//! Child process of `tests/acknowledged_writes_survive_sigkill.rs`: hammers counters on a
//! store until it is killed, printing every acknowledged value.
//!
//! Usage: `child crash_child <data_dir> <keys> [sync|buffered]` (the durability, default `sync`).
//! Prints `ack <key> <value>` (one line, flushed) after each `add(1)` on
//! `Counter("k<i % keys>")` has returned; runs until killed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gears::Durability;
use gears_tests::Counter;

use crate::{BoxError, first_end};

/// Concurrent callers, so commits are grouped as they are in production.
const TASKS: usize = 32;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child crash_child <data_dir> <keys> [sync|buffered]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    if keys == 0 {
        return Err(usage.into());
    }
    let durability = match args.next().as_deref() {
        None | Some("sync") => Durability::Sync,
        Some("buffered") => Durability::Buffered,
        Some(_) => return Err(usage.into()),
    };
    let rt = gears_tests::builder(&dir)
        .durability(durability)
        .open()
        .await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        tasks.spawn(hammer(rt.clone(), next.clone(), keys));
    }
    // The tasks only end on an error (a failed call, or the reader gone): report it.
    first_end(tasks).await
}

/// Adds 1 to the counter of the next key, prints the acknowledged value, repeats; returns
/// only on an error.
async fn hammer(rt: gears::Runtime, next: Arc<AtomicU64>, keys: u64) -> Result<(), BoxError> {
    loop {
        let key = format!("k{}", next.fetch_add(1, Ordering::Relaxed) % keys);
        let value = rt.get::<Counter>(&key).add(1).await?;
        // One locked write + flush per line, so lines never interleave and the ack is in the
        // pipe before this task makes its next call.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {key} {value}")?;
        out.flush()?;
    }
}
