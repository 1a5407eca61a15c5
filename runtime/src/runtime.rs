//! [`Runtime`]: the builder, opening the store (and recovering the outbox), typed handles,
//! sends from outside, watching, statistics and shutdown.

use std::any::TypeId;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor::Handlers;
use crate::codec::{ActorMeta, ActorRef, OutboxId, OutboxRecord, Payload};
use crate::commit::{Committer, FaultHook};
use crate::context::{TimerInfo, timer_infos};
use crate::directory::{AnyRegistry, Body, Delivery, DoneFn, Registry};
use crate::error::{CallError, Error, Failure, Overload, StorageError};
use crate::handle::{Caller, OutsideSend};
use crate::loader::{Job, Loader};
use crate::metrics::{Metrics, Stats};
use crate::outbox::Outbox;
use crate::placement::{LocalPlacement, Placement};
use crate::shard::{Host, HostRef, Periods};
use crate::store::{Durability, Store, UpgradeHook};
use crate::watch::Watch;

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
        }
    }
}

/// Every shard: a single node owns them all.
pub(crate) const ALL_SHARDS: std::ops::Range<u16> = 0..crate::codec::SHARDS;

/// Upper bound of every configured capacity (far above any sane value, far below what
/// would overflow the channels' permit counters).
const MAX_QUEUE: usize = 1 << 30;

/// Threads that read the store for turns (see [`crate::loader`]): more than one, so a read
/// that waits for the disk does not hold up the others.
const LOADER_THREADS: usize = 2;
/// Reads queued for the loaders before they overflow to Tokio's blocking pool.
const LOADER_QUEUE: usize = 4096;

type Registration = Box<dyn FnOnce(Duration) -> (TypeId, &'static str, Arc<dyn AnyRegistry>)>;

/// Configures and opens a [`Runtime`]. Start with [`Runtime::builder`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct Builder {
    path: Option<PathBuf>,
    config: Config,
    registrations: Vec<(TypeId, Registration)>,
    idle_overrides: HashMap<TypeId, Duration>,
    fault: Option<FaultHook>,
    upgrade_hook: Option<UpgradeHook>,
    placement: Arc<dyn Placement>,
}

impl Builder {
    /// The folder of the embedded store (created if missing). Required.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// How durable an acknowledged write is (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Registers an actor type. Every type that is called must be registered.
    pub fn register<A: Handlers>(mut self) -> Self {
        let registration: Registration = Box::new(|idle| {
            let registry: Arc<dyn AnyRegistry> = Arc::new(Registry::<A>::new(idle));
            (TypeId::of::<A>(), A::NAME, registry)
        });
        self.registrations.push((TypeId::of::<A>(), registration));
        self
    }

