//! [`Replication`]: the commit pipeline's [`Replicator`] on a cluster node. Each group commit
//! appends, per shard it touched, one entry with that shard's coalesced writes to the shard's
//! subject of the replicated log ([`ShardLog`]), expecting the last sequence this node saw
//! there; the store applies the writes (with the entry's sequence as the shard's applied
//! sequence) only once JetStream acknowledged them, and replies wait for that.
//!
//! Taking a shard ([`Replication::catch_up`]) replays the entries the local store has not
//! applied and appends an `Epoch` entry expecting the last one: from then on an append by
//! any earlier owner fails (10071), so a paused or partitioned ex-owner can never commit.
//! The epoch entry's sequence is the shard's epoch here, so activations loaded before
//! reload.
//!
//! One append is in flight per shard at a time: the committer makes one call at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::codec::SHARDS;
use crate::commit::Replicator;
use crate::error::{Error, Failure, StorageError};
use crate::store::{Space, Store, Write};

use super::log::{AppendError, LogEntry, LogWrite, ShardLog};
use super::placement::ClusterPlacement;

/// The expected sequence of a shard this node does not hold (or must catch up again).
const NOT_HELD: u64 = u64::MAX;

/// Entries applied to the store per batch while catching up.
const REPLAY_CHUNK: usize = 512;

/// A cluster node's replication of its commits.
pub(crate) struct Replication {
    log: ShardLog,
    store: Store,
    placement: Arc<ClusterPlacement>,
    node: Arc<str>,
    incarnation: u64,
    /// Per shard: the last sequence of its subject this node saw, which its next append
    /// expects; [`NOT_HELD`] when it does not hold the shard.
    expected: Box<[AtomicU64]>,
    tokio: tokio::runtime::Handle,
    /// How long an append may retry transient failures (a leader change stalls writes for
    /// seconds) before its outcome counts as unknown.
    patience: Duration,
}

impl Replication {
    pub(crate) fn new(
        log: ShardLog,
        store: Store,
        placement: Arc<ClusterPlacement>,
        node: Arc<str>,
        incarnation: u64,
        patience: Duration,
    ) -> Replication {
        Replication {
            log,
            store,
            placement,
            node,
            incarnation,
            expected: (0..SHARDS).map(|_| AtomicU64::new(NOT_HELD)).collect(),
            tokio: tokio::runtime::Handle::current(),
            patience,
        }
    }

    fn slot(&self, shard: u16) -> &AtomicU64 {
        &self.expected[usize::from(shard) % self.expected.len()]
    }

    /// The id of the append at position `expected` of `shard`: the same for every retry of
    /// it, and never the same for two different entries (an epoch entry has its own).
    fn msg_id(&self, shard: u16, expected: u64, what: &str) -> String {
        format!(
            "{}-{:x}-{shard}-{expected}{what}",
            self.node, self.incarnation
        )
    }

    /// Whether this node lost the right to append to `shard` (fenced, or an append's outcome
    /// is unknown) while it still holds its lease: it must give the shard up and take it
    /// again (catching up) to serve it.
    pub(crate) fn lost(&self, shard: u16) -> bool {
        self.slot(shard).load(Ordering::Acquire) == NOT_HELD
    }

    /// Stops appending to `shard` (it was given up).
    pub(crate) fn forget(&self, shard: u16) {
        self.slot(shard).store(NOT_HELD, Ordering::Release);
    }

    /// Brings the store up to date with `shard`'s log and fences every earlier owner; returns
    /// the epoch to serve the shard under (the sequence of this node's epoch entry).
    pub(crate) async fn catch_up(&self, shard: u16) -> Result<u64, Error> {
        self.forget(shard);
        let store = self.store.clone();
        let mut applied = blocking(move || store.applied(shard)).await?;
        let epoch = LogEntry::Epoch {
            node: self.node.to_string(),
            incarnation: self.incarnation,
        }
        .encode();
        loop {
            let last = self.log.last_seq(shard).await?;
            if last < applied {
                return Err(Error::Cluster(format!(
                    "shard {shard}: the store applied its log up to {applied}, but the log ends \
                     at {last}: the log was lost or this store belongs to another cluster"
                )));
            }
            if applied < last {
                // The tail is held in memory while it is applied (snapshots, to come, bound it).
                let mut entries = Vec::new();
                self.log
                    .replay(shard, applied + 1, last, |seq, entry| {
                        entries.push((seq, entry));
                        Ok(())
                    })
                    .await?;
                let mut entries = entries.into_iter().peekable();
                while entries.peek().is_some() {
                    let chunk: Vec<(u64, LogEntry)> = entries.by_ref().take(REPLAY_CHUNK).collect();
                    let to = if entries.peek().is_some() {
                        chunk.last().map_or(applied, |(seq, _)| *seq)
                    } else {
                        last
                    };
                    let store = self.store.clone();
                    blocking(move || apply(&store, shard, chunk, to)).await?;
                }
                applied = last;
            }
            let deadline = Instant::now() + self.patience;
            let id = self.msg_id(shard, last, "e");
            match self
                .log
                .append(shard, last, &id, epoch.clone().into(), deadline)
                .await
            {
                Ok(seq) => {
                    self.slot(shard).store(seq, Ordering::Release);
                    return Ok(seq);
                }
                // Someone appended meanwhile (an earlier owner's last commit): replay it too.
                Err(AppendError::Fenced { .. }) => continue,
                Err(AppendError::Unknown(e) | AppendError::Failed(e)) => {
                    return Err(Error::Cluster(format!(
                        "shard {shard}: cannot append the epoch entry: {e}"
                    )));
                }
            }
        }
    }

