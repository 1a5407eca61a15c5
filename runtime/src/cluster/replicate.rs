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
//!
//! Every [`ClusterConfig::snapshot_after`] entries of a shard it serves, a node writes the
//! shard's snapshot and purges the log below it ([`Replication::keep_snapshots`], format and
//! reasoning in `snapshot.rs`); a catch-up whose missing entries were purged starts from the
//! snapshot the first remaining entry names.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backlog::Numbers;
use crate::codec::SHARDS;
use crate::commit::Replicator;
use crate::error::{Error, Failure, StorageError};
use crate::metrics::Metrics;
use crate::store::{Space, Store, Write};

use super::ClusterConfig;
use super::log::{AppendError, LogEntry, LogWrite, ShardLog};
use super::placement::ClusterPlacement;
use super::snapshot::Snapshots;

/// What the node's runtime lends its replication.
pub(crate) struct Local {
    /// The store: the log's local view.
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    /// The outbox's sequence numbers: a taken shard's are moved past its outbox mark.
    pub(crate) numbers: Arc<Numbers>,
}

/// The expected sequence of a shard this node does not hold (or must catch up again).
const NOT_HELD: u64 = u64::MAX;

/// Entries applied to the store per batch while catching up.
const REPLAY_CHUNK: usize = 512;

/// A cluster node's replication of its commits.
pub(crate) struct Replication {
    log: ShardLog,
    snapshots: Snapshots,
    store: Store,
    placement: Arc<ClusterPlacement>,
    node: Arc<str>,
    incarnation: u64,
    /// Per shard: the last sequence of its subject this node saw, which its next append
    /// expects; [`NOT_HELD`] when it does not hold the shard.
    expected: Box<[AtomicU64]>,
    /// Per shard: entries on its subject since its latest snapshot, as far as this node
    /// knows (counted from its catch-up on).
    since_snapshot: Box<[AtomicU64]>,
    /// Per shard: the sequence of its latest snapshot this node knows of (0: none).
    snapshot_at: Box<[AtomicU64]>,
    /// Per shard: older snapshots of it may be in the bucket that this node does not know by
    /// name: it took the shard (a node that died between a snapshot and its purge leaves one
    /// the log does not name), or one of its own snapshots failed after its write. Its next
    /// snapshot looks for them ([`Replication::keep_snapshots`]).
    strays: Box<[AtomicBool]>,
    /// Per shard: held by a catch-up from start to end, so two never write one shard's
    /// records at once (one of an acquisition given up, still applying, and a newer one),
    /// and by a snapshot while it reads them.
    catching_up: Box<[tokio::sync::Mutex<()>]>,
    /// Entries a shard gathers before it is snapshotted.
    snapshot_after: u64,
    metrics: Arc<Metrics>,
    /// The outbox's sequence numbers: a taken shard's are moved past its outbox mark.
    numbers: Arc<Numbers>,
    tokio: tokio::runtime::Handle,
    /// How long an append may retry transient failures (a leader change stalls writes for
    /// seconds) before its outcome counts as unknown.
    patience: Duration,
}

/// Why a replay of a shard's tail stopped.
enum Tail {
    /// Entries in the middle of it were purged meanwhile (a snapshot was written): start
    /// again from the snapshot.
    Purged,
    Failed(Error),
}

impl From<Error> for Tail {
    fn from(e: Error) -> Tail {
        Tail::Failed(e)
    }
}

/// A catch-up restarts this many times when the log is purged under it, then fails (the
/// lease is given back and taken again later).
const PURGED_RETRIES: usize = 5;

impl Replication {
    pub(crate) fn new(
        (log, snapshots): (ShardLog, Snapshots),
        local: Local,
        placement: Arc<ClusterPlacement>,
        config: &ClusterConfig,
        incarnation: u64,
    ) -> Replication {
        let Local {
            store,
            metrics,
            numbers,
        } = local;
        let per_shard = |value: u64| (0..SHARDS).map(|_| AtomicU64::new(value)).collect();
        Replication {
            log,
            snapshots,
            store,
            placement,
            node: config.node.clone(),
            incarnation,
            expected: per_shard(NOT_HELD),
            since_snapshot: per_shard(0),
            snapshot_at: per_shard(0),
            strays: (0..SHARDS).map(|_| AtomicBool::new(false)).collect(),
            catching_up: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            snapshot_after: config.snapshot_after,
            metrics,
            numbers,
            tokio: tokio::runtime::Handle::current(),
            patience: config.margin(),
        }
    }

