//! The directory: per actor type, a sharded map from key to live activation.
//!
//! A live activation is a [`Slot`]: its state, a bounded queue, and no task of its own. A
//! task runs only while the queue has messages (the turns in `activation.rs`). Get-or-insert happens
//! under the shard lock, so there is never more than one activation per (type, key);
//! passivation marks a slot retired under the same lock, and an enqueue that finds a retired
//! slot looks it up again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;
use xxhash_rust::xxh3::xxh3_64;

use crate::actor::Handlers;
use crate::codec::{ActorMeta, KeptResult};
use crate::commit::Ticket;
use crate::error::{Failure, Overload};
use crate::mailbox::{Envelope, Refused};
use crate::shared::{Eviction, Shared};

const DIRECTORY_SHARDS: usize = 64;
/// Slots examined to pick an eviction victim when the live cap is reached (sampled LRU).
const EVICTION_SAMPLE: usize = 32;
/// Slots examined at most before giving up (`Overloaded`) when none is idle.
const EVICTION_LIMIT: usize = 8 * EVICTION_SAMPLE;

/// A live activation.
pub(crate) struct Slot<A: Handlers> {
    pub(crate) key: Arc<str>,
    /// Its state key (which starts with its shard).
    pub(crate) store_key: Arc<[u8]>,
    /// Milliseconds since the runtime opened, at the last enqueue (the low 63 bits), and the
    /// `REPLYING` flag (the top bit: a field of its own would cost every live activation
    /// 33 bytes, past an allocator size class).
    used_and_replying: AtomicU64,
    pub(crate) inner: Mutex<SlotInner<A>>,
}

/// The running turn has handed its reply over (it leaves when its write settles, or has
/// left): the turn is ending, and the activation is idle again in a moment unless a message
/// is queued. Set by the turn before it hands the reply over, cleared when the next message
/// is taken. The live cap waits for such an activation instead of refusing (see
/// [`Eviction::Soon`]). An enqueue that stores the time clears it too, harmlessly: the
/// activation has a message queued then, so it is not ending.
const REPLYING: u64 = 1 << 63;

impl<A: Handlers> Slot<A> {
    /// Milliseconds since the runtime opened, at the last enqueue.
    fn last_used(&self) -> u64 {
        self.used_and_replying.load(Ordering::Relaxed) & !REPLYING
    }

    /// Marks the running turn's reply handed over.
    pub(crate) fn set_replying(&self) {
        self.used_and_replying.fetch_or(REPLYING, Ordering::AcqRel);
    }

    /// A new turn starts: its reply is not handed over yet.
    pub(crate) fn clear_replying(&self) {
        self.used_and_replying
            .fetch_and(!REPLYING, Ordering::AcqRel);
    }

    fn replying(&self) -> bool {
        self.used_and_replying.load(Ordering::Acquire) & REPLYING != 0
    }

    /// The actor's shard.
    pub(crate) fn shard(&self) -> u16 {
        crate::codec::shard_of_key(&self.store_key)
    }
}

pub(crate) struct SlotInner<A: Handlers> {
    /// The state while no task runs; the running task holds it otherwise.
    pub(crate) activation: Activation<A>,
    pub(crate) queue: VecDeque<Envelope<A>>,
    pub(crate) running: bool,
    /// Removed from the directory: enqueue must look the key up again.
    retired: bool,
}

impl<A: Handlers> SlotInner<A> {
    /// Idle, with nothing that is not yet durable: dropping it loses nothing.
    fn passivatable(&self) -> bool {
        !self.running && self.queue.is_empty() && self.activation.settled()
    }

    /// Running the last turn it has, whose reply was handed over (`replying`): idle in a
    /// moment, when its task puts it back.
    fn ending(&self, replying: bool) -> bool {
        self.running && self.queue.is_empty() && replying
    }
}

/// An activation that was idle, marked running for its first message: whoever holds this
/// must run its turns, starting with `first`.
#[must_use = "an idle activation's turns must be started"]
pub(crate) struct Idle<A: Handlers> {
    pub(crate) slot: Arc<Slot<A>>,
    pub(crate) first: Envelope<A>,
}

/// One slice of a type's directory.
type Shard<A> = HashMap<Arc<str>, Arc<Slot<A>>>;

/// Everything the runtime keeps for one registered actor type.
pub(crate) struct Registry<A: Handlers> {
    pub(crate) idle_timeout: Duration,
    shards: Box<[Mutex<Shard<A>>]>,
    evict_cursor: AtomicUsize,
    /// In-process watchers per key (independent of activations: a watched actor may be
    /// passivated).
    watchers: Mutex<HashMap<Arc<str>, broadcast::Sender<A::Event>>>,
    /// Keys with watchers, so publishing skips the lock when nobody watches.
    watched: AtomicUsize,
}

