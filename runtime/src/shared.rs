//! What the runtime's parts share: the configuration, the store, the committer, the set of
//! registered types (type-erased: [`AnyRegistry`]), admission, the live-activation cap, and
//! the placement. Everything here is named by the modules below the runtime; nothing here
//! names them back (the directory, turns and services reach it through [`AnyRegistry`] and
//! [`Services`]).

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::backlog::Backlog;
use crate::codec::{ActorRef, OutboxId, OutboxRecord, Payload};
use crate::commit::{Committer, KeyWrite};
use crate::dead_letters::{DeadLetterId, Registry as DeadLetters};
use crate::error::{Failure, Overload, StorageError};
use crate::loader::{Job, Loader};
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::store::{Durability, Space, Store};

/// Settings fixed when the runtime opens.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) durability: Durability,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_live_activations: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) commit_queue: usize,
    pub(crate) outbox_capacity: usize,
    pub(crate) watch_capacity: usize,
    /// How long the result of an idempotent request is kept.
    pub(crate) idempotency_retention: Duration,
    /// Test seam: outbox entries are kept, never delivered.
    pub(crate) hold_deliveries: bool,
    /// Test seam: the first outbox sequence number of this run, instead of the clock's.
    pub(crate) outbox_numbering_from: Option<u64>,
    /// How often the outbox frontier is written, if it moved (see [`crate::frontier`]).
    pub(crate) frontier_every: Duration,
    /// A test runtime's virtual time, instead of the system's.
    pub(crate) virtual_time: Option<Arc<crate::clock::VirtualTime>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            durability: Durability::Sync,
            idle_timeout: Duration::from_secs(300),
            max_live_activations: 1_000_000,
            mailbox_capacity: 1024,
            call_timeout: Duration::from_secs(30),
            commit_queue: 65_536,
            outbox_capacity: 100_000,
            watch_capacity: 1024,
            idempotency_retention: Duration::from_secs(24 * 60 * 60),
            hold_deliveries: false,
            outbox_numbering_from: None,
            frontier_every: Duration::from_millis(100),
            virtual_time: None,
        }
    }
}

/// Every shard: a single node owns them all.
pub(crate) const ALL_SHARDS: std::ops::Range<u16> = 0..crate::codec::SHARDS;

/// A registered actor type, type-erased twice: for housekeeping ([`AnyRegistry`]) and, for
/// typed handles, its mailbox (an `Arc<dyn Mailbox<A>>`, see `mailbox::mailbox_of`).
pub(crate) struct Registered {
    pub(crate) registry: Arc<dyn AnyRegistry>,
    pub(crate) mailbox: Arc<dyn Any + Send + Sync>,
    /// The type's JSON face for the HTTP ingress (an `Arc<dyn JsonActor>`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) json: Option<Arc<dyn Any + Send + Sync>>,
    /// The type's results as JSON, as an idempotent HTTP call keeps them.
    #[cfg(feature = "http")]
    pub(crate) json_reply: Option<EncodeReply>,
    /// How calls other nodes route here reach the type (an `Arc<dyn ServeRouted>`, see
    /// `remote.rs`).
    #[cfg(feature = "cluster")]
    pub(crate) routed: Arc<dyn Any + Send + Sync>,
}

/// Encodes the value a handler returned: its name, its value (`T`, or `Result<T, E>`) →
/// whether it is a success, and the bytes.
#[cfg(feature = "http")]
pub(crate) type EncodeReply = fn(&str, &(dyn Any + Send)) -> Result<(bool, Vec<u8>), String>;

/// What an attempt to make room under the live cap found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// An idle activation was passivated: there is room.
    Evicted,
    /// None is idle, but one is ending a turn whose reply has been handed over (or its lock
    /// was held for a moment): it will be idle in a moment. A caller that got a reply and
    /// calls another key at the cap finds the activation that replied in this state when its
    /// task has not yet put it back; it must not be refused for that.
    Soon,
    /// Every activation examined is busy (or there is none): refuse.
    None,
}