    /// How long an activation may sit idle before it is passivated (default 5 minutes).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// The idle timeout of one actor type, overriding [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout_for<A: Handlers>(mut self, timeout: Duration) -> Self {
        self.idle_overrides.insert(TypeId::of::<A>(), timeout);
        self
    }

    /// The most activations in memory at once (default 1,000,000). When reached, the least
    /// recently used idle activation of a sample is passivated; if none is idle, new
    /// activations are refused with `Overloaded`.
    pub fn max_live_activations(mut self, max: usize) -> Self {
        self.config.max_live_activations = max;
        self
    }

    /// Messages queued per activation before calls are refused with `Overloaded`
    /// (default 1,024).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.config.mailbox_capacity = capacity;
        self
    }

    /// The longest a call may take, queueing and commit included; a handler running longer
    /// is cancelled and its actor reset (default 30 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Writes that may wait for the committer before writers are slowed down (default
    /// 65,536).
    pub fn commit_queue(mut self, capacity: usize) -> Self {
        self.config.commit_queue = capacity;
        self
    }

    /// Messages (sends, subscription events) that may wait in the outbox for delivery before
    /// turns that send more fail with `Overloaded` (default 100,000).
    pub fn outbox_capacity(mut self, capacity: usize) -> Self {
        self.config.outbox_capacity = capacity;
        self
    }

    /// Events buffered per watched actor for its slowest watcher; a watcher further behind
    /// skips ahead and is told how many it missed (default 1,024).
    pub fn watch_capacity(mut self, capacity: usize) -> Self {
        self.config.watch_capacity = capacity;
        self
    }

    /// How long the outcome of an idempotent request is kept (default 24 hours): an HTTP
    /// call with an `Idempotency-Key`, or a [`Runtime::send_idempotent`]. A repeat within
    /// this time is answered from it (a call) or not processed again (a send); a later one
    /// runs as new. Kept outcomes are stored under their own keys, written with the turn, and
    /// removed by the runtime once expired.
    pub fn idempotency_retention(mut self, retention: Duration) -> Self {
        self.config.idempotency_retention = retention;
        self
    }

    /// Test seam: keep outbox entries without delivering them (to crash "between the
    /// sender's commit and the delivery").
    #[doc(hidden)]
    pub fn __hold_deliveries(mut self) -> Self {
        self.config.hold_deliveries = true;
        self
    }

    /// Which node serves each shard (default [`LocalPlacement`]: every shard here). Calls to
    /// a shard placed elsewhere fail with [`CallError::NotOwner`], to a shard placed nowhere
    /// with [`CallError::Unavailable`]; a turn whose shard was lost while it ran commits
    /// nothing ([`CallError::Fenced`]). See [`Placement`] for the contract.
    pub fn placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = placement;
        self
    }

    /// Test seam: called after each batch an upgrade of an older store writes.
    #[doc(hidden)]
    pub fn __upgrade_hook(mut self, hook: UpgradeHook) -> Self {
        self.upgrade_hook = Some(hook);
        self
    }

    /// Test seam: a hook that can fail the commit path at each stage.
    #[doc(hidden)]
    pub fn __fault_hook(mut self, hook: FaultHook) -> Self {
        self.fault = Some(hook);
        self
    }

    /// Opens the store and starts the runtime. Must be called within a multi-threaded Tokio
    /// runtime.
    pub async fn open(self) -> Result<Runtime, Error> {
        let tokio =
            tokio::runtime::Handle::try_current().map_err(|e| Error::NoTokio(e.to_string()))?;
        let path = self.path.ok_or_else(|| {
            Error::Config("no store path: call `.path(dir)` on the builder".into())
        })?;
        let config = self.config;
        for (what, value) in [
            ("max_live_activations", config.max_live_activations),
            ("mailbox_capacity", config.mailbox_capacity),
            ("commit_queue", config.commit_queue),
            ("outbox_capacity", config.outbox_capacity),
            ("watch_capacity", config.watch_capacity),
        ] {
            if value == 0 || value > MAX_QUEUE {
                return Err(Error::Config(format!(
                    "{what} must be between 1 and {MAX_QUEUE}, not {value}"
                )));
            }
        }

        if config.idempotency_retention.is_zero() {
            return Err(Error::Config(
                "idempotency_retention must be longer than zero".into(),
            ));
        }

        let mut types: HashMap<TypeId, Arc<dyn AnyRegistry>> = HashMap::new();
        let mut names: HashMap<&'static str, Arc<dyn AnyRegistry>> = HashMap::new();
        for (type_id, registration) in self.registrations {
            if types.contains_key(&type_id) {
                continue;
            }
            let idle = self
                .idle_overrides
                .get(&type_id)
                .copied()
                .unwrap_or(config.idle_timeout);
            let (type_id, name, registry) = registration(idle);
            check_actor_name(name)?;
            if names.insert(name, registry.clone()).is_some() {
                return Err(Error::Config(format!(
                    "two registered actor types share the storage name `{name}`"
                )));
            }
            types.insert(type_id, registry);
        }

        // Retried deliveries' panics stay quiet (see `panics.rs`).
        crate::panics::wrap_hook();
        let durability = config.durability;
        let upgrade_hook = self.upgrade_hook;
        let metrics = Arc::new(Metrics::default());
        let persists = metrics.journal.clone();
        let (store, recovered) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&path, durability, upgrade_hook.as_ref(), persists)?;
            let entries = store.outbox_entries(ALL_SHARDS)?;
            Ok::<_, Error>((store, entries))
        })
        .await
        .map_err(|e| Error::Config(format!("open task failed: {e}")))??;
        let (outbox, recovered) = recover_outbox(recovered, config.outbox_capacity);
        let (committer, committer_thread) = Committer::start(
            store.clone(),
            self.placement.clone(),
            metrics.clone(),
            config.commit_queue,
            self.fault,
        )
        .map_err(|e| Error::Config(format!("cannot start the committer thread: {e}")))?;
        let loader = Loader::start(LOADER_THREADS, LOADER_QUEUE)
            .map_err(|e| Error::Config(format!("cannot start the loader threads: {e}")))?;

        // Sweep often enough for the shortest idle timeout of any type.
        let shortest_idle = self
            .idle_overrides
            .values()
            .copied()
            .fold(config.idle_timeout, Duration::min);
        let sweep_every =
            (shortest_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let shared = Arc::new(Shared {
            config,
            store: parking_lot::RwLock::new(Some(store)),
            committer,
            loader,
            metrics,
            types,
            by_name: names,
            outbox,
            dead_letters: crate::dead_letters::Registry::default(),
            host_ref: OnceLock::new(),
            live: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            opened: Instant::now(),
            tokio,
            placement: self.placement,
            committer_thread: Mutex::new(Some(committer_thread)),
            host: Mutex::new(None),
        });
        let periods = Periods {
            sweep: sweep_every,
            expire: crate::kept::check_every(shared.config.idempotency_retention),
        };
        let (host, host_ref) = Host::start(Arc::downgrade(&shared), periods, recovered)
            .await
            .map_err(|e| Error::Config(format!("cannot start the host service: {e}")))?;
        let _ = shared.host_ref.set(host_ref);
        *shared.host.lock() = Some(host);
        Ok(Runtime { shared })
    }
}

