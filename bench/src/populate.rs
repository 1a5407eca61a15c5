//! Filling a store with many stored counters, through Gears itself (the record format is
//! Gears' own business), as fast as group commit allows.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::BenchResult;
use crate::counter::{self, Counter};

/// Concurrent writers: enough to fill every commit batch.
const WRITERS: u64 = 256;

/// Writes counters `0..n` (each to a non-default value) into the store at `dir`, with
/// `Buffered` durability (shutdown syncs everything), showing progress on stderr.
pub(crate) async fn counters(dir: &Path, n: u64, label: &str) -> BenchResult<()> {
    let started = Instant::now();
    let rt = counter::open(dir, gears::Durability::Buffered).await?;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS.min(n) {
        let (rt, done) = (rt.clone(), done.clone());
        tasks.spawn(async move {
            let mut k = w;
            while k < n {
                rt.get::<Counter>(counter::key(k)).add(k + 1).await?;
                k += WRITERS;
                done.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        });
    }
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => joined.map_err(|e| format!("a writer task failed: {e}"))??,
                None => break,
            },
            _ = ticker.tick() => eprintln!(
                "[{label}] stored {} of {n} actors",
                done.load(Ordering::Relaxed)
            ),
        }
    }
    // Passivate nothing explicitly: shutdown drops every activation with the runtime.
    rt.shutdown().await?;
    eprintln!(
        "[{label}] stored {n} actors in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
