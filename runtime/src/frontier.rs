//! The outbox frontier: per shard, the sequence number below which every outbox entry was
//! processed, as last made durable.
//!
//! A delivered entry is not deleted by its target's turn: the target records the entry's id
//! in its own record (`ActorMeta::processed`, written by the turn anyway), and that record is
//! what makes the processing exactly-once (a delivery whose id the target recorded is not
//! processed again). The dispatcher knows which entries are done; every so often the host
//! writes how far each shard's entries are all done (the frontier) in one small record. The
//! next start reads the outbox of each shard from its frontier on; a compaction filter drops
//! the entries below it; and a target forgets the ids below it at its next write. So a
//! message costs its sender one write and its target none of its own, instead of a write
//! and a deletion.
//!
//! Parked entries (dead letters) below a shard's frontier are listed in the record, so they
//! are delivered again at the next start and no target forgets them.
//!
//! The messages one turn sends share one entry (a group, [`crate::codec::encode_group`]),
//! numbered after it. The frontier stops at a group while any of its messages is held, so a
//! group is read whole or not at all (a listed parked message of a group passed is read from
//! it alone). A target that cannot record a message (its record lists as many as it may, or
//! it was deleted) writes a processed mark under the message's number instead of deleting the
//! entry it may share; the frontier passes marks as it passes entries.
//!
//! Only a node that serves every shard uses it (a single node). On a cluster node the
//! target's turn deletes the entry as before, and the frontier stays at zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use foldhash::HashSet;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::codec::{OutboxId, SHARDS, decode_envelope, encode_envelope};

/// The key of the frontier record in the store's metadata.
pub(crate) const FRONTIER_KEY: &[u8] = b"outbox_frontier";

/// Most parked entries listed below their shard's frontier; a shard's frontier stops at the
/// next one.
pub(crate) const MAX_PARKED_LISTED: usize = 1024;

/// What the store keeps of the frontier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FrontierRecord {
    /// Every outbox number handed out so far is below it (the next start numbers after it).
    pub(crate) next: u64,
    /// The frontier of every shard not listed in `behind`.
    pub(crate) base: u64,
    /// Shards whose frontier is below `base`, with their frontier, in shard order.
    pub(crate) behind: Vec<(u16, u64)>,
    /// Parked entries below their shard's frontier: not processed, delivered again at the
    /// next start.
    pub(crate) parked: Vec<OutboxId>,
}

impl FrontierRecord {
    /// The frontier of `shard`.
    pub(crate) fn of(&self, shard: u16) -> u64 {
        match self.behind.binary_search_by_key(&shard, |(s, _)| *s) {
            Ok(at) => self.behind[at].1,
            Err(_) => self.base,
        }
    }

    /// Its stored bytes: `[1][postcard]` (the versioned envelope of outbox entries).
    pub(crate) fn encode(&self) -> Result<Arc<[u8]>, String> {
        encode_envelope(self)
    }

    /// Reads stored bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<FrontierRecord, String> {
        decode_envelope(bytes).map_err(|e| format!("bad outbox frontier: {e}"))
    }
}

/// The durable frontier, as every turn and the store's compaction filter read it.
pub(crate) struct Frontier {
    below: Box<[AtomicU64]>,
    /// `parked` is not empty.
    any_parked: AtomicBool,
    parked: RwLock<HashSet<OutboxId>>,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier {
            below: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            any_parked: AtomicBool::new(false),
            parked: RwLock::new(HashSet::default()),
        }
    }
}

impl Frontier {
    /// Whether entry `id` was processed and will never be delivered again: a target may
    /// forget it, and the store may drop it.
    pub(crate) fn passed(&self, id: OutboxId) -> bool {
        id.seq < self.of(id.shard) && !self.lists(id)
    }

    /// Whether any parked message is listed.
    pub(crate) fn any_parked(&self) -> bool {
        self.any_parked.load(Ordering::Acquire)
    }

    /// Whether message `id` is listed as parked (not processed, below its shard's frontier).
    pub(crate) fn lists(&self, id: OutboxId) -> bool {
        self.any_parked() && self.parked.read().contains(&id)
    }

    /// The frontier of `shard`.
    pub(crate) fn of(&self, shard: u16) -> u64 {
        self.below[usize::from(shard) % self.below.len()].load(Ordering::Acquire)
    }

    /// Takes on a record that is durable. Parked entries are listed before any shard's
    /// frontier passes them, so no reader ever sees one passed.
    pub(crate) fn set(&self, record: &FrontierRecord) {
        {
            let mut parked = self.parked.write();
            parked.extend(record.parked.iter().copied());
            self.any_parked.store(!parked.is_empty(), Ordering::Release);
        }
        for shard in 0..SHARDS {
            self.below[usize::from(shard)].fetch_max(record.of(shard), Ordering::AcqRel);
        }
        let mut parked = self.parked.write();
        let listed: HashSet<OutboxId> = record.parked.iter().copied().collect();
        parked.retain(|id| listed.contains(id));
        self.any_parked.store(!parked.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden bytes of a frontier record (`GEARS_WRITE_FIXTURES=1` writes them once;
    /// after that they must never change).
    #[test]
    fn the_stored_format_matches_its_golden_fixture() {
        let frontier = FrontierRecord {
            next: 1_764_000_000_000_000_900,
            base: 1_764_000_000_000_000_800,
            behind: vec![(7, 1_764_000_000_000_000_002)],
            parked: vec![OutboxId {
                shard: 9,
                seq: 1_764_000_000_000_000_003,
            }],
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/outbox_frontier_v1.bin");
        let bytes = frontier.encode().unwrap();
        if std::env::var_os("GEARS_WRITE_FIXTURES").is_some() && !path.exists() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap();
        assert_eq!(golden[..], bytes[..], "the frontier's format changed");
        assert_eq!(FrontierRecord::decode(&golden).unwrap(), frontier);
    }

    #[test]
    fn a_record_reads_back_and_names_each_shards_frontier() {
        let record = FrontierRecord {
            next: 900,
            base: 800,
            behind: vec![(3, 10), (200, 799)],
            parked: vec![OutboxId { shard: 4, seq: 7 }],
        };
        let back = FrontierRecord::decode(&record.encode().unwrap()).unwrap();
        assert_eq!(back, record);
        assert_eq!((back.of(3), back.of(4), back.of(200)), (10, 800, 799));
        assert!(FrontierRecord::decode(&[2, 0]).is_err());
        assert!(FrontierRecord::decode(&[]).is_err());

        let frontier = Frontier::default();
        frontier.set(&record);
        assert!(frontier.passed(OutboxId { shard: 3, seq: 9 }));
        assert!(!frontier.passed(OutboxId { shard: 3, seq: 10 }));
        // Parked below its shard's frontier: not passed until no record lists it.
        assert!(!frontier.passed(OutboxId { shard: 4, seq: 7 }));
        assert!(frontier.passed(OutboxId { shard: 4, seq: 8 }));
        frontier.set(&FrontierRecord {
            parked: Vec::new(),
            ..record
        });
        assert!(frontier.passed(OutboxId { shard: 4, seq: 7 }));
    }
}