    fn slot(&self, shard: u16) -> &AtomicU64 {
        Self::at(&self.expected, shard)
    }

    /// Held while `shard`'s records in the store are caught up or snapshotted.
    async fn alone(&self, shard: u16) -> tokio::sync::MutexGuard<'_, ()> {
        Self::at(&self.catching_up, shard).lock().await
    }

    /// `shard`'s slot of a per-shard table.
    fn at<T>(slots: &[T], shard: u16) -> &T {
        &slots[usize::from(shard) % slots.len()]
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

    /// Brings the store up to date with `shard`'s log (from its latest snapshot when the
    /// entries the store lacks were purged) and fences every earlier owner; returns the
    /// epoch to serve the shard under (the sequence of this node's epoch entry). Gives up,
    /// between two steps, once `cancelled` is set (the lease was given up meanwhile).
    pub(crate) async fn catch_up(&self, shard: u16, cancelled: &AtomicBool) -> Result<u64, Error> {
        let _alone = self.alone(shard).await;
        self.forget(shard);
        self.metrics.catch_ups.fetch_add(1, Ordering::Relaxed);
        self.stray(shard).store(true, Ordering::Release);
        let given_up = || {
            cancelled
                .load(Ordering::Acquire)
                .then(|| Error::Cluster(format!("shard {shard}: given up while catching up")))
        };
        let store = self.store.clone();
        let mut applied = blocking(move || store.applied(shard)).await?;
        let epoch = LogEntry::Epoch {
            node: self.node.to_string(),
            incarnation: self.incarnation,
        }
        .encode();
        let mut purged = 0;
        loop {
            if let Some(e) = given_up() {
                return Err(e);
            }
            let last = self.log.last_seq(shard).await?;
            if last < applied {
                return Err(Error::Cluster(format!(
                    "shard {shard}: the store applied its log up to {applied}, but the log ends \
                     at {last}: the log was lost or this store belongs to another cluster"
                )));
            }
            if applied == last {
                // Nothing to replay: what the log holds since its last snapshot is counted.
                if let Ok(entries) = self.log.entries(shard).await {
                    Self::at(&self.since_snapshot, shard).store(entries, Ordering::Relaxed);
                }
            } else {
                match self.replay_tail(shard, applied, last, &given_up).await {
                    Ok(()) => applied = last,
                    Err(Tail::Purged) if purged < PURGED_RETRIES => {
                        purged += 1;
                        let store = self.store.clone();
                        applied = blocking(move || store.applied(shard)).await?;
                        continue;
                    }
                    Err(Tail::Purged) => {
                        return Err(Error::Cluster(format!(
                            "shard {shard}: its log was purged under {purged} replays in a row"
                        )));
                    }
                    Err(Tail::Failed(e)) => return Err(e),
                }
            }
            if Self::at(&self.snapshot_at, shard).load(Ordering::Acquire) == 0 {
                // The snapshot that holds what the log lost, if any, is replaced (and
                // deleted) by this node's first snapshot of the shard.
                if let Ok(Some((first, Some(previous)))) = self.log.first(shard).await
                    && previous > 0
                {
                    Self::at(&self.snapshot_at, shard).fetch_max(first, Ordering::AcqRel);
                }
            }
            // The shard's messages from here on are numbered after every earlier owner's:
            // their targets keep the numbers of those delivered (see `Numbers`).
            let store = self.store.clone();
            let mark = blocking(move || store.get_state(crate::codec::outbox_mark_key(shard)))
                .await?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_be_bytes);
            self.numbers.skip_to(mark);
            if let Some(e) = given_up() {
                return Err(e);
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
                    Self::at(&self.since_snapshot, shard).fetch_add(1, Ordering::Relaxed);
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

    /// Applies `shard`'s entries after `applied` up to `last` to the store: when the first
    /// of them does not follow `applied` (those between were purged), from the snapshot the
    /// first names. Knows how many entries the shard's subject holds afterwards.
    async fn replay_tail(
        &self,
        shard: u16,
        applied: u64,
        last: u64,
        given_up: &impl Fn() -> Option<Error>,
    ) -> Result<(), Tail> {
        // The tail is held in memory while it is applied: snapshots bound it.
        let mut entries = Vec::new();
        let mut snapshot = None;
        let mut previous = applied;
        let mut purged = false;
        self.log
            .replay(shard, applied + 1, last, |replayed| {
                if replayed.previous != Some(previous) {
                    if entries.is_empty() && snapshot.is_none() {
                        // The first entry left after a purge: its snapshot holds everything
                        // up to and including it.
                        snapshot = Some(replayed.seq);
                        previous = replayed.seq;
                        return Ok(());
                    }
                    purged = true;
                    return Err(Error::Cluster(format!(
                        "shard {shard}: entry {} follows {:?}, not {previous}",
                        replayed.seq, replayed.previous
                    )));
                }
                previous = replayed.seq;
                entries.push((replayed.seq, replayed.entry));
                Ok(())
            })
            .await
            .map_err(|e| {
                if purged {
                    Tail::Purged
                } else {
                    Tail::Failed(e)
                }
            })?;
        let mut in_log = entries.len() as u64;
        if let Some(seq) = snapshot {
            if let Some(e) = given_up() {
                return Err(Tail::Failed(e));
            }
            self.load_snapshot(shard, seq).await?;
            Self::at(&self.snapshot_at, shard).fetch_max(seq, Ordering::AcqRel);
            in_log += 1;
        } else if applied > 0 {
            // Entries before `applied` are on the subject too, unless a snapshot holds them.
            in_log = self.log.entries(shard).await.unwrap_or(in_log);
        }
        Self::at(&self.since_snapshot, shard).store(in_log, Ordering::Relaxed);
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            if let Some(e) = given_up() {
                return Err(Tail::Failed(e));
            }
            let chunk: Vec<(u64, LogEntry)> = entries.by_ref().take(REPLAY_CHUNK).collect();
            let to = if entries.peek().is_some() {
                chunk.last().map_or(applied, |(seq, _)| *seq)
            } else {
                last
            };
            let store = self.store.clone();
            blocking(move || {
                let writes = chunk.iter().flat_map(|(_, entry)| match entry {
                    LogEntry::Writes(writes) => writes.as_slice(),
                    LogEntry::Epoch { .. } => &[],
                });
                apply(&store, shard, writes, Some(to))
            })
            .await?;
        }
        Ok(())
    }

    /// Replaces `shard`'s records in the store with its snapshot at `seq`, whose sequence
    /// becomes the shard's applied one once every record is written (a crash before leaves
    /// the shard with none: the next catch-up loads the snapshot again).
    async fn load_snapshot(&self, shard: u16, seq: u64) -> Result<(), Error> {
        let mut snapshot = self.snapshots.read(shard, seq).await?;
        let store = self.store.clone();
        blocking(move || store.clear_shard(shard)).await?;
        let mut records = 0;
        while let Some(chunk) = snapshot.next_chunk(REPLAY_CHUNK).await? {
            records += chunk.len();
            let store = self.store.clone();
            blocking(move || apply(&store, shard, chunk.iter(), None)).await?;
        }
        let store = self.store.clone();
        blocking(move || apply(&store, shard, std::iter::empty(), Some(seq))).await?;
        self.metrics
            .snapshots_loaded
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard, seq, records, "loaded a shard's snapshot");
        Ok(())
    }

    /// Snapshots every shard served here that gathered enough entries since its last
    /// snapshot, and removes the entries its snapshot holds from the log; forever.
    pub(crate) async fn keep_snapshots(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            // Snapshots written while older ones may be in the bucket unknown to this node.
            let mut unknown = Vec::new();
            for shard in 0..SHARDS {
                let since = Self::at(&self.since_snapshot, shard).load(Ordering::Relaxed);
                if since < self.snapshot_after || self.placement.serving_for(shard).is_none() {
                    continue;
                }
                match self.snapshot(shard, since).await {
                    Ok(Some(seq)) => unknown.push((shard, seq)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(shard, error = %e, "snapshotting a shard failed"),
                }
            }
            if !unknown.is_empty() {
                match self.snapshots.delete_older(&unknown).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "deleted snapshots nobody knew of"),
                    Err(e) => {
                        tracing::warn!(error = %e, "deleting older snapshots failed");
                        for (shard, _) in unknown {
                            self.stray(shard).store(true, Ordering::Release);
                        }
                    }
                }
            }
        }
    }

    /// Whether older snapshots of `shard` may be in the bucket unknown to this node.
    fn stray(&self, shard: u16) -> &AtomicBool {
        Self::at(&self.strays, shard)
    }

    /// Writes a snapshot of `shard` (which gathered `since` entries), purges the log below
    /// it, and deletes the snapshot it replaces. Returns the new snapshot's sequence when
    /// older snapshots this node does not know of may be left ([`Self::strays`]): the caller
    /// looks for them in the bucket.
    async fn snapshot(&self, shard: u16, since: u64) -> Result<Option<u64>, Error> {
        let strays = self.stray(shard).swap(false, Ordering::AcqRel);
        match self.write_snapshot(shard, since).await {
            Ok(Some(seq)) if strays => Ok(Some(seq)),
            Ok(Some(_)) => Ok(None),
            Ok(None) => {
                // Nothing written: the next snapshot looks.
                if strays {
                    self.stray(shard).store(true, Ordering::Release);
                }
                Ok(None)
            }
            Err(e) => {
                // Its object may be in the bucket, the log not purged below it.
                self.stray(shard).store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// [`Self::snapshot`]'s steps; the sequence of the snapshot written, if one was.
    async fn write_snapshot(&self, shard: u16, since: u64) -> Result<Option<u64>, Error> {
        // Never while the shard's records are replaced by a catch-up (it may have been given
        // up and taken again since it was found served).
        let _alone = self.alone(shard).await;
        if self.placement.serving_for(shard).is_none() {
            return Ok(None);
        }
        let before = Self::at(&self.snapshot_at, shard).load(Ordering::Acquire);
        let written = self
            .snapshots
            .write(self.store.clone(), shard, before)
            .await?;
        let counted = || {
            let _ = Self::at(&self.since_snapshot, shard).fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |now| Some(now.saturating_sub(since)),
            );
        };
        let Some(written) = written else {
            // The latest snapshot already holds what the store has.
            counted();
            return Ok(None);
        };
        self.metrics
            .snapshots_written
            .fetch_add(1, Ordering::Relaxed);
        self.log.purge_below(shard, written.seq).await?;
        counted();
        let replaced = Self::at(&self.snapshot_at, shard).fetch_max(written.seq, Ordering::AcqRel);
        if replaced > 0 && replaced < written.seq {
            self.snapshots.delete(shard, replaced).await?;
        }
        tracing::debug!(
            shard,
            seq = written.seq,
            records = written.records,
            "snapshotted a shard"
        );
        Ok(Some(written.seq))
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
                Self::at(&self.since_snapshot, shard).fetch_add(1, Ordering::Relaxed);
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

    fn issued_outbox_numbers(&self) -> u64 {
        self.numbers.issued()
    }
}

/// Writes `writes` of `shard` to the store in one batch, with `applied` (if given) as the
/// shard's applied sequence, and makes it durable.
fn apply<'a>(
    store: &Store,
    shard: u16,
    writes: impl Iterator<Item = &'a LogWrite> + Clone,
    applied: Option<u64>,
) -> Result<(), StorageError> {
    // fjall panics on an empty key or one over 64 KiB, and a panic poisons every write: a
    // damaged entry is refused instead.
    if writes
        .clone()
        .any(|w| w.key.is_empty() || w.key.len() > 65_535)
    {
        return Err(StorageError::new(format!(
            "shard {shard}: a replayed entry holds an invalid key; refusing to apply it"
        )));
    }
    let applied_key = shard.to_be_bytes();
    let applied_seq = applied.map(u64::to_be_bytes);
    let count = writes.clone().count() + usize::from(applied.is_some());
    let mut all = writes
        .map(|w| Write {
            space: w.space,
            key: &w.key,
            value: w.value.as_deref(),
        })
        .chain(applied_seq.as_ref().map(|seq| Write {
            space: Space::Applied,
            key: &applied_key,
            value: Some(seq),
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
