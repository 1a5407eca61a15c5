//! The outbox: durable messages (sends, subscription events and requests) from committed
//! turns and outside senders to their targets.
//!
//! An entry is written in the same atomic batch as the sender's state and is handed to the
//! [`Dispatcher`] once that batch is durable. The dispatcher queues it on the target's
//! activation; the target's turn completes the entry in *its* batch, atomically with the
//! state change the message caused: on a single node it records the entry's id in its own
//! record (the entry stays until the frontier passes it, see [`crate::frontier`]), on a
//! cluster node it removes the entry. After a crash, whatever is left is delivered again,
//! and a target does not process again what it recorded; nothing that was processed is
//! processed twice.
//!
//! Per target, entries are queued in sequence order and mailboxes are FIFO, so messages from
//! one sender (and events of one publisher) are processed in order. A message whose turn
//! fails is retried after a backoff, behind messages queued meanwhile, and parked in the end,
//! by the policy timers share ([`crate::dead_letters`]); a message that cannot be delivered
//! at all (unknown actor type, undecodable message, invalid key) is parked at once. Parking
//! stops retrying it in this run and lists it as a dead letter, but leaves it in the outbox:
//! nothing is deleted that was not processed (or discarded by an operator), and the next
//! start (perhaps with the type registered or the bug fixed) tries again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use foldhash::HashMap;

use crate::codec::{ActorRef, OutboxId, OutboxRecord, OutboxValue, decode_outbox, outbox_messages};
use crate::dead_letters::{Next, Stored, after_failure, send_letter};
use crate::error::Failure;
use crate::frontier::{Frontier, FrontierRecord, MAX_PARKED_LISTED};
use crate::shared::{DoneFn, Shared};

/// Deliveries queued on activations at once, in all.
const MAX_INFLIGHT: usize = 8192;
/// Deliveries queued on one activation at once (its mailbox bounds it too).
const MAX_INFLIGHT_PER_TARGET: usize = 256;
/// Wait before retrying a target that was busy (full mailbox, not served here, stopping).
const BUSY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

struct Pending {
    record: OutboxRecord,
    /// `record.target`, shared with the dispatcher's maps: one allocation per entry.
    target: Arc<ActorRef>,
    /// Failed turns so far.
    attempts: u32,
    /// A turn on it failed with a storage error: its commit may still have reached the
    /// store, so the next turn checks that the entry still exists before running.
    verify: bool,
    /// Its shard was given up while it was in delivery: its outcome is dropped (the shard's
    /// new owner delivers it; a turn here cannot remove it any more).
    dropped: bool,
}

#[derive(Default)]
struct Target {
    /// Entries not yet queued on the activation, in sequence order.
    queue: VecDeque<OutboxId>,
    inflight: usize,
    /// Busy or failing: nothing is delivered before this.
    retry_at: Option<Instant>,
}

/// The dispatcher's state, owned by the host service (one message at a time).
#[derive(Default)]
pub(crate) struct Dispatcher {
    entries: HashMap<OutboxId, Pending>,
    targets: HashMap<Arc<ActorRef>, Target>,
    /// Targets that may have something to deliver now.
    ready: VecDeque<Arc<ActorRef>>,
    inflight: usize,
    /// Entries parked in this run and not handed back since: not processed, so the frontier
    /// lists the ones it passes. Each with the id of the entry it is stored in.
    parked: BTreeMap<OutboxId, OutboxId>,
    /// An entry was processed or parked since the frontier was last computed: only then may
    /// it have moved.
    pub(crate) progressed: bool,
}

