//! The physical limit: fjall used directly, the way Gears uses it (one `state` keyspace,
//! manual journal persistence), without actors, queues or encoding.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use crate::BenchResult;
use crate::measure::{Latencies, Sample, Window, drive_threads, time};
use crate::rng::Rng;

/// A fjall database with the keyspace Gears keeps actor records in.
pub(crate) struct RawStore {
    db: Database,
    state: Keyspace,
    persist: PersistMode,
}

/// A key shaped and sized like a Gears counter record's key (`shard · len · type · key`).
pub(crate) fn record_key(i: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&((i % 256) as u16).to_be_bytes());
    key.push(7);
    key.extend_from_slice(b"counter");
    key.extend_from_slice(crate::counter::key(i).as_bytes());
    key
}

/// A value sized like a Gears counter record (format byte, schema, postcard varint).
fn record_value(i: u64) -> [u8; 4] {
    [1, 1, (i & 0x7f) as u8, 0]
}

impl RawStore {
    /// Opens (or creates) a database at `path`; every batch is persisted with `persist`.
    pub(crate) fn open(path: &Path, persist: PersistMode) -> BenchResult<Self> {
        let db = Database::builder(path)
            .manual_journal_persist(true)
            .open()?;
        let state = db.keyspace("state", KeyspaceCreateOptions::default)?;
        Ok(RawStore { db, state, persist })
    }

    /// Writes the records of `keys` in one atomic batch with one journal persist.
    fn write_batch(&self, keys: impl Iterator<Item = u64>) -> BenchResult<()> {
        let mut batch = OwnedWriteBatch::with_capacity(self.db.clone(), keys.size_hint().0)
            .durability(Some(self.persist));
        for i in keys {
            batch.insert(&self.state, record_key(i), record_value(i).to_vec());
        }
        Ok(batch.commit()?)
    }

    /// One thread writing batches of `batch` distinct keys picked at random out of `keys`
    /// (as Gears' callers pick them), one persist per batch: the most the store does at
    /// that batch size. A write's latency is its batch's.
    pub(crate) fn batched_writes(
        &self,
        batch: usize,
        keys: u64,
        window: Window,
    ) -> BenchResult<Sample> {
        // Enough keys that a batch never repeats one.
        let keys = keys.max(batch as u64);
        drive_threads(1, window, |_, i| {
            let mut rng = Rng::new(i);
            let mut picked = HashSet::with_capacity(batch);
            while picked.len() < batch.max(1) {
                picked.insert(rng.below(keys));
            }
            self.write_batch(picked.iter().copied())?;
            Ok(picked.len() as u64)
        })
    }

    /// One thread writing one key per batch, one persist each: what naive persistence
    /// gives. (fjall syncs under its journal lock, so more threads would queue on the same
    /// syncs.)
    pub(crate) fn sync_per_write(&self, keys: u64, window: Window) -> BenchResult<Sample> {
        drive_threads(1, window, |_, i| {
            self.write_batch(std::iter::once(Rng::new(i).below(keys.max(1))))?;
            Ok(1)
        })
    }

    /// Reads one record.
    pub(crate) fn get(&self, key: &[u8]) -> BenchResult<Option<fjall::UserValue>> {
        Ok(self.state.get(key)?)
    }

    /// Every key of the `state` keyspace (not timed: to pick keys to read).
    pub(crate) fn keys(&self) -> BenchResult<Vec<Vec<u8>>> {
        self.state
            .iter()
            .map(|guard| Ok(guard.key()?.to_vec()))
            .collect()
    }
}

/// How long opening an existing database and its `state` keyspace takes (closing it is not
/// timed: fjall joins its workers on drop).
pub(crate) fn reopen_time(path: &Path) -> BenchResult<Duration> {
    let (store, elapsed) = time(|| RawStore::open(path, PersistMode::SyncAll));
    drop(store?);
    Ok(elapsed)
}

/// Point reads of `keys`, one after the other, each timed.
pub(crate) fn point_reads(store: &RawStore, keys: &[Vec<u8>]) -> BenchResult<Sample> {
    let mut latencies = Latencies::new();
    let cpu_from = crate::process::cpu_time();
    let started = std::time::Instant::now();
    for key in keys {
        let (found, elapsed) = time(|| store.get(key));
        if found?.is_none() {
            return Err(format!("stored key {key:?} not found").into());
        }
        latencies.record(elapsed);
    }
    Ok(Sample {
        ops: latencies.count(),
        latencies,
        elapsed: started.elapsed(),
        cpu: crate::process::cpu_time().saturating_sub(cpu_from),
    })
}

/// Picks `n` of `keys` at random (distinct when there are enough).
pub(crate) fn pick(keys: &[Vec<u8>], n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    rng.sample_distinct(keys.len() as u64, n)
        .into_iter()
        .map(|i| keys[i as usize].clone())
        .collect()
}
