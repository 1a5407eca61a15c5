//! Upgrades of the store's layout, run when a store of an older format is opened.
//!
//! Format 1 keyed the outbox by a global sequence and timers by due time first, so a shard's
//! messages and timers were not a range that could move. Format 2 keys both by shard first,
//! in new keyspaces. The upgrade copies every entry into its format-2 keyspace in batches,
//! then records format 2 in one synced write, then drops the old keyspaces. A crash before
//! the format is recorded leaves format 1 in place, and the next open copies everything
//! again (the same keys: the copy is idempotent); a crash after it leaves old keyspaces that
//! the next open drops.

use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::codec::{OutboxRecord, decode_envelope, outbox_seq_v1, shard_of, timer_key_from_v1};
use crate::error::StorageError;

use super::{META_FORMAT_KEY, storage};

/// The outbox keyspace of format 2: `shard · sequence`.
pub(super) const OUTBOX: &str = "outbox_v2";
/// The timers keyspace of format 2: `shard · due · state key · name`.
pub(super) const TIMERS: &str = "timers_v2";
/// The keyspaces of format 1 that format 2 replaces.
const FORMAT_1: [&str; 2] = ["outbox", "timers"];

/// Entries copied per synced batch.
const BATCH: usize = 4096;

/// A test seam: called after each batch an upgrade wrote, with the number written so far
/// (a test kills its process there to check that an interrupted upgrade resumes).
#[doc(hidden)]
pub type UpgradeHook = Arc<dyn Fn(usize) + Send + Sync>;

/// The keyspaces an upgrade reads and writes.
pub(super) struct Layout<'a> {
    pub(super) db: &'a Database,
    pub(super) meta: &'a Keyspace,
    pub(super) outbox: &'a Keyspace,
    pub(super) timers: &'a Keyspace,
}

impl Layout<'_> {
    /// Records the store's format, synced.
    pub(super) fn set_format(&self, format: u32) -> Result<(), fjall::Error> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(self.meta, META_FORMAT_KEY, format.to_be_bytes().to_vec());
        batch.commit()
    }

    /// Upgrades a store of format 1 to format 2.
    pub(super) fn upgrade_format_1(&self, hook: Option<&UpgradeHook>) -> Result<(), StorageError> {
        let open = |name| {
            self.db
                .keyspace(name, KeyspaceCreateOptions::default)
                .map_err(storage)
        };
        let mut batches = 0;
        // Format 1 did not record an entry's sender: it moves to its target's shard, which
        // is where an entry sent from outside any actor belongs too.
        self.copy(
            &open(FORMAT_1[0])?,
            self.outbox,
            &mut batches,
            hook,
            |key, value| {
                let seq = outbox_seq_v1(key).ok_or_else(|| {
                    StorageError::new(format!("an outbox key of {} bytes", key.len()))
                })?;
                // An undecodable entry is kept (in shard 0) as it was: the dispatcher reports it.
                let shard = decode_envelope::<OutboxRecord>(value)
                    .map_or(0, |r| shard_of(&r.target.actor, &r.target.key));
                Ok(crate::codec::OutboxId { seq, shard }.key().to_vec())
            },
        )?;
        self.copy(
            &open(FORMAT_1[1])?,
            self.timers,
            &mut batches,
            hook,
            |key, _| {
                timer_key_from_v1(key).ok_or_else(|| {
                    StorageError::new(format!(
                        "a timer key that format 1 cannot have written: {key:?}"
                    ))
                })
            },
        )?;
        self.set_format(2).map_err(storage)?;
        self.drop_format_1().map_err(storage)
    }

    /// Drops the keyspaces of format 1, if an upgrade left them.
    pub(super) fn drop_format_1(&self) -> Result<(), fjall::Error> {
        for name in FORMAT_1 {
            if self.db.keyspace_exists(name) {
                let old = self.db.keyspace(name, KeyspaceCreateOptions::default)?;
                self.db.delete_keyspace(old)?;
            }
        }
        Ok(())
    }

    /// Copies every entry of `from` into `to` under the key `new_key` gives it, in synced
    /// batches.
    fn copy(
        &self,
        from: &Keyspace,
        to: &Keyspace,
        batches: &mut usize,
        hook: Option<&UpgradeHook>,
        new_key: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, StorageError>,
    ) -> Result<(), StorageError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        let mut pending = 0;
        let mut commit = |batch: fjall::OwnedWriteBatch| -> Result<(), StorageError> {
            batch.commit().map_err(storage)?;
            *batches += 1;
            if let Some(hook) = hook {
                hook(*batches);
            }
            Ok(())
        };
        for guard in from.iter() {
            let (key, value) = guard.into_inner().map_err(storage)?;
            batch.insert(to, new_key(&key, &value)?, value.to_vec());
            pending += 1;
            if pending == BATCH {
                let full = std::mem::replace(
                    &mut batch,
                    self.db.batch().durability(Some(PersistMode::SyncAll)),
                );
                commit(full)?;
                pending = 0;
            }
        }
        if pending > 0 {
            commit(batch)?;
        }
        Ok(())
    }
}
