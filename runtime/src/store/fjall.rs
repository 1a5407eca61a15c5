//! The fjall implementation of [`StateStore`]: one keyspace per [`Space`], a `meta` keyspace
//! with the store format, and the upgrade of older formats ([`upgrade`]).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Content, Durability, Entry, Space, StateStore, Write};
use crate::codec::{MAX_GROUP, OUTBOX_PROCESSED, OutboxId, STORE_FORMAT, group_len};
use crate::error::{Error, StorageError};
use crate::frontier::{FRONTIER_KEY, Frontier, FrontierRecord};
use crate::metrics::JournalPersists;

/// The opened fjall store with its keyspaces.
pub(crate) struct FjallStore {
    db: Database,
    state: Keyspace,
    outbox: Keyspace,
    timers: Keyspace,
    kept: Keyspace,
    expiry: Keyspace,
    applied: Keyspace,
    meta: Keyspace,
    durability: Durability,
    /// Set when a batch reached the memtables but its commit failed before its sync: reads
    /// would see writes that are not durable, so the next load syncs first (see
    /// [`StateStore::get_state`]).
    unsynced: Arc<Unsynced>,
    /// The journal persists performed, by mode (the runtime's [`crate::Stats`] shows them).
    persists: Arc<JournalPersists>,
}

/// Commits that failed after their write, and how many of them a sync has covered since.
#[derive(Default)]
struct Unsynced {
    failures: AtomicU64,
    synced: AtomicU64,
    syncing: parking_lot::Mutex<()>,
}

const META_FORMAT_KEY: &[u8] = b"store_format";

mod upgrade;

pub use upgrade::UpgradeHook;

fn storage(e: fjall::Error) -> StorageError {
    StorageError::new(e)
}

