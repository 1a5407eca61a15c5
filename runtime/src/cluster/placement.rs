//! [`ClusterPlacement`]: the runtime's [`Placement`] on a cluster node, from the shard leases
//! the node holds. Read on every call (atomics only); written by the node's control task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::codec::SHARDS;
use crate::placement::{Place, Placement};

/// Which shards this node serves, under which epochs, until when.
pub struct ClusterPlacement {
    /// The origin of the deadlines (monotonic: a paused process resumes past them).
    started: Instant,
    slots: Box<[Slot]>,
}

#[derive(Default)]
struct Slot {
    /// The lease revision this node holds the shard under; 0 when it does not.
    epoch: AtomicU64,
    /// Milliseconds after `started` until which the shard may be served.
    serve_until: AtomicU64,
    /// Being handed over: new calls are refused, turns already running may still commit.
    draining: AtomicBool,
    /// Where the shard's calls should go when not here: the owner rendezvous hashing picks.
    elsewhere: RwLock<Option<Arc<str>>>,
}

impl std::fmt::Debug for ClusterPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlacement")
            .field("served", &self.served().len())
            .finish_non_exhaustive()
    }
}

impl ClusterPlacement {
    pub(crate) fn new() -> ClusterPlacement {
        ClusterPlacement {
            started: Instant::now(),
            slots: (0..SHARDS).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, shard: u16) -> Option<&Slot> {
        self.slots.get(usize::from(shard))
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    fn live(&self, slot: &Slot) -> Option<u64> {
        let epoch = slot.epoch.load(Ordering::Acquire);
        (epoch != 0 && self.ms(Instant::now()) < slot.serve_until.load(Ordering::Acquire))
            .then_some(epoch)
    }

    /// Serves `shard` under `epoch` until `until`.
    pub(crate) fn grant(&self, shard: u16, epoch: u64, until: Instant) {
        if let Some(slot) = self.slot(shard) {
            slot.draining.store(false, Ordering::Release);
            slot.serve_until.store(self.ms(until), Ordering::Release);
            slot.epoch.store(epoch, Ordering::Release);
        }
    }

    /// Moves the deadline of a shard served under `epoch` to `until` (a renewal).
    pub(crate) fn extend(&self, shard: u16, epoch: u64, until: Instant) {
        if let Some(slot) = self.slot(shard)
            && slot.epoch.load(Ordering::Acquire) == epoch
        {
            slot.serve_until.fetch_max(self.ms(until), Ordering::AcqRel);
        }
    }

    /// Refuses new calls for `shard`, while turns already running may still commit.
    pub(crate) fn drain(&self, shard: u16) {
        if let Some(slot) = self.slot(shard) {
            slot.draining.store(true, Ordering::Release);
        }
    }

    /// Stops serving `shard`: nothing of it commits any more.
    pub(crate) fn revoke(&self, shard: u16) {
        if let Some(slot) = self.slot(shard) {
            slot.epoch.store(0, Ordering::Release);
            slot.serve_until.store(0, Ordering::Release);
            slot.draining.store(false, Ordering::Release);
        }
    }

    /// Records which node should serve `shard` when this one does not.
    pub(crate) fn point_to(&self, shard: u16, owner: Option<Arc<str>>) {
        if let Some(slot) = self.slot(shard) {
            let mut elsewhere = slot.elsewhere.write();
            if elsewhere.as_deref() != owner.as_deref() {
                *elsewhere = owner;
            }
        }
    }

    /// The time left before `shard`'s deadline, if it is served here.
    pub fn serving_for(&self, shard: u16) -> Option<Duration> {
        let slot = self.slot(shard)?;
        self.live(slot)?;
        let left = slot
            .serve_until
            .load(Ordering::Acquire)
            .saturating_sub(self.ms(Instant::now()));
        Some(Duration::from_millis(left))
    }

    /// The shards this node serves now (not those being handed over).
    pub fn served(&self) -> Vec<u16> {
        (0..SHARDS)
            .filter(|&s| matches!(self.place(s), Place::Local { .. }))
            .collect()
    }
}

impl Placement for ClusterPlacement {
    fn place(&self, shard: u16) -> Place {
        let Some(slot) = self.slot(shard) else {
            return Place::Unavailable;
        };
        if self.live(slot).is_some() {
            if slot.draining.load(Ordering::Acquire) {
                return Place::Unavailable;
            }
            return Place::Local {
                epoch: slot.epoch.load(Ordering::Acquire),
            };
        }
        match &*slot.elsewhere.read() {
            Some(node) => Place::Remote(node.clone()),
            None => Place::Unavailable,
        }
    }

    fn holds(&self, shard: u16, epoch: u64) -> bool {
        self.slot(shard)
            .and_then(|slot| self.live(slot))
            .is_some_and(|e| e == epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_local_until_its_deadline_and_fenced_after() {
        let p = ClusterPlacement::new();
        assert_eq!(p.place(3), Place::Unavailable);
        p.point_to(3, Some("b".into()));
        assert_eq!(p.place(3), Place::Remote("b".into()));
        let now = Instant::now();
        p.grant(3, 7, now + Duration::from_secs(60));
        assert_eq!(p.place(3), Place::Local { epoch: 7 });
        assert!(p.holds(3, 7));
        assert!(!p.holds(3, 6));
        p.drain(3);
        assert_eq!(p.place(3), Place::Unavailable);
        assert!(
            p.holds(3, 7),
            "a draining shard's running turns still commit"
        );
        p.grant(3, 9, now);
        assert!(!p.holds(3, 9), "past its deadline a shard is not held");
        assert_eq!(p.place(3), Place::Remote("b".into()));
        p.grant(3, 9, now + Duration::from_secs(60));
        p.extend(3, 8, now + Duration::from_secs(600));
        assert!(p.serving_for(3).unwrap() <= Duration::from_secs(60));
        p.revoke(3);
        assert!(!p.holds(3, 9));
        assert_eq!(p.served(), Vec::<u16>::new());
    }
}