impl Dispatcher {
    /// No entry waits or is in delivery (parked ones are not the dispatcher's).
    pub(crate) fn idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds durable entries (from a committed batch, read at startup, or read when a cluster
    /// node takes a shard). Returns how many of them it had already (a taken shard's entries
    /// read from the store include those its first turns committed meanwhile): those are not
    /// added twice, and the caller gives their places in the backlog back.
    pub(crate) fn add(
        &mut self,
        entries: impl IntoIterator<Item = (OutboxId, OutboxRecord)>,
    ) -> usize {
        let mut known = 0;
        for (seq, record) in entries {
            // A parked entry handed back (retried by an operator).
            self.parked.remove(&seq);
            match self.entries.get_mut(&seq) {
                Some(entry) if !entry.dropped => {
                    known += 1;
                    continue;
                }
                // Still in delivery from before its shard was dropped: its outcome counts
                // again (delivered twice it would be, were it queued too).
                Some(entry) => {
                    entry.dropped = false;
                    continue;
                }
                None => {}
            }
            let name = match self.targets.get_key_value(&record.target) {
                Some((name, _)) => name.clone(),
                None => Arc::new(record.target.clone()),
            };
            let target = self.targets.entry(name.clone()).or_default();
            // Entries of one sender arrive in order; across senders, keep sequence order.
            match target.queue.back() {
                Some(&last) if last > seq => {
                    let at = target.queue.partition_point(|&s| s < seq);
                    target.queue.insert(at, seq);
                }
                _ => target.queue.push_back(seq),
            }
            if target.queue.len() == 1 && target.retry_at.is_none() {
                self.ready.push_back(name.clone());
            }
            self.entries.insert(
                seq,
                Pending {
                    record,
                    target: name,
                    attempts: 0,
                    verify: false,
                    dropped: false,
                },
            );
        }
        known
    }

    /// Queues deliverable entries on their targets' activations. `done` makes the callback
    /// that reports a delivery's outcome back to [`Dispatcher::done`].
    pub(crate) fn dispatch(
        &mut self,
        shared: &std::sync::Arc<Shared>,
        done: &(dyn Fn(OutboxId) -> DoneFn + Send + Sync),
    ) {
        let now = Instant::now();
        let mut rounds = self.ready.len();
        while self.inflight < MAX_INFLIGHT && rounds > 0 {
            rounds -= 1;
            let Some(name) = self.ready.pop_front() else {
                break;
            };
            let Some(target) = self.targets.get_mut(&name) else {
                continue;
            };
            if target.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            target.retry_at = None;
            // Whether the target could take more (only the global limit stopped it).
            let mut room = true;
            while self.inflight < MAX_INFLIGHT {
                let Some(&seq) = target.queue.front() else {
                    break;
                };
                let Some(entry) = self.entries.get(&seq) else {
                    target.queue.pop_front();
                    continue;
                };
                if target.inflight >= in_flight_limit(shared, &entry.record) {
                    room = false;
                    break;
                }
                let retry = entry.attempts > 0;
                match deliver(shared, &entry.record, seq, entry.verify, retry, done(seq)) {
                    Ok(()) => {
                        target.queue.pop_front();
                        target.inflight += 1;
                        self.inflight += 1;
                    }
                    Err(failure) if failure.is_busy() => {
                        target.retry_at = Some(now + BUSY_BACKOFF);
                        break;
                    }
                    Err(failure) => {
                        target.queue.pop_front();
                        if let Some(entry) = self.entries.remove(&seq) {
                            park(shared, seq, &entry.record, &failure, entry.attempts + 1);
                            self.parked.insert(seq, entry.record.stored_as(seq));
                            self.progressed = true;
                        }
                    }
                }
            }
            if target.queue.is_empty() && target.inflight == 0 {
                self.targets.remove(&name);
            } else if !target.queue.is_empty() && target.retry_at.is_none() && room {
                // Stopped by the global limit: try again on the next round.
                self.ready.push_back(name);
            }
        }
    }

    /// Records a delivery's outcome: processed (its removal is durable) or to be retried.
    pub(crate) fn done(&mut self, shared: &Shared, seq: OutboxId, outcome: Result<(), Failure>) {
        self.inflight = self.inflight.saturating_sub(1);
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        let name = entry.target.clone();
        let target = self.targets.entry(name.clone()).or_default();
        target.inflight = target.inflight.saturating_sub(1);
        if entry.dropped {
            self.entries.remove(&seq);
            if target.queue.is_empty() && target.inflight == 0 {
                self.targets.remove(&name);
            }
            return;
        }
        match outcome {
            Ok(()) => {
                self.entries.remove(&seq);
                self.progressed = true;
                // Counted before the backlog falls: whoever sees the outbox empty sees every
                // delivery counted.
                shared.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                shared.backlog.release(1);
            }
            Err(failure) => {
                entry.verify |= matches!(failure, Failure::Storage(_));
                match after_failure(&failure, &mut entry.attempts) {
                    Next::Park => {
                        if let Some(entry) = self.entries.remove(&seq) {
                            park(shared, seq, &entry.record, &failure, entry.attempts);
                            self.parked.insert(seq, entry.record.stored_as(seq));
                            self.progressed = true;
                        }
                    }
                    Next::Retry(backoff) => {
                        let at = target.queue.partition_point(|&s| s < seq);
                        target.queue.insert(at, seq);
                        target.retry_at = Some(Instant::now() + backoff);
                        tracing::debug!(seq = seq.seq, attempts = entry.attempts, error = %failure, "delivery failed; will retry");
                    }
                }
            }
        }
        if target.queue.is_empty() && target.inflight == 0 {
            self.targets.remove(&name);
        } else if target.retry_at.is_none() && !target.queue.is_empty() {
            self.ready.push_back(name);
        }
    }

    /// Stops delivering the entries of `shard` (a cluster node gave it up; its new owner
    /// delivers them): queued ones are forgotten, the outcomes of those in delivery dropped.
    /// Returns how many entries that was, for the backlog.
    pub(crate) fn drop_shard(&mut self, shard: u16) -> usize {
        let mut dropped = 0;
        self.entries.retain(|id, entry| {
            if id.shard != shard {
                return true;
            }
            // One in delivery since an earlier drop was counted then.
            if !entry.dropped {
                dropped += 1;
                entry.dropped = true;
            }
            // In delivery: kept until its outcome arrives, so the counts stay right.
            self.targets
                .get(&entry.target)
                .is_some_and(|t| !t.queue.contains(id))
        });
        self.targets.retain(|_, target| {
            target.queue.retain(|id| id.shard != shard);
            !(target.queue.is_empty() && target.inflight == 0)
        });
        dropped
    }

    /// The frontier to write now: per shard, below every entry still to be processed that
    /// the dispatcher holds or may still get (`floor`: see [`crate::backlog::Backlog::floor`]),
    /// and never below the `durable` one; the entries below it that are not processed
    /// (parked, or handed back after parking) are listed. `next`: the numbers handed out so
    /// far are below it.
    pub(crate) fn frontier(&self, floor: u64, next: u64, durable: &Frontier) -> FrontierRecord {
        let shards = usize::from(crate::codec::SHARDS);
        let mut below: Vec<u64> = vec![floor; shards];
        // Below the entry that stores each message: a group is read whole or not at all.
        let stored = |id: &OutboxId| match self.entries.get(id) {
            Some(entry) => entry.record.stored_as(*id),
            None => self.parked.get(id).copied().unwrap_or(*id),
        };
        for id in self.entries.keys() {
            let at = usize::from(id.shard) % shards;
            below[at] = below[at].min(stored(id).seq);
        }
        for (shard, at) in below.iter_mut().enumerate() {
            *at = (*at).max(durable.of(shard as u16));
        }
        let mut unprocessed: Vec<OutboxId> = self
            .entries
            .keys()
            .chain(self.parked.keys())
            .filter(|id| id.seq < below[usize::from(id.shard) % shards])
            .copied()
            .collect();
        unprocessed.sort_unstable();
        if unprocessed.len() > MAX_PARKED_LISTED {
            // Too many to list: the shards of the others stop at them. (Those below the
            // durable frontier were listed in it, at most as many as this, so these are not.)
            for id in unprocessed.split_off(MAX_PARKED_LISTED) {
                let at = usize::from(id.shard) % shards;
                below[at] = below[at].min(stored(&id).seq.max(durable.of(id.shard)));
            }
        }
        let base = below.iter().copied().max().unwrap_or(floor);
        let behind = below
            .iter()
            .enumerate()
            .filter(|(_, f)| **f < base)
            .map(|(shard, f)| (shard as u16, *f))
            .collect();
        FrontierRecord {
            next,
            base,
            behind,
            parked: unprocessed,
        }
    }

    /// Makes targets whose backoff has passed ready again.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        for (name, target) in &mut self.targets {
            if target.retry_at.is_some_and(|at| at <= now) {
                target.retry_at = None;
                self.ready.push_back(name.clone());
            }
        }
    }
}

