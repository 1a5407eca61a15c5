//! The directory: per actor type, a sharded map from key to live activation.
//!
//! A live activation is a [`Slot`]: its state, a bounded queue, and no task of its own. A
//! task runs only while the queue has messages ([`crate::activation`]). Get-or-insert happens
//! under the shard lock, so there is never more than one activation per (type, key);
//! passivation marks a slot retired under the same lock, and an enqueue that finds a retired
//! slot looks it up again.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};
use xxhash_rust::xxh3::xxh3_64;

use crate::activation::{self, Activation};
use crate::actor::Handlers;
use crate::codec::{ActorMeta, ActorRef, Payload, Subscriber};
use crate::context::Chain;
use crate::error::{DecodeError, Failure, Overload};
use crate::handle::Reply;
use crate::runtime::Shared;

const DIRECTORY_SHARDS: usize = 64;
/// Slots examined to pick an eviction victim when the live cap is reached (sampled LRU).
const EVICTION_SAMPLE: usize = 32;
/// Slots examined at most before giving up (`Overloaded`) when none is idle.
const EVICTION_LIMIT: usize = 8 * EVICTION_SAMPLE;

/// What an activation is asked to do.
pub(crate) enum Body<A: Handlers> {
    /// Run a handler.
    Call(A::Message),
    /// Add a durable subscriber to this actor's events.
    Subscribe(Box<Subscriber>),
    /// Remove a durable subscriber.
    Unsubscribe(Box<ActorRef>),
    /// An idempotent call: answered from the stored result of an earlier call with the same
    /// key, else run and its result stored with the turn.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Keyed(Box<KeyedCall<A>>),
    /// Read the state without running a handler.
    Read(ReadFn<A>),
    /// Delete the actor: state, timers, subscriptions.
    Delete,
    /// Drop one of its timers, parked as a dead letter, for good.
    DiscardTimer(Box<DiscardTimer>),
}

/// A parked timer to discard: its stored key, and its name and due time in the actor's
/// record.
pub(crate) struct DiscardTimer {
    pub(crate) key: Arc<[u8]>,
    pub(crate) name: String,
    pub(crate) due_ms: u64,
}

/// A read of an actor's state and metadata, run in a turn of its own.
pub(crate) type ReadFn<A> = Box<dyn FnOnce(&A, &ActorMeta) -> Box<dyn Any + Send> + Send>;

/// Encodes a handler's result for storage: the handler's name, its value (`T`, or
/// `Result<T, E>`) → whether it is a success, and the bytes to store and to answer with.
pub(crate) type EncodeReply = fn(&str, &(dyn Any + Send)) -> Result<(bool, Vec<u8>), String>;

/// A call with a caller-chosen idempotency key.
pub(crate) struct KeyedCall<A: Handlers> {
    pub(crate) message: A::Message,
    pub(crate) key: String,
    /// A hash of the request: the same key with another request is a conflict.
    pub(crate) request: u64,
    pub(crate) encode: EncodeReply,
}

/// The answer to a [`KeyedCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyedOutcome {
    /// The handler ran now (`ok: false`: it returned an error); `body` is its encoded result.
    Fresh { ok: bool, body: Vec<u8> },
    /// An earlier call with this key and request ran it: its stored result.
    Replayed { ok: bool, body: Vec<u8> },
    /// The key was used before for a different request.
    Conflict,
}

/// Told when a delivered message's turn is over: `Ok` once its processing is durable.
pub(crate) type DoneFn = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// Who hears the outcome of a turn.
pub(crate) enum Replier {
    /// A caller waiting for the handler's value.
    Call(oneshot::Sender<Reply>),
    /// The dispatcher of a durable message.
    Done(Done),
}

impl Replier {
    pub(crate) fn done(done: DoneFn) -> Replier {
        Replier::Done(Done(Some(done)))
    }

    /// The caller gave up (timed out): nobody waits for the turn.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, Replier::Call(tx) if tx.is_closed())
    }

    pub(crate) fn send(self, reply: Reply) {
        match self {
            Replier::Call(tx) => {
                let _ = tx.send(reply);
            }
            Replier::Done(mut done) => {
                let (outcome, value) = match reply {
                    Ok(value) => (Ok(()), Some(value)),
                    Err(failure) => (Err(failure), None),
                };
                // Report before dropping the handler's value: a user `Drop` that panics must
                // not lose the report.
                if let Some(done) = done.0.take() {
                    done(outcome);
                }
                drop(value);
            }
        }
    }
}

/// The dispatcher's callback, which must hear exactly once: if a turn unwinds before
/// answering (a panic outside the handler, before anything was submitted), dropping it
/// reports a failure, so the message is retried instead of being forgotten.
pub(crate) struct Done(Option<DoneFn>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(Failure::Invalid(
                "the turn unwound before answering (a panic outside the handler)".into(),
            )));
        }
    }
}