/// The type-erased face of a registered type's directory, for runtime-wide housekeeping and
/// durable deliveries.
pub(crate) trait AnyRegistry: Send + Sync {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Passivates every activation idle for longer than the type's idle timeout.
    fn sweep(&self, shared: &Shared) -> usize;
    /// Passivates the least recently used idle activation among a sample, or says whether
    /// one will be idle in a moment.
    fn evict_one(&self, shared: &Shared) -> Eviction;
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

/// The host service as the turns see it: where committed outbox entries and new timers go.
pub(crate) trait Services: Send + Sync {
    /// Durable outbox entries for the dispatcher.
    fn committed(&self, entries: Vec<(OutboxId, OutboxRecord)>);
    /// A committed turn scheduled a timer of `shard` due at `due_ms`.
    fn timer_scheduled(&self, shard: u16, due_ms: u64);
    /// This node took `shard` (a cluster node): deliver its outbox entries, fire its timers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn shard_taken(&self, shard: u16);
    /// This node gave `shard` up: stop delivering its entries and firing its timers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn shard_dropped(&self, shard: u16);
    /// Writes the outbox frontier now if it moved (a graceful shutdown): the next start then
    /// reads no message that was processed.
    fn flush_frontier(&self) -> futures::future::BoxFuture<'static, ()>;
    /// A parked timer of `shard` was retried or discarded: scans stop skipping it.
    fn unpark_timer(&self, id: DeadLetterId, shard: u16) -> Result<(), Failure>;
    /// Delivers what can be delivered and fires what is due now, then says whether that
    /// left the services with nothing to do (a test runtime's `advance`).
    fn settle(&self) -> futures::future::BoxFuture<'static, Result<Settled, Failure>>;
}

/// What [`Services::settle`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settled {
    /// No outbox entry waits or is in delivery, and no timer is due or firing.
    pub(crate) quiet: bool,
    /// When the next timer scan is due (ms since the Unix epoch, `u64::MAX`: no timer).
    pub(crate) next_due_ms: u64,
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
        /// The span it was sent under.
        cause: crate::trace::Cause,
        /// The entry is in another shard than its target (a cluster node): the target's turn
        /// keeps the message's idempotency key instead of deleting the entry, and the
        /// sender deletes the entry once the turn is durable.
        apart: bool,
    },
    /// A due timer.
    Timer {
        /// Its [`crate::codec::timer_key`]: the key it is stored under if `stored`, else
        /// the name the timer service and dead letters know it by.
        key: Arc<[u8]>,
        /// Stored under `key` by an older version (else kept in its actor's record).
        stored: bool,
        name: String,
        due_ms: u64,
        every_ms: Option<u64>,
        /// What it delivers (kept to re-arm a periodic timer).
        message: Box<Payload>,
        /// An earlier turn on it failed and was reported: this one's failure is quiet.
        retry: bool,
    },
}

/// A parked timer to discard: its key, and its name and due time in the actor's record. With
/// an empty name (timer names never are), the actor's timer index entry `key`, due at
/// `due_ms`, to remove or move to its earliest timer: the timer service found it due with no
/// timer behind it.
pub(crate) struct DiscardTimer {
    pub(crate) key: Arc<[u8]>,
    pub(crate) name: String,
    pub(crate) due_ms: u64,
}

impl Delivery {
    /// Whether an earlier turn on this message failed (and was reported then).
    pub(crate) fn is_retry(&self) -> bool {
        match self {
            Delivery::Outbox { retry, .. } | Delivery::Timer { retry, .. } => *retry,
        }
    }
}

/// Told when a delivered message's turn is over: `Ok` once its processing is durable.
pub(crate) type DoneFn = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// A [`DoneFn`] and the outcome it will hear (a turn that unwound without answering is
/// reported as a failure by the `Done` it was wrapped in; a runtime that stopped first, as
/// `ShuttingDown`).
pub(crate) fn done_channel() -> (DoneFn, impl Future<Output = Result<(), Failure>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done: DoneFn = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    let outcome = async move { rx.await.unwrap_or(Err(Failure::ShuttingDown)) };
    (done, outcome)
}

/// The way committed outbox entries reach the dispatcher, in commit order.
///
/// A failed commit's entries may be in the store after all (a failed sync): a task checks
/// (off the async workers) and hands over those it finds. Entries committed after them wait
/// here until that check is done, or the dispatcher would get a sender's later message (or a
/// publisher's later event) first. Empty nearly always: a handoff then only reads one flag.
#[derive(Default)]
pub(crate) struct Handoff {
    /// True while `steps` is not empty.
    holding: AtomicBool,
    steps: parking_lot::Mutex<HandoffSteps>,
}

