//! Durable timers. An actor's timers, with their messages, are kept in its record; the
//! `timers` keyspace is their index: one entry per actor with timers, at or before its
//! earliest, each shard's entries one range ordered by due time, scanned by the host
//! service when a shard's earliest entry comes due. No task or thread waits per timer, and
//! an actor whose only business is a pending timer can be passivated: the firing activates
//! it.
//!
//! A due entry is read with its actor's record (from the store: what a committed turn
//! wrote), whose due timers are fired; its later ones are waited for. The entry moves with
//! a turn that writes the record anyway: one that fires a timer, or arms one earlier than
//! the entry. Arming timers at or after it and cancelling timers write nothing but the
//! record, so an entry may be earlier than its actor's earliest timer (one was cancelled),
//! or have no timer behind it (the last was cancelled). When such an entry comes due with no
//! timer due behind it, a turn of its actor moves it to the earliest timer or removes it
//! (serial with the turns that may arm a timer behind it, which that turn then keeps): two
//! or three writes of upkeep, counted as `timer_index_writes`, for any number of timers
//! armed and cancelled behind the entry before.
//!
//! A firing is delivered like an outbox message: the target's turn removes the timer from
//! its record (or moves it to its next firing) in the same batch as its state change, and
//! ignores a firing that its record no longer lists, so each firing is processed once,
//! across crashes too. Timers are known to this service and to dead letters by their
//! [`crate::codec::timer_key`] (state key, due time, name), the key under which versions
//! before record format 4 stored each timer apart; such timers still fire from their keys.
//!
//! A firing whose turn fails is retried and parked by the policy sends follow
//! ([`crate::dead_letters`]); a timer that cannot be delivered at all (its record unreadable,
//! its type or handler unknown) is parked at once. A parked timer stays in the store, skipped
//! by the scans of this run until it is retried or discarded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::duration_ms;
use crate::codec::{
    ActorMeta, ActorRef, SHARDS, TIMER_INDEX, TimerRecord, decode_timer, split_record, timer_due,
    timer_key, timer_key_parts, timer_key_state_key,
};
use crate::commit::KeyWrite;
use crate::dead_letters::{DeadLetterId, Next, Stored, after_failure, timer_letter};
use crate::error::Failure;
use crate::shared::Shared;
use crate::shared::{Delivery, DoneFn};

/// Timers read per scan of a shard.
const SCAN_LIMIT: usize = 1024;
/// Wait before looking again after a firing could not be queued (its target busy) or the
/// scan failed.
const RETRY: Duration = Duration::from_millis(200);

/// A firing queued on its activation: what its dead letter would say. An empty `name`: the
/// removal of an index entry with no timer behind it (upkeep, never a dead letter).
struct Firing {
    target: ActorRef,
    name: String,
    handler: Option<String>,
}

/// A timer whose last firing failed: failed attempts so far, and when to try again (ms since
/// the Unix epoch).
struct Failing {
    attempts: u32,
    retry_at: u64,
}

/// The timer service's state, owned by the host service.
pub(crate) struct TimerService {
    /// Firings queued on activations and not yet done.
    inflight: HashMap<Arc<[u8]>, Firing>,
    /// Timers whose last firing failed, until one succeeds or they are parked.
    failing: HashMap<Arc<[u8]>, Failing>,
    /// Timers parked in this run (listed as dead letters or not), per shard: scans skip them.
    /// An id is a few words, so even a store full of parked timers costs little memory here.
    parked: HashMap<u16, HashSet<DeadLetterId>>,
    /// Per shard, when to scan it next (ms since the Unix epoch); 0 = at once (startup:
    /// fire what was missed while the runtime was down); `u64::MAX`: no timer.
    next_wake: Vec<u64>,
    /// Where the next scan of a shard continues when the last one filled a page, so timers
    /// that are in flight or parked at the front never hide the ones behind them.
    resume_after: HashMap<u16, Vec<u8>>,
}

impl TimerService {
    /// A service that scans `shards` at once (the shards this node owns).
    pub(crate) fn new(shards: impl IntoIterator<Item = u16>) -> TimerService {
        let mut next_wake = vec![u64::MAX; usize::from(SHARDS)];
        for shard in shards {
            next_wake[usize::from(shard)] = 0;
        }
        TimerService {
            inflight: HashMap::new(),
            failing: HashMap::new(),
            parked: HashMap::new(),
            next_wake,
            resume_after: HashMap::new(),
        }
    }

