//! Child process of `tests/sends_are_processed_exactly_once_across_sigkill.rs`: senders send
//! to receivers until the process is killed, printing every acknowledged send.
//!
//! Usage: `child send_child <data_dir> hold|deliver`. With `hold`, outbox entries are committed but
//! never delivered (the crash then falls between the sender's commit and the delivery).
//! Prints `ack <pair>` (one line, flushed) after each `Sender("s<pair>").send_to("r<pair>", 1)`
//! has returned; runs until killed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gears_tests::Sender;

use crate::{BoxError, first_end};

/// Sender/receiver pairs.
pub(crate) const PAIRS: u64 = 4;
/// Concurrent callers.
const TASKS: usize = 16;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child send_child <data_dir> hold|deliver";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let builder = match args.next().as_deref() {
        Some("hold") => gears_tests::builder(&dir).__hold_deliveries(),
        Some("deliver") => gears_tests::builder(&dir),
        _ => return Err(usage.into()),
    };
    let rt = builder.open().await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        tasks.spawn(send(rt.clone(), next.clone()));
    }
    first_end(tasks).await
}

/// Sends, prints the acknowledgement, repeats; returns only on an error.
async fn send(rt: gears::Runtime, next: Arc<AtomicU64>) -> Result<(), BoxError> {
    loop {
        let pair = next.fetch_add(1, Ordering::Relaxed) % PAIRS;
        rt.get::<Sender>(format!("s{pair}"))
            .send_to(format!("r{pair}"), 1)
            .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {pair}")?;
        out.flush()?;
    }
}