/// Outbox entries with their records, as the dispatcher takes them.
type Entries = Vec<(OutboxId, OutboxRecord)>;

#[derive(Default)]
struct HandoffSteps {
    /// Oldest first: a check still running (`None`), or entries to hand over.
    queue: VecDeque<(u64, Option<Entries>)>,
    /// The number of the next check.
    next_check: u64,
}

/// Ends check `check` of a failed commit's entries when dropped, handing over `kept`.
struct CheckDone {
    shared: Arc<Shared>,
    check: u64,
    kept: Entries,
}

impl Drop for CheckDone {
    fn drop(&mut self) {
        self.shared
            .checked(self.check, std::mem::take(&mut self.kept));
    }
}

/// State shared by the runtime, its handles, activations and services.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `None` once shut down: the store is closed so the path can be opened again.
    pub(crate) store: parking_lot::RwLock<Option<Store>>,
    pub(crate) committer: Committer,
    pub(crate) loader: Loader,
    pub(crate) metrics: Arc<Metrics>,
    /// Looked up by every turn that delivers or sends (foldhash: the keys are the registered
    /// types, fixed at start, so nothing a request sends can collide them).
    pub(crate) types: foldhash::HashMap<TypeId, Registered>,
    pub(crate) by_name: foldhash::HashMap<&'static str, TypeId>,
    pub(crate) backlog: Backlog,
    /// The outbox frontier last made durable ([`crate::frontier`]).
    pub(crate) frontier: Arc<crate::frontier::Frontier>,
    /// Whether this node keeps the frontier (a single node): then a processed outbox entry
    /// is recorded by its target instead of deleted.
    pub(crate) keeps_frontier: bool,
    /// The messages parked in this run.
    pub(crate) dead_letters: DeadLetters,
    /// The host service, once started.
    pub(crate) services: OnceLock<Arc<dyn Services>>,
    /// Committed outbox entries held back behind a failed commit's entries that are being
    /// checked ([`Shared::recover_unsure`]), so that the dispatcher gets them in commit order.
    pub(crate) handoff: Handoff,
    pub(crate) live: AtomicUsize,
    /// Which calls are accepted, and how many are in flight.
    pub(crate) admission: Admission,
    /// The time: the system's, or a test runtime's virtual time.
    pub(crate) clock: crate::clock::Clock,
    pub(crate) tokio: tokio::runtime::Handle,
    /// Which node serves each shard.
    pub(crate) placement: Arc<dyn Placement>,
    /// How calls reach the shards other nodes serve (set once the node joined its cluster).
    #[cfg(feature = "cluster")]
    pub(crate) forward: OnceLock<Arc<dyn crate::placement::Forward>>,
    /// The actors (type, key) whose events published on other nodes are handed to their
    /// watchers here.
    #[cfg(feature = "cluster")]
    pub(crate) followed: parking_lot::Mutex<std::collections::HashSet<(&'static str, String)>>,
}

impl Shared {
    /// Sleeps `duration` on the runtime's timer (the caller may run on another executor).
    #[cfg(feature = "cluster")]
    pub(crate) fn sleep(&self, duration: std::time::Duration) -> tokio::time::Sleep {
        let _runtime = self.tokio.enter();
        tokio::time::sleep(duration)
    }