/// Queues outbox entry `seq` on its target: in a cluster, one whose target is in another
/// shard is delivered apart (`remote.rs`: the target keeps its key, the entry is deleted
/// after), as its target's turn cannot delete an entry of another shard's log.
fn deliver(
    shared: &std::sync::Arc<Shared>,
    record: &OutboxRecord,
    seq: OutboxId,
    verify: bool,
    retry: bool,
    done: DoneFn,
) -> Result<(), Failure> {
    #[cfg(feature = "cluster")]
    if shared.forward.get().is_some()
        && crate::codec::shard_of(&record.target.actor, &record.target.key) != seq.shard
    {
        return crate::remote::deliver_apart(shared, record, seq, retry, done);
    }
    shared.deliver(record, seq, verify, retry, done)
}

/// How many deliveries to one target may be under way at once: many to an activation here
/// (its mailbox keeps their order), one at a time to one another node serves (requests
/// across the network could overtake each other).
fn in_flight_limit(shared: &Shared, record: &OutboxRecord) -> usize {
    #[cfg(feature = "cluster")]
    if shared.forward.get().is_some() {
        let shard = crate::codec::shard_of(&record.target.actor, &record.target.key);
        if crate::placement::local_epoch(&*shared.placement, shard).is_err() {
            return 1;
        }
    }
    #[cfg(not(feature = "cluster"))]
    let _ = (shared, record);
    MAX_INFLIGHT_PER_TARGET
}

