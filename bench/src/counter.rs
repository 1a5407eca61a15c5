//! The small actor most workloads call: a durable counter.

use gears::prelude::*;

/// A counter; its state is one integer (8 bytes in memory, a few bytes on disk).
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "counter")]
pub(crate) struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    /// Adds `n` and returns the new value (a durable write).
    pub(crate) async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }

    /// Adds `n` and returns the new value, or panics (after adding: the turn is rolled back)
    /// if `panic` is set.
    pub(crate) async fn add_then_panic(&mut self, n: u64, panic: bool) -> u64 {
        self.value += n;
        if panic {
            std::panic::panic_any(INJECTED_PANIC);
        }
        self.value
    }

    /// The current value (read-only: never written back).
    pub(crate) async fn get(&self) -> u64 {
        self.value
    }
}

/// The payload of the panics [`Counter::add_then_panic`] injects.
pub(crate) const INJECTED_PANIC: &str = "gears-bench: injected panic";

/// The key of counter number `i`.
pub(crate) fn key(i: u64) -> String {
    format!("k{i}")
}

/// Opens a runtime with [`Counter`] registered in `dir`.
pub(crate) async fn open(
    dir: &std::path::Path,
    durability: Durability,
) -> Result<Runtime, gears::Error> {
    Runtime::builder()
        .path(dir)
        .durability(durability)
        .register::<Counter>()
        .open()
        .await
}

/// Calls counters `0..n` once each from 64 tasks: `add(1)` if `write`, else `get()` (which
/// activates the counter without writing anything).
pub(crate) async fn call_all(rt: &Runtime, n: u64, write: bool) -> crate::BenchResult<()> {
    const TASKS: u64 = 64;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS.min(n) {
        let rt = rt.clone();
        tasks.spawn(async move {
            let mut k = t;
            while k < n {
                let handle = rt.get::<Counter>(key(k));
                if write {
                    handle.add(1).await?;
                } else {
                    handle.get().await?;
                }
                k += TASKS;
            }
            crate::BenchResult::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| format!("a caller task failed: {e}"))??;
    }
    Ok(())
}
