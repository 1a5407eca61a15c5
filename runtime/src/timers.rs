//! Durable timers: a keyspace where each shard's timers are one range ordered by due time,
//! scanned by the host service when a shard's earliest timer comes due. No task or thread
//! waits per timer, and an actor whose only business is a pending timer can be passivated:
//! the firing activates it.
//!
//! A firing is delivered like an outbox message: the target's turn removes the timer (or
//! writes its next firing) in the same batch as its state change, and ignores a firing that
//! its record no longer lists, so each firing is processed once, across crashes too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec::{SHARDS, decode_timer, timer_due};
use crate::context::epoch_ms;
use crate::shared::Shared;
use crate::shared::{Delivery, DoneFn};

/// Timers read per scan of a shard.
const SCAN_LIMIT: usize = 1024;
/// Wait before looking again after a firing could not be delivered or failed.
const RETRY: Duration = Duration::from_millis(200);

/// The timer service's state, owned by the host service.
pub(crate) struct TimerService {
    /// Firings queued on activations and not yet done.
    inflight: HashSet<Arc<[u8]>>,
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
            inflight: HashSet::new(),
            next_wake,
            resume_after: HashMap::new(),
        }
    }

    /// A committed turn scheduled a timer of `shard` due at `due_ms`.
    pub(crate) fn scheduled(&mut self, shard: u16, due_ms: u64) {
        if let Some(wake) = self.next_wake.get_mut(usize::from(shard)) {
            *wake = (*wake).min(due_ms);
        }
    }

    /// Whether a scan is due.
    pub(crate) fn due(&self) -> bool {
        let now = epoch_ms(SystemTime::now());
        self.next_wake.iter().any(|&wake| wake <= now)
    }

    /// A firing's turn is over; a failed one is retried at its shard's next scan.
    pub(crate) fn done(&mut self, key: &[u8], ok: bool) {
        self.inflight.remove(key);
        if !ok {
            self.retry_soon(crate::codec::shard_of_state_key(key));
        }
    }

    fn retry_soon(&mut self, shard: u16) {
        let at = epoch_ms(SystemTime::now() + RETRY);
        self.scheduled(shard, at);
    }

    /// Delivers every due timer of the shards whose earliest timer is due that is not in
    /// flight, then finds each one's next due time.
    pub(crate) async fn fire(
        &mut self,
        shared: &Arc<Shared>,
        done: &(dyn Fn(Arc<[u8]>) -> DoneFn + Send + Sync),
    ) {
        let now = epoch_ms(SystemTime::now());
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
                    found.push((shard, due, next));
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
        for (shard, due, next) in scanned {
            let full = due.len() == SCAN_LIMIT;
            if full && let Some((key, _)) = due.last() {
                self.resume_after.insert(shard, key.clone());
            }
            let mut busy = false;
            for (key, value) in due {
                let key: Arc<[u8]> = key.into();
                if self.inflight.contains(&key) {
                    continue;
                }
                busy |= !self.deliver(shared, key, &value, done);
            }
            self.next_wake[usize::from(shard)] = match next {
                _ if full => now,
                Some(next) => next,
                None => u64::MAX,
            };
            if busy {
                self.retry_soon(shard);
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
            Ok(_) | Err(_) => {
                // Never written by this build: leave it for an operator, do not fire it.
                if self.inflight.insert(key.clone()) {
                    tracing::error!(key = ?key, "undecodable timer in the store; skipped");
                }
                return true;
            }
        };
        let name = record.name.clone();
        let delivery = Delivery::Timer {
            key: key.clone(),
            name: record.name,
            due_ms: record.due_ms,
            every_ms: record.every_ms,
            message: Box::new(record.message.clone()),
        };
        match shared.deliver_to(&record.target, &record.message, delivery, done(key.clone())) {
            Ok(()) => {
                self.inflight.insert(key);
                true
            }
            Err(failure) if failure.is_busy() => false,
            Err(failure) => {
                // Parked for this run (logged), left in the store for the next start.
                if self.inflight.insert(key) {
                    tracing::error!(
                        actor = %record.target.actor,
                        key = %record.target.key,
                        timer = %name,
                        handler = record.message.handler().unwrap_or("-"),
                        error = %failure,
                        "timer cannot be delivered; skipped"
                    );
                }
                true
            }
        }
    }
}