/// Decodes outbox entries read from the store into their messages, in sending order, with
/// the highest number among them (0 if none). A message marked processed is left out, and so
/// is one below its shard's `frontier` that the frontier does not list (a group read for a
/// listed message holds others, processed). An undecodable entry stays in the store (logged)
/// rather than being dropped: nothing is lost, and an operator can look at it.
pub(crate) fn decode_entries(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    frontier: Option<&FrontierRecord>,
) -> (Vec<(OutboxId, OutboxRecord)>, u64) {
    let mut last = 0;
    // Sending order, whatever the shard.
    let mut messages = BTreeMap::new();
    let mut marked = Vec::new();
    for (key, value) in entries {
        let Some(at) = OutboxId::of_key(&key) else {
            tracing::error!(key = ?key, "outbox key of the wrong length; left in place");
            continue;
        };
        last = last.max(at.seq);
        match decode_outbox(&value) {
            Ok(OutboxValue::Processed) => marked.push(at),
            Ok(value) => {
                for (id, record) in outbox_messages(at, value) {
                    last = last.max(id.seq);
                    messages.insert(id, record);
                }
            }
            Err(reason) => {
                tracing::error!(seq = at.seq, shard = at.shard, %reason, "undecodable outbox entry; left in place");
            }
        }
    }
    for id in marked {
        messages.remove(&id);
    }
    if let Some(frontier) = frontier {
        let listed: BTreeSet<OutboxId> = frontier.parked.iter().copied().collect();
        messages.retain(|id, _| id.seq >= frontier.of(id.shard) || listed.contains(id));
    }
    (messages.into_iter().collect(), last)
}