impl FjallStore {
    /// Opens (or creates) the store at `path` and checks its format version.
    ///
    /// fjall panics on some corrupted files (an assertion in its journal reader): such a
    /// panic is turned into an error naming the path, like any other refusal to open.
    /// Every journal persist made through the store is counted in `persists`.
    ///
    /// Compactions of the outbox drop the entries `frontier` has passed.
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        upgrade_hook: Option<&UpgradeHook>,
        persists: Arc<JournalPersists>,
        frontier: Arc<Frontier>,
    ) -> Result<FjallStore, Error> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_unguarded(path, durability, upgrade_hook, persists, frontier)
        }));
        opened.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Storage(StorageError::new(format!(
                "cannot open {}: the store panicked while reading its files, which are probably \
                 corrupted: {why}",
                path.display()
            ))))
        })
    }

    fn open_unguarded(
        path: &Path,
        durability: Durability,
        upgrade_hook: Option<&UpgradeHook>,
        persists: Arc<JournalPersists>,
        frontier: Arc<Frontier>,
    ) -> Result<FjallStore, Error> {
        let at =
            |e: fjall::Error| StorageError::new(format!("cannot open {}: {e}", path.display()));
        let factory: Arc<dyn fjall::compaction::filter::Factory> =
            Arc::new(PassedEntriesFactory(std::panic::AssertUnwindSafe(frontier)));
        let filters =
            Arc::new(move |keyspace: &str| (keyspace == upgrade::OUTBOX).then(|| factory.clone()));
        let db = Database::builder(path)
            // Gears syncs the journal itself, once per commit batch (group commit).
            .manual_journal_persist(true)
            .with_compaction_filter_factories(filters)
            .open()
            .map_err(at)?;
        let state = db
            .keyspace("state", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let outbox = db
            .keyspace(upgrade::OUTBOX, KeyspaceCreateOptions::default)
            .map_err(at)?;
        let timers = db
            .keyspace(upgrade::TIMERS, KeyspaceCreateOptions::default)
            .map_err(at)?;
        let kept = db
            .keyspace("replies", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let expiry = db
            .keyspace("reply_expiry", KeyspaceCreateOptions::default)
            .map_err(at)?;
        // Created when first opened by a build that has it: older stores need no upgrade.
        let applied = db
            .keyspace("applied", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let found = meta.get(META_FORMAT_KEY).map_err(at)?.map(|found| {
            <[u8; 4]>::try_from(&*found)
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX)
        });
        let layout = upgrade::Layout {
            db: &db,
            meta: &meta,
            outbox: &outbox,
            timers: &timers,
        };
        match found {
            None => layout.set_format(STORE_FORMAT).map_err(at)?,
            Some(1) => {
                tracing::info!(path = %path.display(), "upgrading the store from format 1 to {STORE_FORMAT}");
                layout.upgrade_format_1(upgrade_hook).map_err(|e| {
                    StorageError::new(format!("cannot upgrade {}: {e}", path.display()))
                })?;
                layout.set_format(STORE_FORMAT).map_err(at)?;
            }
            // Format 3 changes no record of format 2: it only stops older builds.
            Some(2) => {
                layout.drop_format_1().map_err(at)?;
                layout.set_format(STORE_FORMAT).map_err(at)?;
            }
            Some(STORE_FORMAT) => layout.drop_format_1().map_err(at)?,
            Some(found) => {
                return Err(Error::IncompatibleStore {
                    path: path.display().to_string(),
                    found,
                    supported: STORE_FORMAT,
                });
            }
        }
        Ok(FjallStore {
            db,
            state,
            outbox,
            timers,
            kept,
            expiry,
            applied,
            meta,
            durability,
            unsynced: Arc::new(Unsynced::default()),
            persists,
        })
    }

    /// Syncs first if a failed commit left writes in the memtables that are not durable.
    /// Concurrent readers wait for the one sync; a failure marked while it runs is synced by
    /// the next reader.
    fn settle_unsynced(&self) -> Result<(), StorageError> {
        let failed = self.unsynced.failures.load(Ordering::Acquire);
        if self.unsynced.synced.load(Ordering::Acquire) >= failed {
            return Ok(());
        }
        let _one_at_a_time = self.unsynced.syncing.lock();
        if self.unsynced.synced.load(Ordering::Acquire) >= failed {
            return Ok(());
        }
        self.sync_batch()?;
        self.unsynced.synced.fetch_max(failed, Ordering::AcqRel);
        Ok(())
    }

    /// The entry that holds message `id`, as read now (see [`StateStore::outbox_entry`]).
    fn entry_of(&self, id: OutboxId) -> Result<Option<Entry>, StorageError> {
        let key = id.key();
        if let Some(value) = self.outbox.get(&key[..]).map_err(storage)? {
            // One message (a group's number is none of its messages').
            let one = &*value != OUTBOX_PROCESSED && group_len(&value).is_none();
            return Ok(one.then(|| (key.to_vec(), value.to_vec())));
        }
        // A message of a group: the group is the nearest entry before it in its shard, past
        // the marks of the group's other messages that were processed.
        let start = OutboxId {
            shard: id.shard,
            seq: 0,
        }
        .key();
        let before = self.outbox.range::<&[u8], _>(&start[..]..&key[..]).rev();
        for guard in before.take(MAX_GROUP + 1) {
            let (found, value) = guard.into_inner().map_err(storage)?;
            if &*value == OUTBOX_PROCESSED {
                continue;
            }
            let holds = OutboxId::of_key(&found)
                .zip(group_len(&value))
                .is_some_and(|(group, n)| id.seq - group.seq <= n);
            return Ok(holds.then(|| (found.to_vec(), value.to_vec())));
        }
        Ok(None)
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::State => &self.state,
            Space::Outbox => &self.outbox,
            Space::Timers => &self.timers,
            Space::Kept => &self.kept,
            Space::Expiry => &self.expiry,
            Space::Applied => &self.applied,
            Space::Meta => &self.meta,
        }
    }

    /// Persists the journal in `mode` and counts it by what it asked of the OS: the one place
    /// every journal persist goes through, so the counters cannot miss one.
    fn persist(&self, mode: PersistMode) -> Result<(), StorageError> {
        self.db.persist(mode).map_err(storage)?;
        let performed = match mode {
            PersistMode::SyncAll | PersistMode::SyncData => &self.persists.fsyncs,
            PersistMode::Buffer => &self.persists.flushes,
        };
        performed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl StateStore for FjallStore {
    /// Reads an actor's state record.
    ///
    /// After a commit failed between its write and its sync, the memtables hold writes that
    /// were reported failed and are not durable; an actor reloaded then must not answer from
    /// them (a crash would take them back), so the journal is synced first. If that sync
    /// fails too (a real I/O failure poisons the store), the load fails.
    fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.settle_unsynced()?;
        Ok(self.state.get(key).map_err(storage)?.map(|v| v.to_vec()))
    }

    /// The entry that holds message `id` (see [`StateStore::outbox_entry`]), reading the
    /// store as [`StateStore::get_state`] does: after syncing writes left unsynced by a
    /// failed commit.
    fn outbox_entry(&self, id: OutboxId) -> Result<Option<Entry>, StorageError> {
        self.settle_unsynced()?;
        self.entry_of(id)
    }

    /// Up to `limit` state keys of actors of type `actor` with a stored record, in storage
    /// order (shard, then key), after the state key `after` (if given). Batches still being
    /// synced may be listed (as with any read of the store).
    ///
    /// Keys are shard-first, so this walks the type's prefix in each shard from `after`'s.
    fn state_keys(
        &self,
        actor: &str,
        shards: Range<u16>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        use std::ops::Bound;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.settle_unsynced()?;
        let first_shard = after
            .and_then(|k| k.get(..2))
            .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]));
        let mut keys = Vec::new();
        for shard in first_shard.max(shards.start)..shards.end.min(crate::codec::SHARDS) {
            let prefix = crate::codec::state_key_prefix(shard, actor);
            let start = match after {
                Some(k) if k.starts_with(&prefix) => Bound::Excluded(k.to_vec()),
                _ => Bound::Included(prefix.clone()),
            };
            for guard in self.state.range((start, Bound::Unbounded)) {
                let key = guard.key().map_err(storage)?;
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key.to_vec());
                if keys.len() >= limit {
                    return Ok(keys);
                }
            }
        }
        Ok(keys)
    }

    /// The kept result under `prefix` (an actor and idempotency key, see
    /// [`crate::codec::kept_prefix`]) that has not expired at `now_ms`, with its key. Reads
    /// the store as [`StateStore::get_state`] does.
    fn kept_result(&self, prefix: &[u8], now_ms: u64) -> Result<Option<Entry>, StorageError> {
        self.settle_unsynced()?;
        // Few entries per prefix: the live one, and expired ones not yet removed.
        for guard in self.kept.prefix(prefix) {
            let (key, value) = guard.into_inner().map_err(storage)?;
            if crate::codec::kept_expiry(&key).is_some_and(|expires| expires > now_ms) {
                return Ok(Some((key.to_vec(), value.to_vec())));
            }
        }
        Ok(None)
    }

    /// Up to `limit` keys of the expiry index whose results expired at or before `now_ms`,
    /// shard by shard of `shards`, each shard's earliest first.
    fn expired_results(
        &self,
        shards: Range<u16>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut keys = Vec::new();
        for shard in shards {
            let start = shard.to_be_bytes();
            let mut end = start.to_vec();
            end.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
            for guard in self.expiry.range(start.as_slice()..end.as_slice()) {
                if keys.len() >= limit {
                    return Ok(keys);
                }
                keys.push(guard.key().map_err(storage)?.to_vec());
            }
        }
        Ok(keys)
    }

    fn outbox_entries(
        &self,
        shards: Range<u16>,
        frontier: Option<&FrontierRecord>,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = Vec::new();
        for shard in shards.clone() {
            let from = frontier.map_or(0, |f| f.of(shard));
            if from == 0 {
                entries.extend(collect(
                    self.outbox.prefix(shard.to_be_bytes()),
                    usize::MAX,
                )?);
                continue;
            }
            let start = OutboxId { shard, seq: from }.key();
            let end = (shard + 1).to_be_bytes();
            entries.extend(collect(
                self.outbox.range::<&[u8], _>(&start[..]..&end[..]),
                usize::MAX,
            )?);
        }
        // The entries of messages below their shard's frontier that were not processed (a
        // group once, however many of its messages are listed; a message marked processed
        // since, with its mark).
        let mut listed = std::collections::BTreeSet::new();
        for id in frontier.map_or(&[][..], |f| &f.parked[..]) {
            if shards.contains(&id.shard) && id.seq < frontier.map_or(0, |f| f.of(id.shard)) {
                let key = id.key();
                match self.outbox.get(&key[..]).map_err(storage)? {
                    Some(value) => {
                        listed.insert((key.to_vec(), value.to_vec()));
                    }
                    None => listed.extend(self.entry_of(*id)?),
                }
            }
        }
        entries.extend(listed);
        Ok(entries)
    }

    fn outbox_frontier(&self) -> Result<Option<FrontierRecord>, StorageError> {
        match self.meta.get(FRONTIER_KEY).map_err(storage)? {
            None => Ok(None),
            Some(bytes) => FrontierRecord::decode(&bytes)
                .map(Some)
                .map_err(|e| StorageError::new(format!("the outbox frontier is corrupted: {e}"))),
        }
    }

    fn outbox_disk_space(&self) -> u64 {
        self.outbox.disk_space()
    }

    fn compact_outbox(&self) -> Result<(), StorageError> {
        self.outbox.major_compact().map_err(storage)
    }

    /// Up to `limit` timers of `shard` due at or before `now_ms`, earliest first, after the
    /// key `after` (if given).
    fn due_timers(
        &self,
        shard: u16,
        after: Option<&[u8]>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Included(shard.to_be_bytes().to_vec()),
        };
        let end = crate::codec::timer_range_key(shard, now_ms.saturating_add(1)).to_vec();
        collect(self.timers.range((start, Bound::Excluded(end))), limit)
    }

    /// The due time of the earliest timer of `shard` due after `now_ms`.
    ///
    /// The range ends with the shard: an iterator steps over every deleted timer (a
    /// tombstone, until compaction drops it) between its start and the first live one, and
    /// a cancelled timer leaves one. Unbounded, the look-ahead of a shard without a live timer
    /// after `now_ms` walked the tombstones of every later shard: with the order demo's holds
    /// (each arms a timer and cancels it milliseconds later) that was tens of milliseconds
    /// per scan, on a loader thread.
    fn next_timer_after(&self, shard: u16, now_ms: u64) -> Result<Option<u64>, StorageError> {
        let start = crate::codec::timer_range_key(shard, now_ms.saturating_add(1));
        let end = crate::codec::timer_range_key(shard.saturating_add(1), 0);
        let first = collect(self.timers.range(start.as_slice()..end.as_slice()), 1)?;
        Ok(first
            .first()
            .and_then(|(key, _)| crate::codec::timer_due(key)))
    }

    fn applied(&self, shard: u16) -> Result<u64, StorageError> {
        self.settle_unsynced()?;
        let found = self.applied.get(shard.to_be_bytes()).map_err(storage)?;
        Ok(found
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn shard_contents(
        &self,
        shard: u16,
        emit: &mut dyn FnMut(Content<'_>) -> bool,
    ) -> Result<(), StorageError> {
        use fjall::Readable;
        self.settle_unsynced()?;
        // One view across the keyspaces: a batch applies a log entry with its sequence.
        let view = self.db.snapshot();
        let applied = view
            .get(&self.applied, shard.to_be_bytes())
            .map_err(storage)?
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_be_bytes);
        if !emit(Content::Applied(applied)) {
            return Ok(());
        }
        for space in Space::SHARDED {
            for guard in view.prefix(self.keyspace(space), shard.to_be_bytes()) {
                let (key, value) = guard.into_inner().map_err(storage)?;
                if !emit(Content::Record(space, &key, &value)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn clear_shard(&self, shard: u16) -> Result<(), StorageError> {
        const BATCH: usize = 1024;
        // First: a view taken while the records go (in several batches) must not read them as
        // the shard at its old applied sequence.
        self.applied.remove(shard.to_be_bytes()).map_err(storage)?;
        for space in Space::SHARDED {
            let keyspace = self.keyspace(space);
            loop {
                let keys = keyspace
                    .prefix(shard.to_be_bytes())
                    .take(BATCH)
                    .map(|guard| guard.key().map_err(storage))
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() {
                    break;
                }
                let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), keys.len());
                for key in &keys {
                    batch.remove(keyspace, key.clone());
                }
                batch.commit().map_err(storage)?;
            }
        }
        self.sync_batch()
    }

    /// Writes one atomic batch (across keyspaces) to the journal and the memtables, without
    /// syncing: [`StateStore::sync_batch`] makes it durable (one journal sync for the whole batch).
    ///
    /// Keys must have been validated: fjall panics on empty keys in a batch.
    fn write_batch(
        &self,
        writes: &mut dyn Iterator<Item = Write<'_>>,
        count: usize,
    ) -> Result<(), StorageError> {
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), count);
        for w in writes {
            debug_assert!(!w.key.is_empty());
            let keyspace = self.keyspace(w.space);
            match w.value {
                Some(v) => batch.insert(keyspace, w.key, v),
                None => batch.remove(keyspace, w.key),
            }
        }
        batch.commit().map_err(storage)
    }

    /// Makes every batch written so far durable per the configured [`Durability`].
    fn sync_batch(&self) -> Result<(), StorageError> {
        let mode = match self.durability {
            Durability::Sync => PersistMode::SyncAll,
            Durability::Buffered => PersistMode::Buffer,
        };
        self.persist(mode)
    }

    /// Records that a written batch failed before it was synced (see [`StateStore::get_state`]).
    fn mark_unsynced(&self) {
        self.unsynced.failures.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands every batch written so far to the OS, without fsync (a test seam's failed sync).
    fn flush_to_os(&self) -> Result<(), StorageError> {
        self.persist(PersistMode::Buffer)
    }

    /// Syncs the journal to disk (used at shutdown).
    fn sync(&self) -> Result<(), StorageError> {
        self.persist(PersistMode::SyncAll)
    }
}

/// The outbox's compaction filter: drops the entries the frontier passed (processed, and
/// never delivered again). An outbox key is written once, so dropping its value leaves no
/// older version behind to come back.
struct PassedEntries {
    frontier: Arc<Frontier>,
}

/// Makes a [`PassedEntries`] filter for each compaction. (fjall asks a factory to be unwind
/// safe; the frontier's lock is never held across anything that panics.)
struct PassedEntriesFactory(std::panic::AssertUnwindSafe<Arc<Frontier>>);

impl fjall::compaction::filter::Factory for PassedEntriesFactory {
    fn name(&self) -> &str {
        "gears-passed-outbox-entries"
    }

    fn make_filter(
        &self,
        _: &fjall::compaction::filter::Context,
    ) -> Box<dyn fjall::compaction::filter::CompactionFilter> {
        Box::new(PassedEntries {
            frontier: self.0.0.clone(),
        })
    }
}

impl fjall::compaction::filter::CompactionFilter for PassedEntries {
    fn filter_item(
        &mut self,
        item: fjall::compaction::filter::ItemAccessor<'_>,
        _: &fjall::compaction::filter::Context,
    ) -> fjall::compaction::filter::CompactionFilterResult {
        use fjall::compaction::filter::Verdict;
        let Some(id) = OutboxId::of_key(item.key()).filter(|id| self.frontier.passed(*id)) else {
            return Ok(Verdict::Keep);
        };
        // A group stays while the frontier lists one of its messages.
        if self.frontier.any_parked() {
            let value = item.value()?;
            if let Some(n) = group_len(&value)
                && (1..=n.min(MAX_GROUP as u64)).any(|i| {
                    self.frontier.lists(OutboxId {
                        seq: id.seq.saturating_add(i),
                        shard: id.shard,
                    })
                })
            {
                return Ok(Verdict::Keep);
            }
        }
        Ok(Verdict::Destroy)
    }
}

fn collect(
    iter: impl Iterator<Item = fjall::Guard>,
    limit: usize,
) -> Result<Vec<Entry>, StorageError> {
    iter.take(limit)
        .map(|guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(storage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{timer_key, timer_range_key};

    fn timer_of(shard: u16, due_ms: u64) -> Vec<u8> {
        // A state key is `shard · len(type) · type · key`.
        let mut state_key = shard.to_be_bytes().to_vec();
        state_key.extend_from_slice(&[1, b'a', b'k']);
        timer_key(&state_key, due_ms, "t")
    }

    fn write(store: &FjallStore, writes: &[(Vec<u8>, Option<&[u8]>)]) {
        let mut iter = writes.iter().map(|(key, value)| Write {
            space: Space::Timers,
            key,
            value: *value,
        });
        store.write_batch(&mut iter, writes.len()).unwrap();
        store.sync_batch().unwrap();
    }

    #[test]
    fn the_next_timer_of_a_shard_is_its_own_even_past_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(
            dir.path(),
            Durability::Sync,
            None,
            Arc::new(JournalPersists::default()),
            Arc::default(),
        )
        .unwrap();
        let value: &[u8] = &[0];
        // Shard 3: one timer left and 100 cancelled after it; shards 4 and 255: one each.
        let mut writes = vec![
            (timer_of(3, 10), Some(value)),
            (timer_of(4, 5), Some(value)),
            (timer_of(255, 7), Some(value)),
        ];
        writes.extend((20..120).map(|due| (timer_of(3, due), Some(value))));
        write(&store, &writes);
        let cancelled: Vec<_> = (20..120).map(|due| (timer_of(3, due), None)).collect();
        write(&store, &cancelled);

        assert_eq!(store.next_timer_after(3, 0).unwrap(), Some(10));
        // Past its last live timer, a shard has none: never a later shard's.
        assert_eq!(store.next_timer_after(3, 10).unwrap(), None);
        assert_eq!(store.next_timer_after(4, 0).unwrap(), Some(5));
        assert_eq!(store.next_timer_after(4, 5).unwrap(), None);
        assert_eq!(store.next_timer_after(255, 0).unwrap(), Some(7));
        assert_eq!(store.next_timer_after(255, u64::MAX).unwrap(), None);
        assert_eq!(store.next_timer_after(0, 0).unwrap(), None);

        let due = store.due_timers(3, None, 1000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].0.starts_with(&timer_range_key(3, 10)));
    }
}

#[cfg(test)]
mod frontier_tests {
    use super::*;
    use crate::codec::{ActorRef, OutboxRecord, Payload, encode_group};

    fn open(dir: &Path, frontier: Arc<Frontier>) -> FjallStore {
        FjallStore::open(
            dir,
            Durability::Sync,
            None,
            Arc::new(JournalPersists::default()),
            frontier,
        )
        .unwrap()
    }

    /// The value of a group of `n` messages.
    fn group(n: usize) -> Vec<u8> {
        let record = OutboxRecord {
            target: ActorRef {
                actor: "tally".into(),
                key: "t".into(),
            },
            payload: Payload::Message {
                handler: "record".into(),
                args: vec![1],
            },
            idempotency: None,
            cause: Default::default(),
            group: None,
        };
        encode_group(&vec![record; n]).unwrap().to_vec()
    }

    fn put(store: &FjallStore, entries: &[(OutboxId, &[u8])]) {
        let keys: Vec<(Arc<[u8]>, &[u8])> = entries.iter().map(|(id, v)| (id.key(), *v)).collect();
        let mut writes = keys.iter().map(|(key, value)| Write {
            space: Space::Outbox,
            key,
            value: Some(value),
        });
        store.write_batch(&mut writes, keys.len()).unwrap();
        store.sync_batch().unwrap();
    }

    fn at(seq: u64) -> OutboxId {
        OutboxId { shard: 3, seq }
    }

    /// A whole compaction of the outbox drops the entries the durable frontier passed, and
    /// keeps the others: those at or above it, a parked one it lists, and a group one of
    /// whose messages it lists.
    #[test]
    fn compacting_the_outbox_drops_what_the_frontier_passed() {
        let dir = tempfile::tempdir().unwrap();
        let frontier = Arc::new(Frontier::default());
        let store = open(dir.path(), frontier.clone());
        let mut entries: Vec<(OutboxId, &[u8])> =
            (1..=100).map(|seq| (at(seq), &[1u8, 2, 3][..])).collect();
        // Groups below the frontier: 20 holds 21..=23, 22 listed; 30 holds 31..=32 (31 was
        // marked processed).
        let (three, two) = (group(3), group(2));
        entries.retain(|(id, _)| !(20..=23).contains(&id.seq) && !(30..=32).contains(&id.seq));
        entries.extend([
            (at(20), &three[..]),
            (at(30), &two[..]),
            (at(31), OUTBOX_PROCESSED),
        ]);
        put(&store, &entries);
        // In a table, where compactions see it.
        store.outbox.rotate_memtable_and_wait().unwrap();
        frontier.set(&FrontierRecord {
            next: 101,
            base: 101,
            behind: vec![(3, 60)],
            parked: vec![at(7), at(22)],
        });
        store.compact_outbox().unwrap();
        let left: Vec<u64> = store
            .outbox_entries(3..4, None)
            .unwrap()
            .iter()
            .filter_map(|(key, _)| OutboxId::of_key(key).map(|id| id.seq))
            .collect();
        let mut want = vec![7, 20];
        want.extend(60..=100);
        assert_eq!(left, want);
    }

    /// The entry that holds a message: its own, or its group's past the marks of the
    /// group's messages processed; none once it is processed, or if nothing numbers it.
    #[test]
    fn each_message_is_found_in_the_entry_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Arc::new(Frontier::default()));
        let three = group(3);
        put(
            &store,
            &[
                (at(10), &[1, 2][..]),
                (at(20), &three[..]),
                (at(21), OUTBOX_PROCESSED),
                (at(22), OUTBOX_PROCESSED),
                (at(30), OUTBOX_PROCESSED),
            ],
        );
        let found = |seq| {
            store
                .outbox_entry(at(seq))
                .unwrap()
                .and_then(|(key, _)| OutboxId::of_key(&key))
                .map(|id| id.seq)
        };
        assert_eq!(found(10), Some(10));
        assert_eq!(found(23), Some(20));
        for processed_or_unknown in [11, 20, 21, 22, 24, 30, 31, 5] {
            assert_eq!(found(processed_or_unknown), None, "{processed_or_unknown}");
        }
        // Another shard's entries are never taken for this one's.
        assert_eq!(
            store.outbox_entry(OutboxId { shard: 4, seq: 1 }).unwrap(),
            None
        );
    }
}
