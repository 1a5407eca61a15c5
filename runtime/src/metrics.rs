//! Runtime counters, and the [`Stats`] snapshot users read with `Runtime::stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Journal persists the store really performed, by what they asked of the OS. Counted by the
/// store where it chooses the persist mode, so a test can tell an fsync from a flush (the
/// SIGKILL tests cannot: the page cache survives a killed process).
#[derive(Default)]
pub(crate) struct JournalPersists {
    /// Persists that fsynced the journal to disk.
    pub(crate) fsyncs: AtomicU64,
    /// Persists that only handed the journal to the OS (no fsync).
    pub(crate) flushes: AtomicU64,
}

/// Live counters of one runtime. Relaxed atomics: they are statistics, not synchronisation.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) activations: AtomicU64,
    pub(crate) passivations: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) timer_index_writes: AtomicU64,
    pub(crate) max_batch: AtomicU64,
    pub(crate) sync_micros: AtomicU64,
    pub(crate) sends: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) kept_expired: AtomicU64,
    pub(crate) routed_requests: AtomicU64,
    pub(crate) routed_served: AtomicU64,
    pub(crate) snapshots_written: AtomicU64,
    pub(crate) frontier_writes: AtomicU64,
    pub(crate) snapshots_loaded: AtomicU64,
    pub(crate) catch_ups: AtomicU64,
    /// Shared with the store, which counts its journal persists itself.
    pub(crate) journal: Arc<JournalPersists>,
}

/// A snapshot of a runtime's counters since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Activations currently in memory.
    pub live_activations: u64,
    /// Activations created (state loaded or defaulted).
    pub activations: u64,
    /// Activations passivated (idle timeout or the live cap).
    pub passivations: u64,
    /// Handler turns run.
    pub turns: u64,
    /// Handler turns that panicked.
    pub panics: u64,
    /// Calls refused with `Overloaded`.
    pub rejected: u64,
    /// Commit batches written (each is one atomic fjall batch).
    pub commit_batches: u64,
    /// Commit batches that failed.
    pub failed_batches: u64,
    /// Journal syncs: one per batch that reached the store (an fsync in `Durability::Sync`,
    /// a flush to the OS in `Durability::Buffered`).
    pub journal_syncs: u64,
    /// Journal persists that were an fsync (the journal is on disk, safe from power loss):
    /// one per commit batch in `Durability::Sync`, and the one at shutdown in either mode.
    pub journal_fsyncs: u64,
    /// Journal persists that only handed the journal to the OS (safe from a crash of the
    /// process, not of the machine): one per commit batch in `Durability::Buffered`.
    pub journal_flushes: u64,
    /// Keys written to the store.
    pub writes: u64,
    /// Writes absorbed because a later turn in the same batch wrote the same key.
    pub coalesced_writes: u64,
    /// Writes submitted only to remove or move an actor's entry in the timer index once it
    /// came due with no timer behind it (the record, which notes the entry, the old entry's
    /// deletion and the new entry if it moves):
    /// upkeep that changes no state, after the turns that cancelled the timers (see
    /// `ctx.cancel_timer`). Counted before coalescing, like `writes + coalesced_writes`:
    /// [`Stats::turn_writes`] takes them off.
    pub timer_index_writes: u64,
    /// Largest batch seen, in commit requests (one per turn or outside send).
    pub max_batch: u64,
    /// Total time spent writing and syncing batches, in microseconds.
    pub commit_micros: u64,
    /// Messages written to the outbox (sends, subscription events and requests).
    pub sends: u64,
    /// Outbox messages processed by their target (their removal committed with its turn).
    pub delivered: u64,
    /// Messages (sends and timer firings) parked in this run: undeliverable (unknown actor
    /// type or handler, undecodable, invalid key) or failing every attempt. Each is logged at
    /// error level, listed by [`Runtime::dead_letters`](crate::Runtime::dead_letters), and
    /// left in the store, to be tried again at the next start unless discarded.
    pub dead_letters: u64,
    /// Delivered sends and timer firings whose handler returned `Err`: each was consumed
    /// (its turn rolled back, the message removed, never retried) and logged at warn level.
    pub handler_errors: u64,
    /// Outbox messages durable and not yet processed.
    pub outbox_backlog: u64,
    /// Timer firings processed.
    pub timers_fired: u64,
    /// Events published by committed turns.
    pub events: u64,
    /// Outcomes of idempotent requests removed after their retention
    /// ([`Builder::idempotency_retention`](crate::Builder::idempotency_retention)).
    pub idempotency_expired: u64,
    /// Shards this node serves now: all of them on a single node; its share in a cluster.
    pub shards_served: u64,
    /// Calls sent to the node that serves their actor (in a cluster), retries included.
    pub routed_requests: u64,
    /// Calls other nodes routed here that ran here (in a cluster).
    pub routed_served: u64,
    /// Snapshots of shards this node wrote (in a cluster), after which the log entries they
    /// hold were removed.
    pub snapshots_written: u64,
    /// Writes of the outbox frontier (on a single node, about every 100 ms while messages
    /// flow), after which targets forget the messages it passed and the store drops them:
    /// upkeep that changes no actor, counted before coalescing like `timer_index_writes`
    /// ([`Stats::turn_writes`] takes them off).
    pub frontier_writes: u64,
    /// Snapshots this node loaded to take a shard whose log it lacked entries of (in a
    /// cluster).
    pub snapshots_loaded: u64,
    /// Catch-ups of this node's store with a shard's log, one per shard taken (in a
    /// cluster): more than the shards a node was given means shards went back and forth.
    pub catch_ups: u64,
}

impl Stats {
    /// Keys the turns (and sends from outside) wrote, before coalescing:
    /// `writes + coalesced_writes - timer_index_writes - frontier_writes`. What an
    /// application's own work costs the store; the timer index upkeep and the outbox
    /// frontier, which change no actor, are left out.
    pub fn turn_writes(&self) -> u64 {
        (self.writes + self.coalesced_writes)
            .saturating_sub(self.timer_index_writes + self.frontier_writes)
    }
}

impl Metrics {
    pub(crate) fn snapshot(&self, live: u64, outbox_backlog: u64, shards_served: u64) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            live_activations: live,
            activations: get(&self.activations),
            passivations: get(&self.passivations),
            turns: get(&self.turns),
            panics: get(&self.panics),
            rejected: get(&self.rejected),
            commit_batches: get(&self.batches),
            failed_batches: get(&self.failed_batches),
            journal_syncs: get(&self.syncs),
            journal_fsyncs: get(&self.journal.fsyncs),
            journal_flushes: get(&self.journal.flushes),
            writes: get(&self.writes),
            coalesced_writes: get(&self.coalesced),
            timer_index_writes: get(&self.timer_index_writes),
            max_batch: get(&self.max_batch),
            commit_micros: get(&self.sync_micros),
            sends: get(&self.sends),
            delivered: get(&self.delivered),
            dead_letters: get(&self.dead_letters),
            handler_errors: get(&self.handler_errors),
            outbox_backlog,
            timers_fired: get(&self.timers_fired),
            events: get(&self.events),
            idempotency_expired: get(&self.kept_expired),
            shards_served,
            routed_requests: get(&self.routed_requests),
            routed_served: get(&self.routed_served),
            snapshots_written: get(&self.snapshots_written),
            frontier_writes: get(&self.frontier_writes),
            snapshots_loaded: get(&self.snapshots_loaded),
            catch_ups: get(&self.catch_ups),
        }
    }
}