/// Decodes the outbox entries left at startup. An undecodable entry stays in the store
/// (logged) rather than being dropped: nothing is lost, and an operator can look at it.
fn recover_outbox(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    capacity: usize,
) -> (Outbox, Vec<(OutboxId, OutboxRecord)>) {
    let mut next = 1;
    let mut recovered = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Some(id) = OutboxId::of_key(&key) else {
            tracing::error!(key = ?key, "outbox key of the wrong length; left in place");
            continue;
        };
        next = next.max(id.seq + 1);
        match crate::codec::decode_envelope::<OutboxRecord>(&value) {
            Ok(record) => recovered.push((id, record)),
            Err(reason) => {
                tracing::error!(seq = id.seq, shard = id.shard, %reason, "undecodable outbox entry; left in place");
            }
        }
    }
    // Sending order, whatever the shard.
    recovered.sort_unstable_by_key(|(id, _)| *id);
    if !recovered.is_empty() {
        tracing::info!(
            pending = recovered.len(),
            "delivering outbox messages left by the last run"
        );
    }
    (Outbox::new(next, recovered.len(), capacity), recovered)
}

fn check_actor_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "actor name {name:?} must be 1 to 200 characters of ASCII letters, digits, `_`, `-` or `.`"
        )))
    }
}

/// State shared by the runtime, its handles, activations and services.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `None` once shut down: the store is closed so the path can be opened again.
    store: parking_lot::RwLock<Option<Store>>,
    pub(crate) committer: Committer,
    loader: Loader,
    pub(crate) metrics: Arc<Metrics>,
    types: HashMap<TypeId, Arc<dyn AnyRegistry>>,
    by_name: HashMap<&'static str, Arc<dyn AnyRegistry>>,
    pub(crate) outbox: Outbox,
    /// The messages parked in this run.
    pub(crate) dead_letters: crate::dead_letters::Registry,
    host_ref: OnceLock<HostRef>,
    live: AtomicUsize,
    /// Messages accepted and not yet through their turn.
    inflight: AtomicUsize,
    /// No new calls from outside actors.
    closing: AtomicBool,
    /// No new calls at all.
    closed: AtomicBool,
    opened: Instant,
    pub(crate) tokio: tokio::runtime::Handle,
    /// Which node serves each shard.
    pub(crate) placement: Arc<dyn Placement>,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    host: Mutex<Option<Host>>,
}