    /// Appends one shard's writes; what the committer's `replicate` does per shard.
    async fn append_writes(&self, shard: u16, payload: Vec<u8>) -> Result<u64, Failure> {
        let slot = self.slot(shard);
        let expected = slot.load(Ordering::Acquire);
        if expected == NOT_HELD {
            return Err(Failure::Fenced(shard));
        }
        let id = self.msg_id(shard, expected, "");
        let deadline = Instant::now() + self.patience;
        match self
            .log
            .append(shard, expected, &id, payload.into(), deadline)
            .await
        {
            Ok(seq) => {
                // Only this (the committer's) call moves it while the shard is held.
                let _ = slot.compare_exchange(expected, seq, Ordering::AcqRel, Ordering::Acquire);
                Ok(seq)
            }
            Err(AppendError::Fenced { last }) => {
                tracing::warn!(
                    shard,
                    ?last,
                    "shard fenced: another node appended to its log"
                );
                self.lose(shard);
                Err(Failure::Fenced(shard))
            }
            Err(AppendError::Unknown(e)) => {
                // It may have landed: this node's view of the shard is unknown until it
                // catches up again.
                tracing::warn!(shard, error = %e, "the replicated log did not confirm an append");
                self.lose(shard);
                Err(Failure::Storage(StorageError::new(format!(
                    "the replicated log did not confirm the write in time: {e}"
                ))))
            }
            Err(AppendError::Failed(e)) => Err(Failure::Storage(StorageError::new(format!(
                "the replicated log refused the write: {e}"
            )))),
        }
    }

    fn lose(&self, shard: u16) {
        self.forget(shard);
        self.placement.revoke(shard);
    }
}

impl Replicator for Replication {
    fn replicate(&self, shards: &[(u16, Vec<Write<'_>>)]) -> Vec<Result<u64, Failure>> {
        let appends = shards.iter().map(|(shard, writes)| {
            let entry = LogEntry::Writes(
                writes
                    .iter()
                    .map(|w| LogWrite {
                        space: w.space,
                        key: w.key.to_vec(),
                        value: w.value.map(<[u8]>::to_vec),
                    })
                    .collect(),
            );
            self.append_writes(*shard, entry.encode())
        });
        self.tokio.block_on(futures::future::join_all(appends))
    }
}

/// Applies replayed entries of `shard` to the store in one batch, with `to` as the shard's
/// applied sequence, and makes it durable.
fn apply(
    store: &Store,
    shard: u16,
    entries: Vec<(u64, LogEntry)>,
    to: u64,
) -> Result<(), StorageError> {
    let applied_key = shard.to_be_bytes();
    let applied_seq = to.to_be_bytes();
    let writes: Vec<&LogWrite> = entries
        .iter()
        .flat_map(|(_, entry)| match entry {
            LogEntry::Writes(writes) => writes.as_slice(),
            LogEntry::Epoch { .. } => &[],
        })
        .collect();
    // fjall panics on an empty key or one over 64 KiB, and a panic poisons every write: a
    // damaged entry is refused instead.
    if writes
        .iter()
        .any(|w| w.key.is_empty() || w.key.len() > 65_535)
    {
        return Err(StorageError::new(format!(
            "shard {shard}: a replayed entry holds an invalid key; refusing to apply it"
        )));
    }
    let count = writes.len() + 1;
    let mut all = writes
        .into_iter()
        .map(|w| Write {
            space: w.space,
            key: &w.key,
            value: w.value.as_deref(),
        })
        .chain(std::iter::once(Write {
            space: Space::Applied,
            key: &applied_key,
            value: Some(&applied_seq),
        }));
    store.write_batch(&mut all, count)?;
    store.sync_batch()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Cluster(format!("a store task failed: {e}")))?
        .map_err(Error::Storage)
}
