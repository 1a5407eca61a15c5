//! Durable timers: a keyspace where each shard's timers are one range ordered by due time,
//! scanned by the host service when a shard's earliest timer comes due. No task or thread
//! waits per timer, and an actor whose only business is a pending timer can be passivated:
//! the firing activates it.
//!
//! A firing is delivered like an outbox message: the target's turn removes the timer (or
//! writes its next firing) in the same batch as its state change, and ignores a firing that
//! its record no longer lists, so each firing is processed once, across crashes too.
//!
//! A firing whose turn fails is retried and parked by the policy sends follow
//! ([`crate::dead_letters`]); a timer that cannot be delivered at all (its record unreadable,
//! its type or handler unknown) is parked at once. A parked timer stays in the store, skipped
//! by the scans of this run until it is retried or discarded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::duration_ms;
use crate::codec::{ActorRef, SHARDS, decode_timer, timer_due};
use crate::dead_letters::{DeadLetterId, Next, Stored, after_failure, timer_letter};
use crate::error::Failure;
use crate::shared::Shared;
use crate::shared::{Delivery, DoneFn};

/// Timers read per scan of a shard.
const SCAN_LIMIT: usize = 1024;
/// Wait before looking again after a firing could not be queued (its target busy) or the
/// scan failed.
const RETRY: Duration = Duration::from_millis(200);

/// A firing queued on its activation: what its dead letter would say.
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
                    let due = store.due_timers(shard, after.as_deref(), now, SCAN_LIMIT)?;
                    let next = store.next_timer_after(shard, now)?;
                    found.push((shard, after.is_none(), due, next));
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
        for (shard, from_start, due, next) in scanned {
            let full = due.len() == SCAN_LIMIT;
            // Every due timer of the shard is in this page.
            let complete = from_start && !full;
            let mut seen = HashSet::new();
            if full && let Some((key, _)) = due.last() {
                self.resume_after.insert(shard, key.clone());
            }
            let mut busy = false;
            // The earliest retry of a failed firing skipped now.
            let mut retry_at = u64::MAX;
            for (key, value) in due {
                let key: Arc<[u8]> = key.into();
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
                busy |= !self.deliver(shared, key, &value, done);
            }
            self.next_wake[usize::from(shard)] = match next {
                _ if full => now,
                Some(next) => next.min(retry_at),
                None => retry_at,
            };
            if busy {
                self.retry_soon(shared, shard);
            }
            if complete {
                self.forget_gone(shared, shard, &seen, now);
            }
        }
    }

    /// Queues one firing; false if it must be retried later.
    fn deliver(
        &mut self,
        shared: &Arc<Shared>,
        key: Arc<[u8]>,
        value: &[u8],
        done: &(dyn Fn(Arc<[u8]>) -> DoneFn + Send + Sync),
    ) -> bool {
        let record = match decode_timer(value) {
            Ok(record) if timer_due(&key) == Some(record.due_ms) => record,
            Ok(_) => {
                let reason = "the timer's record does not match its key".to_string();
                let letter = timer_letter(&key, None, None, reason, 1);
                self.park(shared, key, letter);
                return true;
            }
            Err(reason) => {
                // Never written by this build: parked for an operator, never fired.
                let reason = format!("undecodable timer: {reason}");
                let letter = timer_letter(&key, None, None, reason, 1);
                self.park(shared, key, letter);
                return true;
            }
        };
        let attempts = self.failing.get(&key).map_or(0, |f| f.attempts);
        let delivery = Delivery::Timer {
            key: key.clone(),
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
