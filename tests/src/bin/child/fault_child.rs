//! Child process of `tests/faults_at_each_commit_step_never_acknowledge_lost_writes.rs`:
//! fails one commit at a chosen step, reads the reset actor back, prints what it read, and
//! aborts (a crash: nothing is flushed or synced on the way out).
//!
//! Usage: `child fault_child <data_dir> <before-write|after-write|sync|after-sync>`. Prints
//! `acked <v>` after `Counter("c").add(10)`, then `failed <error>` for the `add(1)` whose
//! commit fails, then `read <v>` for a `get` after the reset, each line flushed; then aborts.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gears::__private::CommitStage;
use gears_tests::Counter;

use crate::BoxError;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child fault_child <data_dir> <before-write|after-write|sync|after-sync>";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let stage = match args.next().ok_or(usage)?.as_str() {
        "before-write" => CommitStage::BeforeWrite,
        "after-write" => CommitStage::AfterWrite,
        "sync" => CommitStage::Sync,
        "after-sync" => CommitStage::AfterSync,
        _ => return Err(usage.into()),
    };
    let armed = Arc::new(AtomicBool::new(false));
    let hook = {
        let armed = armed.clone();
        Arc::new(move |at: CommitStage| {
            if at == stage && armed.swap(false, Ordering::AcqRel) {
                Err(format!("injected failure at {at:?}"))
            } else {
                Ok(())
            }
        })
    };
    let rt = gears_tests::builder(&dir).__fault_hook(hook).open().await?;
    let c = rt.get::<Counter>("c");
    let acked = c.add(10).await?;
    say(&format!("acked {acked}"))?;
    armed.store(true, Ordering::Release);
    match c.add(1).await {
        Ok(v) => return Err(format!("the failed commit was acknowledged as {v}").into()),
        Err(e) => say(&format!("failed {e}"))?,
    }
    // A call racing the actor's reset may still fail with the failed write's error.
    let mut read = c.get().await;
    for _ in 0..100 {
        if read.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        read = c.get().await;
    }
    let read = read?;
    say(&format!("read {read}"))?;
    std::process::abort();
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