impl<A: Handlers> Registry<A> {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Registry {
            idle_timeout,
            shards: (0..DIRECTORY_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            evict_cursor: AtomicUsize::new(0),
            watchers: Mutex::new(HashMap::new()),
            watched: AtomicUsize::new(0),
        }
    }

    /// A receiver of `key`'s events from now on, buffering at most `capacity` of them.
    pub(crate) fn watch(&self, key: &str, capacity: usize) -> broadcast::Receiver<A::Event> {
        let mut watchers = self.watchers.lock();
        if let Some(tx) = watchers.get(key) {
            return tx.subscribe();
        }
        // Keys whose watchers all went away are dropped here (and when they publish).
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        let (tx, rx) = broadcast::channel(capacity);
        watchers.insert(Arc::from(key), tx);
        self.watched.store(watchers.len(), Ordering::Release);
        rx
    }

    /// Whether anyone watches `key` here.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_watched(&self, key: &str) -> bool {
        self.watchers
            .lock()
            .get(key)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Hands committed events to `key`'s watchers; never blocks (a slow watcher lags).
    pub(crate) fn publish(&self, key: &str, events: Vec<A::Event>) {
        if self.watched.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut watchers = self.watchers.lock();
        let Some(tx) = watchers.get(key) else {
            return;
        };
        if tx.receiver_count() == 0 {
            watchers.remove(key);
            self.watched.store(watchers.len(), Ordering::Release);
            return;
        }
        for event in events {
            let _ = tx.send(event);
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard<A>> {
        &self.shards[(xxh3_64(key.as_bytes()) as usize) % DIRECTORY_SHARDS]
    }

    /// The live activation of `key`, created (without loading) if there is none.
    fn get_or_insert(&self, shared: &Shared, key: &str) -> Result<Arc<Slot<A>>, Failure> {
        let shard = self.shard(key);
        if let Some(slot) = shard.lock().get(key) {
            return Ok(slot.clone());
        }
        // A new activation needs a place under the live cap; making one may passivate
        // another activation, so no shard lock is held here.
        shared.reserve_live()?;
        let mut map = shard.lock();
        if let Some(slot) = map.get(key) {
            shared.release_live();
            return Ok(slot.clone());
        }
        // The key is copied only here, for a new activation (a delivery or call to a live
        // one, the common case, allocates nothing for it).
        let key: Arc<str> = Arc::from(key);
        let slot = Arc::new(Slot {
            key: key.clone(),
            store_key: crate::codec::state_key(A::NAME, &key).into(),
            used_and_replying: AtomicU64::new(shared.now_ms() & !REPLYING),
            inner: Mutex::new(SlotInner {
                activation: Activation::empty(),
                queue: VecDeque::new(),
                running: false,
                retired: false,
            }),
        });
        map.insert(key, slot.clone());
        shared.metrics.activations.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Queues `envelope` on the activation of `key`, or, if the activation is idle (no task
    /// runs its turns), returns it with the envelope as [`Idle`]: the caller must start its
    /// turns (`activation::start` or `activation::start_here`). On `Err` the envelope
    /// comes back, unqueued.
    pub(crate) fn enqueue(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        envelope: Envelope<A>,
    ) -> Result<Option<Idle<A>>, Refused<A>> {
        loop {
            let slot = match self.get_or_insert(shared, key) {
                Ok(slot) => slot,
                Err(failure) => return Err((failure, Box::new(envelope))),
            };
            let mut inner = slot.inner.lock();
            if inner.retired {
                continue;
            }
            if inner.queue.len() >= shared.config.mailbox_capacity {
                shared.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                let failure = Failure::Overloaded(Overload::Mailbox);
                return Err((failure, Box::new(envelope)));
            }
            slot.used_and_replying
                .store(shared.now_ms() & !REPLYING, Ordering::Relaxed);
            if inner.running {
                inner.queue.push_back(envelope);
                return Ok(None);
            }
            // Idle, so its queue is empty: the envelope goes straight to its first turn.
            inner.running = true;
            slot.clear_replying();
            drop(inner);
            return Ok(Some(Idle {
                slot,
                first: envelope,
            }));
        }
    }

    /// Retires `slot` if it may be passivated; the caller holds the shard lock.
    fn try_retire(slot: &Slot<A>) -> bool {
        let Some(mut inner) = slot.inner.try_lock() else {
            return false;
        };
        if inner.retired || !inner.passivatable() {
            return false;
        }
        inner.retired = true;
        true
    }
}

impl<A: Handlers> Registry<A> {
    /// The registry of `A`, if it is registered.
    pub(crate) fn of(shared: &Shared) -> Option<Arc<Registry<A>>> {
        shared
            .registry_any(std::any::TypeId::of::<A>())?
            .downcast::<Registry<A>>()
            .ok()
    }

    /// Passivates every activation idle for longer than the type's idle timeout.
    pub(crate) fn sweep_idle(&self, shared: &Shared) -> usize {
        let now = shared.now_ms();
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut passivated = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, slot| {
                let idle = now.saturating_sub(slot.last_used()) >= idle_ms;
                let retire = idle && Self::try_retire(slot);
                if retire {
                    // Out of the live count before it is out of the directory: a call at the
                    // cap that no longer finds it finds its place free (see `reserve_live`).
                    shared.passivated(1);
                    passivated += 1;
                }
                !retire
            });
        }
        passivated
    }

    /// Passivates the least recently used idle activation among a sample, or says whether
    /// one of those examined will be idle in a moment ([`Eviction::Soon`]).
    pub(crate) fn evict_idle(&self, shared: &Shared) -> Eviction {
        let start = self.evict_cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, Arc<str>, u64)> = None;
        let mut soon = false;
        let mut examined = 0;
        'shards: for i in 0..DIRECTORY_SHARDS {
            let idx = (start + i) % DIRECTORY_SHARDS;
            for slot in self.shards[idx].lock().values() {
                examined += 1;
                match slot.inner.try_lock() {
                    Some(inner) if inner.passivatable() => {
                        let used = slot.last_used();
                        if best.as_ref().is_none_or(|b| used < b.2) {
                            best = Some((idx, slot.key.clone(), used));
                        }
                    }
                    Some(inner) => soon |= inner.ending(slot.replying()),
                    // Held for a moment (the lock is never held across an await).
                    None => soon = true,
                }
                if (examined >= EVICTION_SAMPLE && best.is_some()) || examined >= EVICTION_LIMIT {
                    break 'shards;
                }
            }
        }
        let Some((idx, key, _)) = best else {
            return if soon { Eviction::Soon } else { Eviction::None };
        };
        let mut map = self.shards[idx].lock();
        if map.get(&key).is_some_and(|slot| Self::try_retire(slot)) {
            // Counted out before it leaves the directory, as in `sweep_idle`.
            shared.passivated(1);
            map.remove(&key);
            return Eviction::Evicted;
        }
        // It was given a message meanwhile (or its lock was held): look again.
        Eviction::Soon
    }
}