    /// Starts scanning `shard` (a cluster node took it): at once, for what is due.
    pub(crate) fn take(&mut self, shard: u16) {
        self.scheduled(shard, 0);
    }

    /// Stops scanning `shard` (a cluster node gave it up; its new owner fires its timers).
    /// Firings in flight finish; their turns cannot commit here any more.
    pub(crate) fn drop_shard(&mut self, shard: u16) {
        if let Some(wake) = self.next_wake.get_mut(usize::from(shard)) {
            *wake = u64::MAX;
        }
        self.resume_after.remove(&shard);
        self.parked.remove(&shard);
        self.failing
            .retain(|key, _| crate::codec::shard_of_key(key) != shard);
    }

    /// A committed turn scheduled a timer of `shard` due at `due_ms`.
    pub(crate) fn scheduled(&mut self, shard: u16, due_ms: u64) {
        if let Some(wake) = self.next_wake.get_mut(usize::from(shard)) {
            *wake = (*wake).min(due_ms);
        }
    }

    /// Whether a scan is due at `now` (ms since the Unix epoch).
    pub(crate) fn due(&self, now: u64) -> bool {
        self.next_wake.iter().any(|&wake| wake <= now)
    }

    /// Nothing in flight and nothing due at `now`; and when the next scan is due (ms since
    /// the Unix epoch, `u64::MAX` if no timer is stored).
    pub(crate) fn settled(&self, now: u64) -> (bool, u64) {
        let next = self.next_wake.iter().copied().min().unwrap_or(u64::MAX);
        (self.inflight.is_empty() && next > now, next)
    }

    /// A firing's turn is over; a failed one is retried after a backoff, or parked.
    pub(crate) fn done(&mut self, shared: &Shared, key: Arc<[u8]>, outcome: Result<(), Failure>) {
        let firing = self.inflight.remove(&key);
        if firing.as_ref().is_some_and(|f| f.name.is_empty()) {
            // An entry's upkeep: if it failed, the entry is still due; look again soon.
            if let Err(failure) = outcome {
                tracing::debug!(error = %failure, "removing a timer index entry failed; will retry");
                self.retry_soon(shared, crate::codec::shard_of_key(&key));
            }
            return;
        }
        let failure = match outcome {
            Ok(()) => {
                self.failing.remove(&key);
                return;
            }
            Err(failure) => failure,
        };
        let shard = crate::codec::shard_of_key(&key);
        let failing = self.failing.entry(key.clone()).or_insert(Failing {
            attempts: 0,
            retry_at: 0,
        });
        match after_failure(&failure, &mut failing.attempts) {
            Next::Retry(backoff) => {
                failing.retry_at = shared.clock.epoch_ms().saturating_add(duration_ms(backoff));
                let at = failing.retry_at;
                tracing::debug!(attempts = failing.attempts, error = %failure, "timer firing failed; will retry");
                self.scheduled(shard, at);
            }
            Next::Park => {
                let attempts = failing.attempts;
                self.failing.remove(&key);
                let target = firing.as_ref().map(|f| (&f.target, f.name.as_str()));
                let handler = firing.as_ref().and_then(|f| f.handler.as_deref());
                let letter = timer_letter(&key, target, handler, failure.to_string(), attempts);
                self.park(shared, key, letter);
            }
        }
    }

    /// Stops firing a timer in this run and lists it as a dead letter; it stays in the store.
    fn park(&mut self, shared: &Shared, key: Arc<[u8]>, letter: crate::DeadLetter) {
        let shard = crate::codec::shard_of_key(&key);
        self.parked.entry(shard).or_default().insert(letter.id);
        shared
            .dead_letters
            .park(&shared.metrics, letter, Stored::Timer(key));
    }

    /// A parked timer was retried (fire it again, as new) or discarded (it is gone): either
    /// way scans stop skipping it, and its shard is looked at now.
    pub(crate) fn unpark(&mut self, id: DeadLetterId, shard: u16) {
        if self
            .parked
            .get_mut(&shard)
            .is_some_and(|ids| ids.remove(&id))
        {
            self.scheduled(shard, 0);
        }
    }