impl Shared {
    /// The registry of the type stored under `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<dyn AnyRegistry>> {
        self.by_name.get(name)
    }

    /// The storage names of all registered types, sorted.
    #[cfg(feature = "http")]
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn registry<A: Handlers>(&self) -> Option<Arc<Registry<A>>> {
        self.types
            .get(&TypeId::of::<A>())
            .and_then(|r| r.clone().as_any().downcast::<Registry<A>>().ok())
    }

    /// Queues an outbox entry on its target; `done` hears when its turn is over. `retry`: an
    /// earlier turn on it failed (and was reported).
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
        let Some(registry) = self.by_name.get(target.actor.as_str()) else {
            return Err(Failure::Invalid(format!(
                "no registered actor type is named `{}`",
                target.actor
            )));
        };
        registry.deliver(self, &target.key, payload, delivery, done)
    }

    /// Releases what a turn of `A(key)` produced, once its batch settled: outbox entries to
    /// the dispatcher, events to watchers, the earliest new timer to the timer service. If
    /// the batch failed, its outbox entries are checked ([`Shared::recover_unsure`]).
    pub(crate) fn release<A: Handlers>(
        self: &Arc<Self>,
        key: &str,
        durable: bool,
        outbox: Vec<(OutboxId, OutboxRecord)>,
        events: Vec<A::Event>,
        timer_due: Option<u64>,
    ) {
        if !durable {
            self.recover_unsure(outbox);
            return;
        }
        if !outbox.is_empty() {
            self.metrics
                .sends
                .fetch_add(outbox.len() as u64, Ordering::Relaxed);
            if let Some(host) = self.host_ref.get() {
                host.committed(outbox);
            }
        }
        if !events.is_empty() {
            self.metrics
                .events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if let Some(registry) = self.registry::<A>() {
                registry.publish(key, events);
            }
        }
        if let (Some(due), Some(host)) = (timer_due, self.host_ref.get()) {
            host.timer_scheduled(crate::codec::shard_of(A::NAME, key), due);
        }
    }

    /// Outbox entries of a batch reported failed: a failure after the write may still have
    /// made them durable (the next sync does), and then their senders' state says they were
    /// sent. Those still in the store after a sync go to the dispatcher; the others give
    /// their outbox places back.
    pub(crate) fn recover_unsure(self: &Arc<Self>, entries: Vec<(OutboxId, OutboxRecord)>) {
        if entries.is_empty() {
            return;
        }
        let shared = self.clone();
        let count = entries.len();
        self.tokio.spawn(async move {
            let checked = shared
                .with_store("outbox check", move |store| {
                    let mut kept = Vec::new();
                    let mut gone = 0;
                    for (id, record) in entries {
                        match store.outbox_contains(&id.key()) {
                            Ok(true) => kept.push((id, record)),
                            // Absent, or unknowable now: the next start reads what is stored.
                            Ok(false) | Err(_) => gone += 1,
                        }
                    }
                    Ok((kept, gone))
                })
                .await;
            match checked {
                Ok((kept, gone)) => {
                    shared.outbox.release(gone);
                    if !kept.is_empty() {
                        tracing::warn!(
                            messages = kept.len(),
                            "a failed commit's messages became durable after all; delivering them"
                        );
                        shared.committed(kept);
                    }
                }
                // Unknowable now (shutting down): the next start reads what is stored.
                Err(failure) => {
                    shared.outbox.release(count);
                    tracing::error!(error = %failure, "cannot check a failed commit's messages");
                }
            }
        });
    }

    /// Hands outbox entries written outside any turn (by `Runtime::send`) to the dispatcher.
    pub(crate) fn committed(&self, entries: Vec<(OutboxId, OutboxRecord)>) {
        self.metrics
            .sends
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        if let Some(host) = self.host_ref.get() {
            host.committed(entries);
        }
    }

    /// The host service, unless the runtime has not started it yet.
    pub(crate) fn host(&self) -> Option<&HostRef> {
        self.host_ref.get()
    }

    /// Checks that `key` is acceptable and `B` registered, before a message to `B(key)` is
    /// recorded.
    pub(crate) fn check_target<B: Handlers>(&self, key: &str) -> Result<(), Failure> {
        crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
        if !self.types.contains_key(&TypeId::of::<B>()) {
            return Err(Failure::NotRegistered(B::NAME));
        }
        Ok(())
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

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new call, or refuses it while shutting down. Calls made by handlers are
    /// admitted until the very end, so in-flight work can finish.
    ///
    /// An admitted call counts as in flight from here until its turn finished (or
    /// [`turn_finished`](Self::turn_finished) is called because it was not enqueued). Counting
    /// before checking, both `SeqCst`, means shutdown either sees the call or the call sees
    /// shutdown.
    pub(crate) fn admit(&self, from_actor: bool) -> Result<(), Failure> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst)
            || (!from_actor && self.closing.load(Ordering::SeqCst))
        {
            self.turn_finished();
            Err(Failure::ShuttingDown)
        } else {
            Ok(())
        }
    }

    pub(crate) fn turn_finished(&self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until no admitted call is in flight.
    async fn drained(&self) {
        while self.inflight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Takes a place under the live-activation cap, passivating an idle activation if needed.
    pub(crate) fn reserve_live(&self) -> Result<(), Failure> {
        let cap = self.config.max_live_activations;
        let mut waited_since: Option<Instant> = None;
        loop {
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
            if !self.types.values().any(|r| r.evict_one(self)) {
                // An activation whose reply just left may still be finishing its turn (its
                // write is marked settled after the reply's callback ran): give it a moment
                // before refusing, so sequential calls under the cap are never refused.
                let since = *waited_since.get_or_insert_with(Instant::now);
                if since.elapsed() < EVICTION_GRACE {
                    std::thread::yield_now();
                    continue;
                }
                self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Overloaded(Overload::LiveActivations));
            }
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
        self.types.values().map(|r| r.sweep(self)).sum()
    }
}

/// How long a new activation waits, at the live cap, for a busy one to become idle before
/// its call is refused (spent only when every live activation is busy).
const EVICTION_GRACE: Duration = Duration::from_micros(500);

/// An embedded Gears runtime: a store, the activations living on it, and their services.
///
/// Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

impl Runtime {
    /// Starts configuring a runtime.
    pub fn builder() -> Builder {
        Builder {
            path: None,
            config: Config::default(),
            registrations: Vec::new(),
            idle_overrides: HashMap::new(),
            fault: None,
            upgrade_hook: None,
            placement: Arc::new(LocalPlacement),
        }
    }

    /// A typed handle to the actor of type `A` with this key. The actor always exists: the
    /// first call activates it. An invalid key or unregistered type is reported by its calls.
    pub fn get<A: Handlers>(&self, key: impl AsRef<str>) -> A::Handle {
        A::__handle(Caller::new(&self.shared, key.as_ref(), None))
    }

    /// Sends a message to `A(key)` durably, fire-and-forget: `rt.send::<Order>("o-1")
    /// .ship(lines).await?` returns once the message is in the outbox (durable); it is then
    /// delivered and processed exactly once, also across restarts.
    pub fn send<A: Handlers>(&self, key: impl Into<String>) -> A::Mail<OutsideSend<A>> {
        A::__mail(OutsideSend::new(&self.shared, key.into(), None))
    }

    /// Like [`send`](Self::send), with a caller-chosen idempotency key (1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`](crate::MAX_IDEMPOTENCY_KEY_LEN) bytes): a second send with
    /// the same key to the same actor is not processed again, as long as it arrives within
    /// [`Builder::idempotency_retention`] (default 24 hours) of the first one's processing.
    pub fn send_idempotent<A: Handlers>(
        &self,
        key: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> A::Mail<OutsideSend<A>> {
        let idempotency = Some(idempotency_key.into());
        A::__mail(OutsideSend::new(&self.shared, key.into(), idempotency))
    }

    /// A stream of `A(key)`'s events from now on, each released once the turn that published
    /// it is durable. The stream buffers a bounded number of events
    /// ([`Builder::watch_capacity`]); a watcher that falls further behind never slows the
    /// actor: it skips ahead and receives [`Watched::Lagged`](crate::Watched::Lagged) with the number it missed.
    pub fn watch<A: Handlers>(&self, key: impl AsRef<str>) -> Result<Watch<A::Event>, CallError> {
        let key = key.as_ref();
        crate::codec::validate_key(key).map_err(CallError::InvalidKey)?;
        let registry = self
            .shared
            .registry::<A>()
            .ok_or(CallError::NotRegistered(A::NAME))?;
        Ok(Watch::new(
            registry.watch(key, self.shared.config.watch_capacity),
        ))
    }

    /// Reads `A(key)`'s state without running a handler: `read` runs in a turn of the actor
    /// (after the messages queued before it), and its value is returned only once every
    /// earlier write of the actor is durable. Activates the actor like any call.
    pub async fn read<A: Handlers, R: Send + 'static>(
        &self,
        key: impl AsRef<str>,
        read: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, CallError> {
        let body = Body::Read(Box::new(move |state: &A, _: &ActorMeta| {
            Box::new(read(state)) as Box<dyn std::any::Any + Send>
        }));
        self.request::<A, R>(key.as_ref(), body, "read").await
    }

    /// `A(key)`'s pending timers, earliest first.
    pub async fn timers<A: Handlers>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Vec<TimerInfo>, CallError> {
        let body = Body::Read(Box::new(|_: &A, meta: &ActorMeta| {
            Box::new(timer_infos(&meta.timers)) as Box<dyn std::any::Any + Send>
        }));
        self.request::<A, Vec<TimerInfo>>(key.as_ref(), body, "timers")
            .await
    }

    /// Deletes `A(key)` as `ctx.delete()` would in a turn: its state, timers and
    /// subscriptions; it reads as `Default` afterwards. Returns once the deletion is durable.
    pub async fn delete<A: Handlers>(&self, key: impl AsRef<str>) -> Result<(), CallError> {
        self.request::<A, ()>(key.as_ref(), Body::Delete, "delete")
            .await
    }

    /// Up to `limit` keys of type `A` with stored state, after the key `after` (exclusive),
    /// in storage order: by shard, then by key. Pass the last key of a page as `after` to
    /// get the next. Lists what is stored: an actor never written (or deleted) has no
    /// stored state and is not listed; a write still being synced may be.
    pub async fn keys<A: Handlers>(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, CallError> {
        self.shared
            .registry::<A>()
            .ok_or(CallError::NotRegistered(A::NAME))?;
        let after = match after {
            Some(key) => {
                crate::codec::validate_key(key).map_err(CallError::InvalidKey)?;
                Some(crate::codec::state_key(A::NAME, key))
            }
            None => None,
        };
        let keys = self
            .shared
            .with_store("key scan", move |store| {
                store.state_keys(A::NAME, after.as_deref(), limit)
            })
            .await
            .map_err(CallError::from_failure)?;
        Ok(keys
            .iter()
            .filter_map(|k| crate::codec::key_of_state_key(k, A::NAME).map(str::to_string))
            .collect())
    }

    /// Runs a turn of `A(key)` without a handler and types its reply.
    async fn request<A: Handlers, R: 'static>(
        &self,
        key: &str,
        body: Body<A>,
        what: &'static str,
    ) -> Result<R, CallError> {
        let reply = Caller::<A>::new(&self.shared, key, None)
            .request(body, what)
            .await;
        crate::handle::finish::<R>(reply)
    }

    /// A snapshot of the runtime's counters.
    pub fn stats(&self) -> Stats {
        self.shared.metrics.snapshot(
            self.shared.live.load(Ordering::Relaxed) as u64,
            self.shared.outbox.backlog() as u64,
        )
    }

    /// Passivates every activation that has been idle longer than its idle timeout now,
    /// instead of at the next periodic sweep. Returns how many were passivated.
    pub fn passivate_idle(&self) -> usize {
        self.shared.sweep()
    }

    /// Stops accepting calls, lets accepted ones finish, commits and syncs everything, and
    /// stops the runtime's services. Calls made after this fail with `ShuttingDown`.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let shared = &self.shared;
        // First outside calls stop and what was accepted drains (handlers may still call
        // other actors); then every call stops and the last of those drain.
        shared.closing.store(true, Ordering::SeqCst);
        shared.drained().await;
        shared.closed.store(true, Ordering::SeqCst);
        shared.drained().await;
        shared.committer.stop().await;
        let thread = shared.committer_thread.lock().take();
        let mut committer_result = Ok(());
        if let Some(thread) = thread {
            committer_result = match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Error::Config("the committer thread panicked".into())),
            };
        }
        let host = shared.host.lock().take();
        if let Some(host) = host {
            host.stop().await;
        }
        // Sync, then close the store (dropping fjall joins its workers, so off the workers
        // here too); the path can be opened again as soon as this returns.
        let store = shared.store.write().take();
        if let Some(store) = store {
            tokio::task::spawn_blocking(move || {
                let synced = store.sync();
                drop(store);
                synced
            })
            .await
            .map_err(|e| Error::Config(format!("shutdown task failed: {e}")))??;
        }
        committer_result
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