/// Stops retrying an entry in this run and lists it as a dead letter; it stays in the store.
fn park(shared: &Shared, id: OutboxId, record: &OutboxRecord, failure: &Failure, attempts: u32) {
    let letter = send_letter(id, record, failure, attempts);
    shared
        .dead_letters
        .park(&shared.metrics, letter, Stored::Send(id));
    // After the letter is listed and counted (as for a delivery, above).
    shared.backlog.release(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Payload;

    fn entry(shard: u16, seq: u64) -> (OutboxId, OutboxRecord) {
        let record = OutboxRecord {
            target: ActorRef {
                actor: "counter".into(),
                key: format!("k{seq}"),
            },
            payload: Payload::Message {
                handler: "add".into(),
                args: vec![1],
            },
            idempotency: None,
            cause: Default::default(),
            group: None,
        };
        (OutboxId { shard, seq }, record)
    }

    #[test]
    fn entries_added_twice_and_shards_dropped_twice_are_counted_once() {
        let mut dispatcher = Dispatcher::default();
        assert_eq!(dispatcher.add([entry(1, 1), entry(1, 2), entry(2, 3)]), 0);
        // A taken shard's entries read from the store, some committed meanwhile.
        assert_eq!(dispatcher.add([entry(1, 2), entry(2, 3), entry(2, 4)]), 2);
        assert_eq!(dispatcher.drop_shard(1), 2);
        assert_eq!(dispatcher.drop_shard(1), 0);
        assert_eq!(dispatcher.drop_shard(2), 2);
        assert!(dispatcher.idle());
        // Taken again: counted again.
        assert_eq!(dispatcher.add([entry(1, 1)]), 0);
        assert_eq!(dispatcher.drop_shard(1), 1);
    }

    #[test]
    fn the_frontier_stays_below_what_is_not_processed_and_lists_what_it_passes() {
        let durable = Frontier::default();
        let mut dispatcher = Dispatcher::default();
        dispatcher.add([entry(1, 10), entry(1, 12), entry(2, 11)]);
        // Nothing pending beyond the dispatcher's: every other shard is at the floor.
        let record = dispatcher.frontier(20, 25, &durable);
        assert_eq!((record.next, record.base), (25, 20));
        assert_eq!(record.behind, [(1, 10), (2, 11)]);
        assert!(record.parked.is_empty());
        // An entry not yet handed over holds every shard back.
        let record = dispatcher.frontier(5, 25, &durable);
        assert_eq!((record.base, record.behind.len()), (5, 0));

        // Processed: shard 1 moves to its next entry; parked: passed, and listed.
        dispatcher.entries.remove(&OutboxId { shard: 1, seq: 10 });
        let parked = OutboxId { shard: 2, seq: 11 };
        dispatcher.entries.remove(&parked);
        dispatcher.parked.insert(parked, parked);
        let record = dispatcher.frontier(20, 25, &durable);
        assert_eq!((record.base, &record.behind[..]), (20, &[(1, 12)][..]));
        assert_eq!(record.parked, [parked]);
        durable.set(&record);
        assert!(!durable.passed(parked));
        assert!(durable.passed(OutboxId { shard: 2, seq: 12 }));

        // Handed back after parking (an operator's retry): below the durable frontier, which
        // never goes back, so it is listed while it waits.
        dispatcher.add([entry(2, 11)]);
        let record = dispatcher.frontier(20, 25, &durable);
        assert_eq!(record.of(2), 20);
        assert_eq!(record.parked, [parked]);
    }

    /// Message `i` (from 1) of the group stored under `group`.
    fn part(shard: u16, group: u64, i: u64) -> (OutboxId, OutboxRecord) {
        let (id, mut record) = entry(shard, group + i);
        record.group = Some(group);
        (id, record)
    }

    #[test]
    fn the_frontier_passes_a_group_whole_or_stops_at_it() {
        let durable = Frontier::default();
        let mut dispatcher = Dispatcher::default();
        dispatcher.add([part(3, 3000, 1), part(3, 3000, 2), part(3, 3000, 3)]);
        // One message processed, two held: at the group, which the next start reads whole.
        dispatcher.entries.remove(&OutboxId {
            shard: 3,
            seq: 3002,
        });
        assert_eq!(dispatcher.frontier(5000, 5000, &durable).of(3), 3000);

        // The last one parked: there are too many to list, so the shard stops at its group.
        dispatcher.entries.remove(&OutboxId {
            shard: 3,
            seq: 3001,
        });
        let parked = OutboxId {
            shard: 3,
            seq: 3003,
        };
        dispatcher.entries.remove(&parked);
        dispatcher.parked.insert(
            parked,
            OutboxId {
                shard: 3,
                seq: 3000,
            },
        );
        for seq in 100..100 + MAX_PARKED_LISTED as u64 {
            dispatcher
                .parked
                .insert(OutboxId { shard: 0, seq }, OutboxId { shard: 0, seq });
        }
        let record = dispatcher.frontier(5000, 5000, &durable);
        assert_eq!(record.of(3), 3000);
        assert!(!record.parked.contains(&parked));

        // Few enough: passed, and listed.
        dispatcher.parked.retain(|id, _| id.shard == 3);
        let record = dispatcher.frontier(5000, 5000, &durable);
        assert_eq!((record.of(3), &record.parked[..]), (5000, &[parked][..]));
    }

    #[test]
    fn entries_read_at_start_are_their_messages_less_the_processed_and_the_passed() {
        use crate::codec::{OUTBOX_PROCESSED, encode_envelope, encode_group};
        let group = |shard: u16, at: u64, n: u64| {
            let records: Vec<_> = (1..=n).map(|i| entry(shard, at + i).1).collect();
            (
                OutboxId { shard, seq: at }.key().to_vec(),
                encode_group(&records).unwrap().to_vec(),
            )
        };
        let one = |shard: u16, seq: u64| {
            let (id, record) = entry(shard, seq);
            (
                id.key().to_vec(),
                encode_envelope(&record).unwrap().to_vec(),
            )
        };
        let mark = |shard: u16, seq: u64| {
            let key = OutboxId { shard, seq }.key().to_vec();
            (key, OUTBOX_PROCESSED.to_vec())
        };
        // Shard 1 from 20: a group of three whose second message was marked processed, and a
        // message marked processed in place. Shard 2: a group below its frontier of 90, read
        // for its listed third message.
        let read = vec![
            group(1, 20, 3),
            mark(1, 22),
            mark(1, 25),
            one(1, 27),
            group(2, 10, 3),
        ];
        let frontier = FrontierRecord {
            next: 100,
            base: 90,
            behind: vec![(1, 20)],
            parked: vec![OutboxId { shard: 2, seq: 13 }],
        };
        let (messages, last) = decode_entries(read.clone(), Some(&frontier));
        let ids: Vec<_> = messages.iter().map(|(id, _)| (id.shard, id.seq)).collect();
        assert_eq!(ids, [(2, 13), (1, 21), (1, 23), (1, 27)]);
        assert_eq!(messages[0].1.group, Some(10));
        assert_eq!(messages[3].1.group, None);
        assert_eq!(last, 27);
        // Without a frontier (a cluster node's shard): every message not marked.
        let (messages, _) = decode_entries(read, None);
        assert_eq!(messages.len(), 6);
    }
}