/// Where a durable message came from: its removal commits with the turn that processes it,
/// which is what makes the processing exactly-once.
pub(crate) enum Delivery {
    /// An outbox entry.
    Outbox {
        key: Arc<[u8]>,
        idempotency: Option<String>,
        /// An earlier turn on this message failed in the commit, after which its batch may
        /// still have become durable: the turn first checks that the entry still exists.
        verify: bool,
        /// An earlier turn on it failed and was reported: this one's failure is quiet.
        retry: bool,
    },
    /// A due timer.
    Timer {
        key: Arc<[u8]>,
        name: String,
        due_ms: u64,
        every_ms: Option<u64>,
        /// What it delivers (kept to re-arm a periodic timer).
        message: Box<Payload>,
        /// An earlier turn on it failed and was reported: this one's failure is quiet.
        retry: bool,
    },
}

impl Delivery {
    /// Whether an earlier turn on this message failed (and was reported then).
    pub(crate) fn is_retry(&self) -> bool {
        match self {
            Delivery::Outbox { retry, .. } | Delivery::Timer { retry, .. } => *retry,
        }
    }
}

/// One message for an activation.
pub(crate) struct Envelope<A: Handlers> {
    pub(crate) body: Body<A>,
    pub(crate) chain: Chain,
    pub(crate) reply: Option<Replier>,
    /// Boxed: rare, and an envelope's size is paid by every queue slot.
    pub(crate) delivery: Option<Box<Delivery>>,
}

/// A live activation.
pub(crate) struct Slot<A: Handlers> {
    pub(crate) key: Arc<str>,
    /// Its state key (which starts with its shard).
    pub(crate) store_key: Arc<[u8]>,
    /// Milliseconds since the runtime opened, at the last enqueue.
    last_used: AtomicU64,
    pub(crate) inner: Mutex<SlotInner<A>>,
}

