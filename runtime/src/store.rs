//! Storage: the [`StateStore`] trait every load, scan and commit goes through, and its one
//! implementation, [`fjall`] (the embedded LSM store; the only module that names fjall).
//!
//! Every call may block (fsync, write stalls, compaction back-pressure), so callers run it on
//! the committer thread, a loader thread ([`crate::loader`]) or in `spawn_blocking`, never on
//! a Tokio worker.

use std::ops::Range;
use std::sync::Arc;

use crate::codec::OutboxId;
use crate::error::StorageError;
use crate::frontier::FrontierRecord;

pub(crate) mod fjall;

pub use self::fjall::UpgradeHook;

/// How durable an acknowledged write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit batch is fsynced before its replies leave: survives power loss.
    #[default]
    Sync,
    /// Every commit batch is written to the OS before its replies leave: survives a crash of
    /// the process, not of the machine.
    Buffered,
}

/// The keyspaces of the store (see DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// Actor records: `shard · type · key` → state record; on a cluster node also each
    /// shard's outbox mark, `shard · 0` (no type) → u64 (see [`crate::codec::outbox_mark_key`]).
    State,
    /// Durable messages not yet processed: `shard · sequence` → envelope.
    Outbox,
    /// The timer index, each shard's ordered by due time: `shard · due · state key` →
    /// [`crate::codec::TIMER_INDEX`], one entry per actor with timers (kept in its record),
    /// at or before its earliest; and timers an older version stored apart, `shard · due ·
    /// state key · name` → timer, until they fire or are cancelled.
    Timers,
    /// Results of idempotent requests: `state key · 0xFF · idempotency key · expires` →
    /// kept result (see [`crate::codec::kept_key`]).
    Kept,
    /// The expiry index of `Kept`: `shard · expires · kept key` → nothing.
    Expiry,
    /// On a cluster node: `shard` → the sequence of the shard's replicated log that the
    /// other spaces reflect (u64, big-endian), written in the batch that applies it.
    Applied,
    /// The store's own records: its format, and on a single node the outbox frontier
    /// ([`crate::frontier::FRONTIER_KEY`]).
    Meta,
}

/// One write of a commit batch: a value, or `None` to delete the key.
#[derive(Clone, Copy)]
pub(crate) struct Write<'a> {
    pub(crate) space: Space,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
}

impl Space {
    /// The spaces whose keys start with their actor's shard: what a shard's snapshot holds.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) const SHARDED: [Space; 5] = [
        Space::State,
        Space::Outbox,
        Space::Timers,
        Space::Kept,
        Space::Expiry,
    ];
}

/// What [`StateStore::shard_contents`] hands out: first the shard's applied sequence, then
/// its records.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Content<'a> {
    Applied(u64),
    Record(Space, &'a [u8], &'a [u8]),
}

/// A key and value read from the store.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// A shared handle on the opened store.
pub(crate) type Store = Arc<dyn StateStore>;

/// What the runtime needs of a store: point reads, ranged scans by shard, and atomic batches
/// made durable by a separate sync (so one sync covers a whole group commit).
///
/// Keys are laid out by [`crate::codec`]; every range a scan walks is one shard's, so a set of
/// shards is a set of ranges (what a node that owns some shards reads).
pub(crate) trait StateStore: Send + Sync {
    /// An actor's state record. After a commit failed between its write and its sync, the
    /// store holds writes that were reported failed and are not durable: an actor reloaded
    /// then must not answer from them, so the store makes them durable first (or fails).
    fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// The stored outbox entry that holds message `id`, with its key, while the message
    /// waits for its target: the entry stored under `id`, or the group stored before it
    /// that numbers it (see [`crate::codec::encode_group`]). `None` once the message was
    /// processed (its entry deleted, or marked processed). Read as [`StateStore::get_state`]
    /// reads.
    fn outbox_entry(&self, id: OutboxId) -> Result<Option<Entry>, StorageError>;

    /// Up to `limit` state keys of actors of type `actor` with a stored record in `shards`,
    /// in storage order (shard, then key), after the state key `after` (if given).
    fn state_keys(
        &self,
        actor: &str,
        shards: Range<u16>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError>;

    /// The kept result under `prefix` (see [`crate::codec::kept_prefix`]) that has not
    /// expired at `now_ms`, with its key.
    fn kept_result(&self, prefix: &[u8], now_ms: u64) -> Result<Option<Entry>, StorageError>;

    /// Up to `limit` keys of the expiry index whose results expired at or before `now_ms`,
    /// shard by shard of `shards`, each shard's earliest first.
    fn expired_results(
        &self,
        shards: Range<u16>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError>;

    /// Every outbox entry of `shards` the `frontier` has not passed, shard by shard, each in
    /// sequence order, then the parked ones below it (read once when the shards are taken).
    fn outbox_entries(
        &self,
        shards: Range<u16>,
        frontier: Option<&FrontierRecord>,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The outbox frontier last written (a single node's; see [`crate::frontier`]).
    fn outbox_frontier(&self) -> Result<Option<FrontierRecord>, StorageError>;

    /// Bytes the outbox takes on disk.
    fn outbox_disk_space(&self) -> u64;

    /// Compacts the whole outbox, which drops the entries the frontier passed.
    fn compact_outbox(&self) -> Result<(), StorageError>;

    /// Up to `limit` timers of `shard` due at or before `now_ms`, earliest first, after the
    /// key `after` (if given).
    fn due_timers(
        &self,
        shard: u16,
        after: Option<&[u8]>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The due time of the earliest timer of `shard` due after `now_ms`.
    fn next_timer_after(&self, shard: u16, now_ms: u64) -> Result<Option<u64>, StorageError>;

    /// The sequence of `shard`'s replicated log the store reflects (0: none applied).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn applied(&self, shard: u16) -> Result<u64, StorageError>;

    /// Every record of `shard` (state, outbox, timers, kept results and their expiry index),
    /// read from one consistent view of the store, handed to `emit` (which stops the walk by
    /// returning `false`) after the shard's applied sequence in that view (see
    /// [`StateStore::applied`]), which the records reflect exactly.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn shard_contents(
        &self,
        shard: u16,
        emit: &mut dyn FnMut(Content<'_>) -> bool,
    ) -> Result<(), StorageError>;

    /// Deletes `shard`'s applied sequence, then every record of it (what
    /// [`StateStore::shard_contents`] walks), in batches of their own, and makes it durable.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn clear_shard(&self, shard: u16) -> Result<(), StorageError>;

    /// Writes one atomic batch (across keyspaces) without syncing it:
    /// [`StateStore::sync_batch`] makes it durable. Keys must have been validated (non-empty,
    /// at most 64 KiB).
    fn write_batch(
        &self,
        writes: &mut dyn Iterator<Item = Write<'_>>,
        count: usize,
    ) -> Result<(), StorageError>;

    /// Makes every batch written so far durable per the configured [`Durability`].
    fn sync_batch(&self) -> Result<(), StorageError>;

    /// Records that a written batch failed before it was synced (see
    /// [`StateStore::get_state`]).
    fn mark_unsynced(&self);

    /// Hands every batch written so far to the OS, without fsync (a test seam's failed sync).
    fn flush_to_os(&self) -> Result<(), StorageError>;

    /// Syncs everything written to disk (at shutdown).
    fn sync(&self) -> Result<(), StorageError>;
}