/// An activation's state in memory.
pub(crate) struct Loaded<A> {
    pub(crate) state: A,
    /// Timers, subscribers and subscriptions: committed with the state.
    pub(crate) meta: ActorMeta,
    /// The record of the state as last written (or loaded): what a rollback returns to, and
    /// what a turn's result is compared with to skip writes that change nothing.
    pub(crate) record: Option<Arc<[u8]>>,
    /// This turn deleted the actor: its record is removed unless something is left.
    pub(crate) deleted: bool,
    /// Results of idempotent requests this activation kept whose writes may not have reached
    /// the store yet (a lookup reads the store, which would miss them). Each leaves once its
    /// write settled.
    pub(crate) kept: thin_vec::ThinVec<PendingKept>,
    /// The ownership epoch of the actor's shard it was loaded under: its writes commit only
    /// while this node still holds the shard under it.
    pub(crate) epoch: u64,
}

/// A result of an idempotent request on its way to the `replies` keyspace.
pub(crate) struct PendingKept {
    pub(crate) idempotency: String,
    pub(crate) result: KeptResult,
    pub(crate) expires_ms: u64,
    /// The write that stores it.
    pub(crate) ticket: Arc<Ticket>,
}

/// What an activation keeps between turns. The pending write outlives the state: after an
/// unload (panic, undecodable record, failed commit) the next load waits for it, and replies
/// stay gated on it.
pub(crate) struct Activation<A> {
    pub(crate) loaded: Option<Loaded<A>>,
    /// The latest write of this actor while it may not be durable yet.
    pub(crate) last_write: Option<Arc<Ticket>>,
}

impl<A> Activation<A> {
    pub(crate) fn empty() -> Self {
        Activation {
            loaded: None,
            last_write: None,
        }
    }

    /// Nothing of this activation is waiting to become durable.
    pub(crate) fn settled(&self) -> bool {
        self.last_write.as_ref().is_none_or(|t| t.settled())
    }
}
