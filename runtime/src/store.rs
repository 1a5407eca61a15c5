//! The embedded LSM store: the only module that names fjall.
//!
//! Every call here may block (fsync, write stalls, compaction back-pressure), so callers run
//! it on the committer thread, a loader thread ([`crate::loader`]) or in `spawn_blocking`,
//! never on a Tokio worker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::codec::STORE_FORMAT;
use crate::error::{Error, StorageError};
use crate::metrics::JournalPersists;

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
    /// Actor records: `shard · type · key` → state record.
    State,
    /// Durable messages not yet processed: `sequence` → envelope.
    Outbox,
    /// Timers ordered by due time: `due · state key · name` → timer record.
    Timers,
}

/// One write of a commit batch: a value, or `None` to delete the key.
pub(crate) struct Write<'a> {
    pub(crate) space: Space,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
}

/// A key and value read from the store.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// The opened store with its keyspaces.
#[derive(Clone)]
pub(crate) struct Store {
    db: Database,
    state: Keyspace,
    outbox: Keyspace,
    timers: Keyspace,
    durability: Durability,
    /// Set when a batch reached the memtables but its commit failed before its sync: reads
    /// would see writes that are not durable, so the next load syncs first (see
    /// [`Store::get_state`]).
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

fn storage(e: fjall::Error) -> StorageError {
    StorageError::new(e)
}

impl Store {
    /// Opens (or creates) the store at `path` and checks its format version.
    ///
    /// fjall panics on some corrupted files (an assertion in its journal reader): such a
    /// panic is turned into an error naming the path, like any other refusal to open.
    /// Every journal persist made through the store is counted in `persists`.
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        persists: Arc<JournalPersists>,
    ) -> Result<Store, Error> {
        let opened = std::panic::catch_unwind(|| Self::open_unguarded(path, durability, persists));
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
        persists: Arc<JournalPersists>,
    ) -> Result<Store, Error> {
        let at =
            |e: fjall::Error| StorageError::new(format!("cannot open {}: {e}", path.display()));
        let db = Database::builder(path)
            // Gears syncs the journal itself, once per commit batch (group commit).
            .manual_journal_persist(true)
            .open()
            .map_err(at)?;
        let state = db
            .keyspace("state", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let outbox = db
            .keyspace("outbox", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let timers = db
            .keyspace("timers", KeyspaceCreateOptions::default)
            .map_err(at)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(at)?;
        match meta.get(META_FORMAT_KEY).map_err(at)? {
            Some(found) => {
                let found = <[u8; 4]>::try_from(&*found)
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found != STORE_FORMAT {
                    return Err(Error::IncompatibleStore {
                        path: path.display().to_string(),
                        found,
                        supported: STORE_FORMAT,
                    });
                }
            }
            None => {
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(&meta, META_FORMAT_KEY, STORE_FORMAT.to_be_bytes().to_vec());
                batch.commit().map_err(at)?;
            }
        }
        Ok(Store {
            db,
            state,
            outbox,
            timers,
            durability,
            unsynced: Arc::new(Unsynced::default()),
            persists,
        })
    }

    /// Reads an actor's state record.
    ///
    /// After a commit failed between its write and its sync, the memtables hold writes that
    /// were reported failed and are not durable; an actor reloaded then must not answer from
    /// them (a crash would take them back), so the journal is synced first. If that sync
    /// fails too (a real I/O failure poisons the store), the load fails.
    pub(crate) fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.settle_unsynced()?;
        Ok(self.state.get(key).map_err(storage)?.map(|v| v.to_vec()))
    }

    /// Whether the outbox entry `key` is still waiting for its target (reads the store as
    /// [`Store::get_state`] does: after syncing writes left unsynced by a failed commit).
    pub(crate) fn outbox_contains(&self, key: &[u8]) -> Result<bool, StorageError> {
        self.settle_unsynced()?;
        self.outbox.contains_key(key).map_err(storage)
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

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::State => &self.state,
            Space::Outbox => &self.outbox,
            Space::Timers => &self.timers,
        }
    }

    /// Up to `limit` state keys of actors of type `actor` with a stored record, in storage
    /// order (shard, then key), after the state key `after` (if given). Batches still being
    /// synced may be listed (as with any read of the store).
    ///
    /// Keys are shard-first, so this walks the type's prefix in each shard from `after`'s.
    pub(crate) fn state_keys(
        &self,
        actor: &str,
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
        for shard in first_shard..crate::codec::SHARDS {
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

    /// Every outbox entry, in sequence order (read once at startup).
    pub(crate) fn outbox_entries(&self) -> Result<Vec<Entry>, StorageError> {
        collect(self.outbox.iter(), usize::MAX)
    }

    /// Up to `limit` timers due at or before `now_ms`, earliest first, after the key `after`
    /// (if given).
    pub(crate) fn due_timers(
        &self,
        after: Option<&[u8]>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let end = now_ms.saturating_add(1).to_be_bytes().to_vec();
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
        collect(self.timers.range((start, Bound::Excluded(end))), limit)
    }

    /// The due time of the earliest timer due after `now_ms`.
    pub(crate) fn next_timer_after(&self, now_ms: u64) -> Result<Option<u64>, StorageError> {
        let start = now_ms.saturating_add(1).to_be_bytes();
        let first = collect(self.timers.range(start.as_slice()..), 1)?;
        Ok(first
            .first()
            .and_then(|(key, _)| crate::codec::timer_due(key)))
    }

    /// Writes one atomic batch (across keyspaces) to the journal and the memtables, without
    /// syncing: [`Store::sync_batch`] makes it durable (one journal sync for the whole batch).
    ///
    /// Keys must have been validated: fjall panics on empty keys in a batch.
    pub(crate) fn write_batch<'a>(
        &self,
        writes: impl Iterator<Item = Write<'a>>,
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
    pub(crate) fn sync_batch(&self) -> Result<(), StorageError> {
        let mode = match self.durability {
            Durability::Sync => PersistMode::SyncAll,
            Durability::Buffered => PersistMode::Buffer,
        };
        self.persist(mode)
    }

    /// Records that a written batch failed before it was synced (see [`Store::get_state`]).
    pub(crate) fn mark_unsynced(&self) {
        self.unsynced.failures.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands every batch written so far to the OS, without fsync (a test seam's failed sync).
    pub(crate) fn flush_to_os(&self) -> Result<(), StorageError> {
        self.persist(PersistMode::Buffer)
    }

    /// Syncs the journal to disk (used at shutdown).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.persist(PersistMode::SyncAll)
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
