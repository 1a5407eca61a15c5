//! [`Runtime`]: the builder, opening the store, typed handles, statistics and shutdown.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor::Handlers;
use crate::commit::{Committer, FaultHook};
use crate::directory::{AnyRegistry, Registry};
use crate::error::{Error, Failure};
use crate::handle::Caller;
use crate::metrics::{Metrics, Stats};
use crate::shard::Housekeeper;
use crate::store::{Durability, Store};

/// Settings fixed when the runtime opens.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) durability: Durability,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_live_activations: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) commit_queue: usize,
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
        }
    }
}

/// Upper bound of every configured capacity (far above any sane value, far below what
/// would overflow the channels' permit counters).
const MAX_QUEUE: usize = 1 << 30;

type Registration = Box<dyn FnOnce(Duration) -> (TypeId, &'static str, Arc<dyn AnyRegistry>)>;

/// Configures and opens a [`Runtime`]. Start with [`Runtime::builder`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct Builder {
    path: Option<PathBuf>,
    config: Config,
    registrations: Vec<(TypeId, Registration)>,
    idle_overrides: HashMap<TypeId, Duration>,
    fault: Option<FaultHook>,
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
        ] {
            if value == 0 || value > MAX_QUEUE {
                return Err(Error::Config(format!(
                    "{what} must be between 1 and {MAX_QUEUE}, not {value}"
                )));
            }
        }

        let mut types: HashMap<TypeId, Arc<dyn AnyRegistry>> = HashMap::new();
        let mut names: HashMap<&'static str, TypeId> = HashMap::new();
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
            if names.insert(name, type_id).is_some() {
                return Err(Error::Config(format!(
                    "two registered actor types share the storage name `{name}`"
                )));
            }
            types.insert(type_id, registry);
        }

        let durability = config.durability;
        let store = tokio::task::spawn_blocking(move || Store::open(&path, durability))
            .await
            .map_err(|e| Error::Config(format!("open task failed: {e}")))??;
        let metrics = Arc::new(Metrics::default());
        let (committer, committer_thread) = Committer::start(
            store.clone(),
            metrics.clone(),
            config.commit_queue,
            self.fault,
        )
        .map_err(|e| Error::Config(format!("cannot start the committer thread: {e}")))?;

        let sweep_every =
            (config.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let shared = Arc::new(Shared {
            config,
            store: parking_lot::RwLock::new(Some(store)),
            committer,
            metrics,
            types,
            live: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            opened: Instant::now(),
            tokio,
            committer_thread: Mutex::new(Some(committer_thread)),
            housekeeper: Mutex::new(None),
        });
        let housekeeper = Housekeeper::start(Arc::downgrade(&shared), sweep_every)
            .await
            .map_err(|e| Error::Config(format!("cannot start the housekeeper: {e}")))?;
        *shared.housekeeper.lock() = Some(housekeeper);
        Ok(Runtime { shared })
    }
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
    pub(crate) metrics: Arc<Metrics>,
    types: HashMap<TypeId, Arc<dyn AnyRegistry>>,
    live: AtomicUsize,
    /// Messages accepted and not yet through their turn.
    inflight: AtomicUsize,
    /// No new calls from outside actors.
    closing: AtomicBool,
    /// No new calls at all.
    closed: AtomicBool,
    opened: Instant,
    pub(crate) tokio: tokio::runtime::Handle,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    housekeeper: Mutex<Option<Housekeeper>>,
}

impl Shared {
    pub(crate) fn registry<A: Handlers>(&self) -> Option<Arc<Registry<A>>> {
        self.types
            .get(&TypeId::of::<A>())
            .and_then(|r| r.clone().as_any().downcast::<Registry<A>>().ok())
    }

    /// The store, unless the runtime has shut down.
    pub(crate) fn store(&self) -> Result<Store, Failure> {
        self.store.read().clone().ok_or(Failure::ShuttingDown)
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
                self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Overloaded(
                    "the live activation cap is reached and no activation is idle",
                ));
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

/// An embedded Gears runtime: a store, the activations living on it, and their services.
///
/// Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
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
        }
    }

    /// A typed handle to the actor of type `A` with this key. The actor always exists: the
    /// first call activates it. An invalid key or unregistered type is reported by its calls.
    pub fn get<A: Handlers>(&self, key: impl AsRef<str>) -> A::Handle {
        A::__handle(Caller::new(&self.shared, key.as_ref(), None))
    }

    /// A snapshot of the runtime's counters.
    pub fn stats(&self) -> Stats {
        self.shared
            .metrics
            .snapshot(self.shared.live.load(Ordering::Relaxed) as u64)
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
        let housekeeper = shared.housekeeper.lock().take();
        if let Some(housekeeper) = housekeeper {
            housekeeper.stop().await;
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