impl<A: Handlers> Slot<A> {
    /// The actor's shard.
    pub(crate) fn shard(&self) -> u16 {
        crate::codec::shard_of_state_key(&self.store_key)
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
}

/// An activation that was idle, marked running for its first message: whoever holds this
/// must run its turns, starting with `first`.
#[must_use = "an idle activation's turns must be started"]
pub(crate) struct Idle<A: Handlers> {
    pub(crate) slot: Arc<Slot<A>>,
    pub(crate) first: Envelope<A>,
}

/// An envelope that was not queued, and why.
pub(crate) type Refused<A> = (Failure, Box<Envelope<A>>);

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
    fn get_or_insert(&self, shared: &Shared, key: &Arc<str>) -> Result<Arc<Slot<A>>, Failure> {
        let shard = self.shard(key);
        if let Some(slot) = shard.lock().get(&**key) {
            return Ok(slot.clone());
        }
        // A new activation needs a place under the live cap; making one may passivate
        // another activation, so no shard lock is held here.
        shared.reserve_live()?;
        let mut map = shard.lock();
        if let Some(slot) = map.get(&**key) {
            shared.release_live();
            return Ok(slot.clone());
        }
        let slot = Arc::new(Slot {
            key: key.clone(),
            store_key: crate::codec::state_key(A::NAME, key).into(),
            last_used: AtomicU64::new(shared.now_ms()),
            inner: Mutex::new(SlotInner {
                activation: Activation::empty(),
                queue: VecDeque::new(),
                running: false,
                retired: false,
            }),
        });
        map.insert(key.clone(), slot.clone());
        shared.metrics.activations.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Queues `envelope` on the activation of `key`, or, if the activation is idle (no task
    /// runs its turns), returns it with the envelope as [`Idle`]: the caller must start its
    /// turns ([`activation::start`] or [`activation::start_here`]). On `Err` the envelope
    /// comes back, unqueued.
    pub(crate) fn enqueue(
        &self,
        shared: &Arc<Shared>,
        key: &Arc<str>,
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
            slot.last_used.store(shared.now_ms(), Ordering::Relaxed);
            if inner.running {
                inner.queue.push_back(envelope);
                return Ok(None);
            }
            // Idle, so its queue is empty: the envelope goes straight to its first turn.
            inner.running = true;
            drop(inner);
            return Ok(Some(Idle {
                slot,
                first: envelope,
            }));
        }
    }

    /// Queues a turn for the runtime's own services (a durable message's delivery, a dead
    /// letter's discard) on `key`'s activation; `done` hears when it is over. On `Err` the
    /// turn was not queued and `done` is never called.
    fn enqueue_durable(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        body: Body<A>,
        delivery: Option<Delivery>,
        done: DoneFn,
    ) -> Result<(), Failure> {
        shared.admit(false)?;
        let envelope = Envelope {
            body,
            chain: None,
            reply: Some(Replier::done(done)),
            delivery: delivery.map(Box::new),
        };
        self.enqueue(shared, &Arc::from(key), envelope)
            .map(|idle| {
                if let Some(idle) = idle {
                    activation::start(shared, idle);
                }
            })
            .map_err(|(failure, envelope)| {
                shared.turn_finished();
                // Not queued: the caller hears of it from this `Err` alone.
                if let Some(Replier::Done(mut done)) = envelope.reply {
                    done.0.take();
                }
                failure
            })
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

/// The type-erased face of a [`Registry`], for runtime-wide housekeeping.
pub(crate) trait AnyRegistry: Send + Sync {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Passivates every activation idle for longer than the type's idle timeout.
    fn sweep(&self, shared: &Shared) -> usize;
    /// Passivates the least recently used idle activation among a sample; false if none
    /// could be passivated.
    fn evict_one(&self, shared: &Shared) -> bool;
    /// The type's JSON face, for the HTTP ingress.
    #[cfg(feature = "http")]
    fn json(&self) -> Arc<dyn crate::json::JsonActor>;
    /// Queues a durable message on `key`'s activation; `done` hears when its turn is over.
    /// On `Err` the message was not queued and `done` is never called.
    fn deliver(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        payload: &Payload,
        delivery: Delivery,
        done: DoneFn,
    ) -> Result<(), Failure>;
    /// Queues the discard of a parked timer on `key`'s activation; `done` hears when its
    /// deletion is durable. On `Err` nothing was queued and `done` is never called.
    fn discard_timer(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        timer: DiscardTimer,
        done: DoneFn,
    ) -> Result<(), Failure>;
}

impl<A: Handlers> AnyRegistry for Registry<A> {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    #[cfg(feature = "http")]
    fn json(&self) -> Arc<dyn crate::json::JsonActor> {
        Arc::new(crate::json::JsonFace::<A>::new())
    }

    fn deliver(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        payload: &Payload,
        delivery: Delivery,
        done: DoneFn,
    ) -> Result<(), Failure> {
        crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
        // Not served here: retried later (the dispatcher counts it as busy).
        crate::placement::local_epoch(&*shared.placement, crate::codec::shard_of(A::NAME, key))?;
        let undecodable = |reason: String| {
            Failure::Decode(DecodeError {
                actor: A::NAME,
                key: key.to_string(),
                reason: format!("undeliverable message: {reason}"),
            })
        };
        let body = match payload {
            Payload::Message { handler, args } => {
                Body::Call(A::__decode_message(handler, args).map_err(undecodable)?)
            }
            // An event is the one argument of its handler.
            Payload::Event { handler, event } if A::__event_handler(handler).is_some() => {
                Body::Call(A::__decode_message(handler, event).map_err(undecodable)?)
            }
            Payload::Event { handler, .. } => {
                return Err(undecodable(format!(
                    "`{}` has no handler named `{handler}` taking one argument",
                    A::NAME
                )));
            }
            Payload::Positional(bytes) => {
                Body::Call(A::__decode_positional(bytes).map_err(undecodable)?)
            }
            Payload::Subscribe(subscriber) => Body::Subscribe(Box::new(subscriber.clone())),
            Payload::Unsubscribe(subscriber) => Body::Unsubscribe(Box::new(subscriber.clone())),
        };
        self.enqueue_durable(shared, key, body, Some(delivery), done)
    }

    fn discard_timer(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        timer: DiscardTimer,
        done: DoneFn,
    ) -> Result<(), Failure> {
        crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
        crate::placement::local_epoch(&*shared.placement, crate::codec::shard_of(A::NAME, key))?;
        self.enqueue_durable(shared, key, Body::DiscardTimer(Box::new(timer)), None, done)
    }

    fn sweep(&self, shared: &Shared) -> usize {
        let now = shared.now_ms();
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut passivated = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, slot| {
                let idle = now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= idle_ms;
                let retire = idle && Self::try_retire(slot);
                passivated += usize::from(retire);
                !retire
            });
        }
        shared.passivated(passivated);
        passivated
    }

    fn evict_one(&self, shared: &Shared) -> bool {
        let start = self.evict_cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, Arc<str>, u64)> = None;
        let mut examined = 0;
        for i in 0..DIRECTORY_SHARDS {
            let idx = (start + i) % DIRECTORY_SHARDS;
            for slot in self.shards[idx].lock().values() {
                examined += 1;
                if slot
                    .inner
                    .try_lock()
                    .is_some_and(|inner| inner.passivatable())
                {
                    let used = slot.last_used.load(Ordering::Relaxed);
                    if best.as_ref().is_none_or(|b| used < b.2) {
                        best = Some((idx, slot.key.clone(), used));
                    }
                }
                if (examined >= EVICTION_SAMPLE && best.is_some()) || examined >= EVICTION_LIMIT {
                    break;
                }
            }
            if (examined >= EVICTION_SAMPLE && best.is_some()) || examined >= EVICTION_LIMIT {
                break;
            }
        }
        let Some((idx, key, _)) = best else {
            return false;
        };
        let mut map = self.shards[idx].lock();
        if map.get(&key).is_some_and(|slot| Self::try_retire(slot)) {
            map.remove(&key);
            drop(map);
            shared.passivated(1);
            return true;
        }
        false
    }
}