    /// After a scan that saw every due timer of `shard`: what this service remembers of its
    /// timers that are no longer stored (cancelled, rescheduled or deleted by their actor, or
    /// discarded) is dropped, and their dead letters with it. A parked or failing timer is
    /// due, so it would have been seen.
    fn forget_gone(&mut self, shared: &Shared, shard: u16, seen: &HashSet<Arc<[u8]>>, now: u64) {
        if let Some(ids) = self.parked.get_mut(&shard) {
            let seen: HashSet<DeadLetterId> = seen.iter().map(|k| DeadLetterId::timer(k)).collect();
            ids.retain(|id| {
                let stored = seen.contains(id);
                if !stored {
                    shared.dead_letters.forget(*id);
                }
                stored
            });
            if ids.is_empty() {
                self.parked.remove(&shard);
            }
        }
        self.failing.retain(|key, failing| {
            crate::codec::shard_of_key(key) != shard || failing.retry_at > now || seen.contains(key)
        });
    }

    fn retry_soon(&mut self, shared: &Shared, shard: u16) {
        let at = shared.clock.epoch_ms().saturating_add(duration_ms(RETRY));
        self.scheduled(shard, at);
    }

    /// Delivers every due timer of the shards whose earliest timer is due that is not in
    /// flight, then finds each one's next due time.
    pub(crate) async fn fire(
        &mut self,
        shared: &Arc<Shared>,
        done: &(dyn Fn(Arc<[u8]>) -> DoneFn + Send + Sync),
    ) {
        let now = shared.clock.epoch_ms();
        let shards: Vec<(u16, Option<Vec<u8>>)> = (0..SHARDS)
            .filter(|&shard| self.next_wake[usize::from(shard)] <= now)
            .map(|shard| (shard, self.resume_after.remove(&shard)))
            .collect();
        // Until the scan below says otherwise, look again soon (a failed read retries).
        for (shard, _) in &shards {
            self.next_wake[usize::from(*shard)] = now.saturating_add(RETRY.as_millis() as u64);
        }
        let scanned = shared
            .with_store("timer scan", move |store| {
                let mut found = Vec::with_capacity(shards.len());
                for (shard, after) in shards {
                    let entries = store.due_timers(shard, after.as_deref(), now, SCAN_LIMIT)?;
                    let scan = read_due(store.as_ref(), after.is_none(), entries, now)?;
                    let next = store.next_timer_after(shard, now)?;
                    found.push((shard, scan, next));
                }
                Ok(found)
            })
            .await;
        let scanned = match scanned {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due timers; retrying");
                return;
            }
        };
        for (shard, scan, next) in scanned {
            let full = scan.last_key.is_some();
            // Every due timer of the shard is in this page.
            let complete = scan.from_start && !full;
            let mut seen = HashSet::new();
            if let Some(key) = scan.last_key {
                self.resume_after.insert(shard, key);
            }
            let mut busy = false;
            // The earliest retry of a failed firing skipped now.
            let mut retry_at = u64::MAX;
            for due in scan.due {
                let key = due.key.clone();
                if complete {
                    seen.insert(key.clone());
                }
                if self.inflight.contains_key(&key)
                    || self
                        .parked
                        .get(&shard)
                        .is_some_and(|ids| ids.contains(&DeadLetterId::timer(&key)))
                {
                    continue;
                }
                if let Some(failing) = self.failing.get(&key)
                    && failing.retry_at > now
                {
                    retry_at = retry_at.min(failing.retry_at);
                    continue;
                }
                busy |= !self.deliver(shared, due, done);
            }
            for entry in scan.idle {
                if !self.inflight.contains_key(&entry.key) {
                    busy |= !self.upkeep(shared, entry, done);
                }
            }
            self.next_wake[usize::from(shard)] = if full {
                now
            } else {
                next.unwrap_or(u64::MAX).min(scan.later).min(retry_at)
            };
            if busy {
                self.retry_soon(shared, shard);
            }
            if complete {
                self.forget_gone(shared, shard, &seen, now);
            }
        }
    }

    /// Queues the upkeep of an index entry with no timer due behind it on its actor (moved to
    /// its earliest timer, or removed); false if it must be retried later.
    fn upkeep(
        &mut self,
        shared: &Arc<Shared>,
        entry: Idle,
        done: &(dyn Fn(Arc<[u8]>) -> DoneFn + Send + Sync),
    ) -> bool {
        let Some(registered) = shared.by_name(&entry.target.actor) else {
            // Its type is not registered in this run: nothing can run its turns.
            return true;
        };
        let discard = crate::shared::DiscardTimer {
            key: entry.key.clone(),
            name: String::new(),
            due_ms: entry.due_ms,
        };
        let registry = registered.registry.clone();
        match registry.discard_timer(shared, &entry.target.key, discard, done(entry.key.clone())) {
            Ok(()) => {
                let firing = Firing {
                    target: entry.target,
                    name: String::new(),
                    handler: None,
                };
                self.inflight.insert(entry.key, firing);
                true
            }
            Err(failure) if failure.is_busy() => false,
            Err(failure) => {
                tracing::debug!(error = %failure, "cannot remove a timer index entry");
                true
            }
        }
    }

    /// Queues one firing; false if it must be retried later.
    fn deliver(
        &mut self,
        shared: &Arc<Shared>,
        due: Due,
        done: &(dyn Fn(Arc<[u8]>) -> DoneFn + Send + Sync),
    ) -> bool {
        let Due { key, stored, timer } = due;
        let record = match timer {
            Ok(record) => record,
            Err(reason) => {
                // Never written by this build: parked for an operator, never fired.
                let letter = timer_letter(&key, None, None, reason, 1);
                self.park(shared, key, letter);
                return true;
            }
        };
        let attempts = self.failing.get(&key).map_or(0, |f| f.attempts);
        let delivery = Delivery::Timer {
            key: key.clone(),
            stored,
            name: record.name.clone(),
            due_ms: record.due_ms,
            every_ms: record.every_ms,
            message: Box::new(record.message.clone()),
            retry: attempts > 0,
        };
        let handler = record.message.handler();
        match shared.deliver_to(&record.target, &record.message, delivery, done(key.clone())) {
            Ok(()) => {
                let firing = Firing {
                    handler: handler.map(str::to_string),
                    target: record.target,
                    name: record.name,
                };
                self.inflight.insert(key, firing);
                true
            }
            Err(failure) if failure.is_busy() => false,
            Err(failure) => {
                // Undeliverable (unknown type or handler, arguments that do not decode, an
                // invalid key): parked at once, as a send would be.
                self.failing.remove(&key);
                let target = Some((&record.target, record.name.as_str()));
                let letter = timer_letter(&key, target, handler, failure.to_string(), attempts + 1);
                self.park(shared, key, letter);
                true
            }
        }
    }
}