    /// The registry of the type stored under `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Registered> {
        self.types.get(self.by_name.get(name)?)
    }

    /// The storage names of all registered types, sorted.
    #[cfg(feature = "http")]
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The registry of type `type_id` (an `Arc<Registry<A>>` behind `as_any`).
    pub(crate) fn registry_any(&self, type_id: TypeId) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(self.types.get(&type_id)?.registry.clone().as_any())
    }

    /// Whether a type is registered.
    pub(crate) fn registered(&self, type_id: TypeId) -> bool {
        self.types.contains_key(&type_id)
    }

    /// The mailbox of type `type_id` (an `Arc<dyn Mailbox<A>>`).
    pub(crate) fn typed_mailbox(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        Some(&*self.types.get(&type_id)?.mailbox)
    }

    /// The write that says the message stored as `key` was processed, for when its
    /// target does not record it: where the frontier is kept, a mark under its number (the
    /// message may share its entry with others of its sender's turn; the frontier passes the
    /// mark as it passes entries); elsewhere, the deletion of its entry.
    pub(crate) fn processed_write(&self, key: Arc<[u8]>) -> KeyWrite {
        KeyWrite {
            space: Space::Outbox,
            key,
            value: self
                .keeps_frontier
                .then(|| crate::codec::OUTBOX_PROCESSED.into()),
        }
    }

    /// Queues an outbox entry on its target; `done` hears when its turn is over.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        record: &OutboxRecord,
        id: OutboxId,
        verify: bool,
        retry: bool,
        done: DoneFn,
    ) -> Result<(), Failure> {
        let delivery = Delivery::Outbox {
            key: id.key(),
            idempotency: record.idempotency.clone(),
            verify,
            retry,
            cause: record.cause.clone(),
            apart: false,
        };
        self.deliver_to(&record.target, &record.payload, delivery, done)
    }

    /// Queues a durable message (outbox entry or timer firing) on `target`.
    pub(crate) fn deliver_to(
        self: &Arc<Self>,
        target: &ActorRef,
        payload: &Payload,
        delivery: Delivery,
        done: DoneFn,
    ) -> Result<(), Failure> {
        let found = self.by_name.get(target.actor.as_str());
        let Some(registered) = found.and_then(|id| self.types.get(id)) else {
            return Err(Failure::Invalid(format!(
                "no registered actor type is named `{}`",
                target.actor
            )));
        };
        registered
            .registry
            .deliver(self, &target.key, payload, delivery, done)
    }

    /// Outbox entries of a batch reported failed: a failure after the write may still have
    /// made them durable (the next sync does), and then their senders' state says they were
    /// sent. Those still in the store after a sync go to the dispatcher; the others give
    /// their outbox places back.
    pub(crate) fn recover_unsure(self: &Arc<Self>, entries: Vec<(OutboxId, OutboxRecord)>) {
        if entries.is_empty() {
            return;
        }
        // In line before anything committed after the failed write is handed over.
        let check = {
            let mut steps = self.handoff.steps.lock();
            let check = steps.next_check;
            steps.next_check += 1;
            steps.queue.push_back((check, None));
            self.handoff.holding.store(true, Ordering::Release);
            check
        };
        let shared = self.clone();
        let count = entries.len();
        // Ends the check when dropped: a task that never ran or panicked must not hold every
        // later handoff back (what it would have found is read at the next start).
        let done = CheckDone {
            shared: self.clone(),
            check,
            kept: Vec::new(),
        };
        self.tokio.spawn(async move {
            // The whole guard moves into the task (not just the field it sets).
            let mut done = done;
            let checked = shared
                .with_store("outbox check", move |store| {
                    let mut kept = Vec::new();
                    let mut absent = Vec::new();
                    let mut unknown = 0;
                    for (id, record) in entries {
                        match store.outbox_entry(id) {
                            Ok(Some(_)) => kept.push((id, record)),
                            Ok(None) => absent.push(record.stored_as(id)),
                            // Unknowable now: the next start reads what is stored (so the
                            // frontier stays below it in this run).
                            Err(_) => unknown += 1,
                        }
                    }
                    Ok((kept, absent, unknown))
                })
                .await;
            done.kept = match checked {
                Ok((kept, absent, unknown)) => {
                    shared.backlog.release(absent.len() + unknown);
                    shared.backlog.settled(absent);
                    if !kept.is_empty() {
                        tracing::warn!(
                            messages = kept.len(),
                            "a failed commit's messages became durable after all; delivering them"
                        );
                        shared
                            .metrics
                            .sends
                            .fetch_add(kept.len() as u64, Ordering::Relaxed);
                    }
                    kept
                }
                // Unknowable now (shutting down): the next start reads what is stored.
                Err(failure) => {
                    shared.backlog.release(count);
                    tracing::error!(error = %failure, "cannot check a failed commit's messages");
                    Vec::new()
                }
            };
        });
    }

    /// The check `check` is done and found `kept` in the store: hands over, in order,
    /// everything that no longer waits for a check before it.
    fn checked(&self, check: u64, kept: Entries) {
        let mut steps = self.handoff.steps.lock();
        if let Some(step) = steps.queue.iter_mut().find(|(c, _)| *c == check) {
            step.1 = Some(kept);
        }
        let host = self.services.get();
        while let Some((_, Some(_))) = steps.queue.front() {
            let Some((_, Some(entries))) = steps.queue.pop_front() else {
                break;
            };
            // Under the lock: a handoff that finds the queue empty goes after these.
            if let (Some(host), false) = (host, entries.is_empty()) {
                host.committed(entries);
            }
        }
        if steps.queue.is_empty() {
            self.handoff.holding.store(false, Ordering::Release);
        }
    }

    /// Hands committed outbox entries to the dispatcher, after any failed commit's entries
    /// still being checked ([`Handoff`]).
    pub(crate) fn hand_over(&self, entries: Entries) {
        let Some(host) = self.services.get() else {
            return;
        };
        if !self.handoff.holding.load(Ordering::Acquire) {
            return host.committed(entries);
        }
        let mut steps = self.handoff.steps.lock();
        if steps.queue.is_empty() {
            host.committed(entries);
        } else {
            steps.queue.push_back((u64::MAX, Some(entries)));
        }
    }

    /// Hands outbox entries written outside any turn (by `Runtime::send`) to the dispatcher.
    pub(crate) fn committed(&self, entries: Vec<(OutboxId, OutboxRecord)>) {
        self.metrics
            .sends
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.hand_over(entries);
    }

    /// Activations live now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Closes the store: the runtime's last step.
    pub(crate) fn take_store(&self) -> Option<Store> {
        self.store.write().take()
    }

    /// The store, unless the runtime has shut down.
    pub(crate) fn store(&self) -> Result<Store, Failure> {
        self.store.read().clone().ok_or(Failure::ShuttingDown)
    }

    /// Runs `f` on the store on a loader thread, off the async workers (fjall may block);
    /// `what` names it in the error if it panics.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, Failure> {
        let store = self.store()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(|| f(&store))));
        });
        if let Err(job) = self.loader.run(job) {
            // Every loader is busy and their queue is full: Tokio's blocking pool helps.
            self.tokio.spawn_blocking(job);
        }
        match rx.await {
            Ok(Ok(read)) => read.map_err(Failure::Storage),
            Ok(Err(_)) => Err(Failure::Storage(StorageError::new(format!(
                "{what} panicked"
            )))),
            Err(_) => Err(Failure::Storage(StorageError::new(format!(
                "{what} was dropped (the runtime is shutting down)"
            )))),
        }
    }

    /// Monotonic milliseconds, by the runtime's clock (activations' idleness).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    /// Takes a place under the live-activation cap, passivating an idle activation if needed.
    pub(crate) fn reserve_live(&self) -> Result<(), Failure> {
        let cap = self.config.max_live_activations;
        let mut waited_since: Option<Instant> = None;
        'room: loop {
            let live = self.live.load(Ordering::Acquire);
            if live < cap {
                if self
                    .live
                    .compare_exchange(live, live + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            let mut soon = false;
            for r in self.types.values() {
                match r.registry.evict_one(self) {
                    Eviction::Evicted => continue 'room,
                    Eviction::Soon => soon = true,
                    Eviction::None => {}
                }
            }
            // A sweep (or another caller's eviction) may have passivated an activation
            // between the count above and the search: it leaves the count before it leaves
            // the directory, so one the search no longer found shows here as a free place.
            if self.live.load(Ordering::Acquire) < cap {
                continue;
            }
            // An activation whose reply was handed over is idle once its task puts it back
            // (a caller that got that reply may call another key first): wait for that, so
            // sequential calls under the cap are never refused. Anything else is busy.
            let since = *waited_since.get_or_insert_with(Instant::now);
            if soon && since.elapsed() < ENDING_TURN_LIMIT {
                std::thread::yield_now();
                continue;
            }
            self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::Overloaded(Overload::LiveActivations));
        }
    }

    pub(crate) fn release_live(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn passivated(&self, n: usize) {
        if n > 0 {
            self.live.fetch_sub(n, Ordering::AcqRel);
            self.metrics
                .passivations
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Passivates idle activations of every type.
    pub(crate) fn sweep(&self) -> usize {
        self.types.values().map(|r| r.registry.sweep(self)).sum()
    }
}

/// How long a new activation waits at most, at the live cap, for activations that are ending
/// a turn whose reply was handed over ([`Eviction::Soon`]) before its call is refused. It is
/// a backstop, not the wait itself: such an activation is idle as soon as its task runs a
/// few more instructions, so the wait ends on that condition (while every live activation
/// is busy with a turn, a new key is refused at once).
const ENDING_TURN_LIMIT: Duration = Duration::from_millis(100);
