//! The outbox's counters, shared by every turn and outside sender: the next sequence number
//! and the bound on entries written and not yet processed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::codec::OutboxId;
use crate::error::{Failure, Overload};

/// The outbox's sequence numbers: each is handed out once in a run, in increasing order.
///
/// A delivered entry's `(shard, number)` identifies it to its target for the idempotency
/// retention (a message delivered to another shard is kept there under it), so no two entries
/// of a shard may ever have the same number, whichever node gave it. On a cluster node the
/// committer records with each log entry that holds a shard's outbox entries how far the
/// numbers went ([`Numbers::issued`], under [`crate::codec::outbox_mark_key`]), and a node
/// that takes the shard numbers after that record ([`Numbers::skip_to`]) before it serves it.
pub(crate) struct Numbers(AtomicU64);

impl Numbers {
    /// Every number handed out so far is below this one.
    pub(crate) fn issued(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Hands out numbers from `next` on, if they are not already past it.
    pub(crate) fn skip_to(&self, next: u64) {
        self.0.fetch_max(next, Ordering::AcqRel);
    }

    /// The first of `n` consecutive numbers.
    fn take(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::AcqRel)
    }
}

/// The outbox's counters, shared by every turn: sequence numbers and the bounded backlog.
pub(crate) struct Backlog {
    next: Arc<Numbers>,
    backlog: AtomicUsize,
    limit: usize,
    /// Shards a cluster node took whose entries are not read yet: each counts as one entry
    /// not yet processed, so "the outbox is empty" is never said before they are read.
    loading: AtomicUsize,
    /// Woken when the backlog falls to half the limit or below (see [`Self::backed_up`]).
    drained: tokio::sync::Notify,
    /// Whether numbers handed out are tracked until their entries reach the dispatcher
    /// (or are known never to be written): on a node that keeps the outbox frontier.
    track: AtomicBool,
    /// The numbers handed out whose entries have not reached the dispatcher yet and may
    /// still be written: the frontier stays below them ([`Backlog::floor`]).
    pending: Mutex<BTreeSet<u64>>,
}

impl Backlog {
    pub(crate) fn new(next: u64, backlog: usize, limit: usize) -> Backlog {
        Backlog {
            next: Arc::new(Numbers(AtomicU64::new(next))),
            backlog: AtomicUsize::new(backlog),
            limit,
            loading: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            track: AtomicBool::new(false),
            pending: Mutex::new(BTreeSet::new()),
        }
    }

    /// Tracks the numbers handed out from now on (see [`Backlog::floor`]).
    pub(crate) fn track(&self) {
        self.track.store(true, Ordering::Release);
    }

    /// The lowest number whose entry may still reach the dispatcher: handed out, and neither
    /// handed over ([`Backlog::settled`]) nor known never to be written. Numbers handed out
    /// later are above it.
    pub(crate) fn floor(&self) -> u64 {
        // Read before the set: a number handed out in between is at or above it.
        let issued = self.next.issued();
        self.pending.lock().first().copied().unwrap_or(issued)
    }

    /// The entries stored as `ids` ([`OutboxRecord::stored_as`]: a group's messages by the
    /// group's id) reached the dispatcher, or will never be written.
    ///
    /// [`OutboxRecord::stored_as`]: crate::codec::OutboxRecord::stored_as
    pub(crate) fn settled(&self, ids: impl IntoIterator<Item = OutboxId>) {
        if self.track.load(Ordering::Acquire) {
            let mut pending = self.pending.lock();
            for id in ids {
                pending.remove(&id.seq);
            }
        }
    }

    /// A new entry of `shard` (the sender's shard; the target's for a send from outside any
    /// actor), numbered after every entry so far: entries sort in sending order.
    pub(crate) fn next_id(&self, shard: u16) -> OutboxId {
        self.next_ids(shard, 1)
    }

    /// The first of `n` consecutive new numbers of `shard` (an entry and the messages of its
    /// group); only the first is tracked (the group's messages are handed over with it).
    pub(crate) fn next_ids(&self, shard: u16, n: u64) -> OutboxId {
        if self.track.load(Ordering::Acquire) {
            // Taken under the lock, so `floor` never misses a number handed out before it.
            let mut pending = self.pending.lock();
            let seq = self.next.take(n);
            pending.insert(seq);
            return OutboxId { seq, shard };
        }
        OutboxId {
            seq: self.next.take(n),
            shard,
        }
    }

    /// Every number handed out so far is below this one.
    pub(crate) fn issued(&self) -> u64 {
        self.next.issued()
    }

    /// The sequence numbers it hands out.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn numbers(&self) -> Arc<Numbers> {
        self.next.clone()
    }

    /// Takes `n` places in the backlog, or refuses: the outbox is bounded, and a turn that
    /// would overflow it fails with `Overloaded` (and is rolled back).
    pub(crate) fn reserve(&self, n: usize) -> Result<(), Failure> {
        let before = self.backlog.fetch_add(n, Ordering::AcqRel);
        if before + n > self.limit {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            return Err(Failure::Overloaded(Overload::Outbox));
        }
        Ok(())
    }

    /// Whether more than half of the outbox is taken: calls from outside wait for deliveries
    /// then (the caller of a handle), so the messages already sent are processed before more
    /// work is accepted, instead of the outbox filling up and refusing turns.
    pub(crate) fn backed_up(&self) -> bool {
        self.backlog() > self.limit / 2
    }

    /// Resolves once the backlog falls to half the limit or below after this was called
    /// (poll or [`enable`](tokio::sync::futures::Notified::enable) it before checking
    /// [`backed_up`](Self::backed_up), so a fall in between is not missed).
    pub(crate) fn drained(&self) -> tokio::sync::futures::Notified<'_> {
        self.drained.notified()
    }

    /// Returns `n` places: their entries were processed, dropped, or never written.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let before = self.backlog.fetch_sub(n, Ordering::AcqRel);
            self.wake_if_drained(before + self.loading.load(Ordering::Acquire), n);
        }
    }

    /// Wakes the callers waiting for deliveries if taking `n` from a backlog of `before`
    /// brought it to half the limit or below.
    fn wake_if_drained(&self, before: usize, n: usize) {
        let half = self.limit / 2;
        if before > half && before.saturating_sub(n) <= half {
            self.drained.notify_waiters();
        }
    }

    /// Counts `n` more entries not yet processed, numbered up to `last_seq` (a shard this
    /// node took from another): new entries are numbered after them.
    pub(crate) fn adopt(&self, n: usize, last_seq: u64) {
        self.backlog.fetch_add(n, Ordering::AcqRel);
        self.loaded();
        self.next.skip_to(last_seq.saturating_add(1));
    }

    /// A shard was taken: its entries will be read (then [`adopt`](Self::adopt)ed, or
    /// [`loaded`](Self::loaded) if they cannot be).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn loading(&self) {
        self.loading.fetch_add(1, Ordering::AcqRel);
    }

    /// A taken shard's entries were read (or will not be).
    pub(crate) fn loaded(&self) {
        if let Ok(loading) = self
            .loading
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        {
            self.wake_if_drained(self.backlog.load(Ordering::Acquire) + loading, 1);
        }
    }

    /// Entries durable (or being written) and not yet processed, counting a taken shard
    /// whose entries are not read yet as one.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire) + self.loading.load(Ordering::Acquire)
    }
}