/// A due timer, by its [`crate::codec::timer_key`] (the key it is stored under if
/// `stored`, else the name its firings and dead letters go by).
struct Due {
    key: Arc<[u8]>,
    stored: bool,
    /// The timer, or why it cannot be read.
    timer: Result<TimerRecord, String>,
}

/// An actor's index entry due with no timer due behind it (those it was written for were
/// cancelled, or it is not the one its record names).
struct Idle {
    key: Arc<[u8]>,
    due_ms: u64,
    target: ActorRef,
}

/// What one scan of a shard found.
struct Scan {
    /// The scan started at the shard's first key (not after a page).
    from_start: bool,
    due: Vec<Due>,
    /// Entries to remove by a turn of their actor.
    idle: Vec<Idle>,
    /// The last key of a full page: the next scan continues after it.
    last_key: Option<Vec<u8>>,
    /// The earliest timer not yet due of the actors whose index entries were due (their
    /// entries move to it once their upkeep or firing turns are durable).
    later: u64,
}

/// Keeps an actor's entry in the timer index true after its timers changed: at or before
/// its earliest timer kept in the record (`meta`, of the actor whose state key is
/// `state_key`). An entry earlier than the earliest timer (one was cancelled), or with no
/// timer left behind it, stays, so arming and cancelling timers writes nothing but the
/// record the turn writes anyway; when the entry comes due, the timer service reads the
/// record and waits for the earliest timer, or has the entry removed by a turn of its actor
/// (upkeep). After a firing, in upkeep or when a timer is discarded (`fired`), the entry
/// moves to the earliest timer, or goes if there is none. Returns whether the record
/// changed.
///
/// An entry written at a new place is added to `timer_due`, for the timer service to look
/// at once the write is durable: the scan that found the old one may not have (a full page
/// of due entries forgets what it saw beyond them).
pub(crate) fn sync_index(
    state_key: &[u8],
    meta: &mut ActorMeta,
    fired: bool,
    writes: &mut Vec<KeyWrite>,
    timer_due: &mut Option<u64>,
) -> bool {
    let earliest = meta
        .timers
        .iter()
        .filter(|t| !t.stored_apart())
        .map(|t| t.due_ms)
        .min();
    let keep = match (meta.indexed, earliest) {
        (None, None) => return false,
        // The last timer was cancelled: the entry stays until it comes due, when the timer
        // service has a turn of this actor remove it (upkeep); a timer armed meanwhile at
        // or after it needs no write of its own.
        (Some(_), None) => !fired,
        (Some(at), Some(earliest)) => at == earliest || (at < earliest && !fired),
        (None, Some(_)) => false,
    };
    if keep {
        return false;
    }
    if let Some(at) = meta.indexed {
        writes.push(index_write(state_key, at, None));
    }
    if let Some(earliest) = earliest {
        writes.push(index_write(
            state_key,
            earliest,
            Some(Arc::from(&TIMER_INDEX[..])),
        ));
        *timer_due = Some(timer_due.map_or(earliest, |d| d.min(earliest)));
    }
    meta.indexed = earliest;
    true
}

/// The write of the timer index entry at `due_ms` of the actor whose state key is
/// `state_key` (`value` `None`: its deletion).
pub(crate) fn index_write(state_key: &[u8], due_ms: u64, value: Option<Arc<[u8]>>) -> KeyWrite {
    KeyWrite {
        space: crate::store::Space::Timers,
        key: crate::codec::timer_index_key(state_key, due_ms).into(),
        value,
    }
}

/// Reads the timers a page of due entries of the `timers` keyspace names: a timer an older
/// version stored under its own key, or an actor's index entry, whose record lists its
/// timers with their messages (read from the store: an entry is at or before its actor's
/// earliest timer, so what is due there is durable).
fn read_due(
    store: &dyn crate::store::StateStore,
    from_start: bool,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    now: u64,
) -> Result<Scan, crate::error::StorageError> {
    let last_key = (entries.len() == SCAN_LIMIT)
        .then(|| entries.last().map(|(key, _)| key.clone()))
        .flatten();
    let mut scan = Scan {
        from_start,
        due: Vec::with_capacity(entries.len()),
        idle: Vec::new(),
        last_key,
        later: u64::MAX,
    };
    for (key, value) in entries {
        if value != TIMER_INDEX {
            let timer = match decode_timer(&value) {
                Ok(record) if timer_due(&key) == Some(record.due_ms) => Ok(record),
                Ok(_) => Err("the timer's record does not match its key".to_string()),
                Err(reason) => Err(format!("undecodable timer: {reason}")),
            };
            scan.due.push(Due {
                key: key.into(),
                stored: true,
                timer,
            });
            continue;
        }
        let (Some(state_key), Some((actor, actor_key, _))) =
            (timer_key_state_key(&key), timer_key_parts(&key))
        else {
            tracing::warn!("skipping a malformed timer index entry");
            continue;
        };
        let target = ActorRef {
            actor: actor.to_string(),
            key: actor_key.to_string(),
        };
        let meta = match store.get_state(state_key)?.as_deref().map(split_record) {
            Some(Ok((_, meta, _))) => meta,
            // No record (the entry outlived its actor): removed by a turn of a new one.
            None => Default::default(),
            Some(Err(reason)) => {
                // Its actor cannot load it either; its turns report why.
                tracing::warn!(actor, key = actor_key, %reason, "cannot read the timers of an actor");
                continue;
            }
        };
        let due_ms = timer_due(&key).unwrap_or(0);
        let kept = meta.timers.iter().filter(|t| !t.stored_apart());
        // Its timers not yet due are waited for: this entry moves to the earliest of them
        // with the turn that fires or upkeeps it.
        if let Some(later) = kept.clone().map(|t| t.due_ms).filter(|&d| d > now).min() {
            scan.later = scan.later.min(later);
        }
        let mut due_behind = kept.filter(|t| t.due_ms <= now).peekable();
        if meta.indexed != Some(due_ms) || due_behind.peek().is_none() {
            // Nothing due behind this entry: its actor's turn moves it to the earliest timer,
            // or removes it. (Left due, it would be read again at every scan of its shard.)
            let key = key.into();
            scan.idle.push(Idle {
                key,
                due_ms,
                target,
            });
            continue;
        }
        for t in due_behind {
            let Some(kept) = &t.message else { continue };
            let timer = kept
                .decode()
                .map(|message| TimerRecord {
                    target: target.clone(),
                    name: t.name.clone(),
                    message,
                    due_ms: t.due_ms,
                    every_ms: t.every_ms,
                })
                .map_err(|reason| format!("undecodable timer message: {reason}"));
            scan.due.push(Due {
                key: timer_key(state_key, t.due_ms, &t.name).into(),
                stored: false,
                timer,
            });
        }
    }
    Ok(scan)
}
