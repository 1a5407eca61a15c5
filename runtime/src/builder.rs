//! [`Builder`]: configures a [`Runtime`], opens its store (upgrading an older format),
//! recovers the outbox, and wires the parts together.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor::Handlers;
use crate::admission::Admission;
use crate::backlog::Backlog;
use crate::codec::{OutboxId, OutboxRecord};
use crate::commit::{Committer, FaultHook};
use crate::directory::Registry;
use crate::error::Error;
use crate::frontier::{Frontier, FrontierRecord};
use crate::loader::Loader;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::placement::{LocalPlacement, Placement};
use crate::runtime::{Lifecycle, Runtime};
use crate::shard::{Host, Periods};
use crate::shared::{ALL_SHARDS, Config, Registered, Shared};
use crate::store::fjall::FjallStore;
use crate::store::{Durability, Store, UpgradeHook};

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
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

/// Upper bound of every configured capacity (far above any sane value, far below what
/// would overflow the channels' permit counters).
const MAX_QUEUE: usize = 1 << 30;

/// Threads that read the store for turns (see [`crate::loader`]): more than one, so a read
/// that waits for the disk does not hold up the others.
const LOADER_THREADS: usize = 2;
/// Reads queued for the loaders before they overflow to Tokio's blocking pool.
const LOADER_QUEUE: usize = 4096;

type Registration = Box<dyn FnOnce(Duration) -> (TypeId, &'static str, Registered)>;

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
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterConfig>,
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
            let registry = Arc::new(Registry::<A>::new(idle));
            let mailbox: Arc<dyn Mailbox<A>> = registry.clone();
            #[cfg(feature = "http")]
            let json: Arc<dyn crate::json::JsonActor> = Arc::new(crate::json::JsonFace::<A>::new());
            let registered = Registered {
                registry,
                mailbox: Arc::new(mailbox),
                #[cfg(feature = "http")]
                json: Some(Arc::new(json)),
                #[cfg(not(feature = "http"))]
                json: None,
                #[cfg(feature = "http")]
                json_reply: Some(crate::json::json_reply::<A>),
                #[cfg(feature = "cluster")]
                routed: {
                    let face: Arc<dyn crate::remote::ServeRouted> =
                        Arc::new(crate::remote::RoutedFace::<A>::new());
                    Arc::new(face)
                },
            };
            (TypeId::of::<A>(), A::NAME, registered)
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

    /// Test seam: number this run's outbox entries from `first` instead of from the clock
    /// (a node whose clock is behind another's).
    #[doc(hidden)]
    pub fn __outbox_numbering_from(mut self, first: u64) -> Self {
        self.config.outbox_numbering_from = Some(first);
        self
    }

    /// Test seam: write the outbox frontier at most every `period` (at the first tick, and
    /// at a graceful shutdown, whatever the period), so that a crash finds every message
    /// processed since its first tick left in the outbox.
    #[doc(hidden)]
    pub fn __outbox_frontier_every(mut self, period: Duration) -> Self {
        self.config.frontier_every = period;
        self
    }

    /// Runs on `time` instead of the system's time (a test runtime's virtual time).
    pub(crate) fn virtual_time(mut self, time: Arc<crate::clock::VirtualTime>) -> Self {
        self.config.virtual_time = Some(time);
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

    /// Runs this runtime as a node of a cluster (feature `cluster`): it serves the shards it
    /// holds a lease on, its commits are replicated through NATS JetStream before they are
    /// acknowledged (so the local store is written without fsync: the replicated log is the
    /// durable copy), and shards move to other nodes when they join, leave or die.
    /// Replaces any [`placement`](Self::placement).
    ///
    /// Calls to actors of shards another node holds go to that node (NATS request/reply) and
    /// are answered as local ones are; durable messages (sends, events to subscribers) are
    /// delivered there exactly once and in order; timers fire on the node that serves their
    /// actor; [`Runtime::keys`] lists every node's shards; [`Runtime::watch`] sees the
    /// events of an actor's turns whichever node runs them (published on NATS after commit).
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(config);
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

        let mut types: foldhash::HashMap<TypeId, Registered> = Default::default();
        let mut names: foldhash::HashMap<&'static str, TypeId> = Default::default();
        for (type_id, registration) in self.registrations {
            if types.contains_key(&type_id) {
                continue;
            }
            let idle = self
                .idle_overrides
                .get(&type_id)
                .copied()
                .unwrap_or(config.idle_timeout);
            let (type_id, name, registered) = registration(idle);
            check_actor_name(name)?;
            if names.insert(name, type_id).is_some() {
                return Err(Error::Config(format!(
                    "two registered actor types share the storage name `{name}`"
                )));
            }
            types.insert(type_id, registered);
        }

        // Retried deliveries' panics stay quiet (see `panics.rs`).
        crate::panics::wrap_hook();
        #[cfg(feature = "cluster")]
        let mut config = config;
        #[cfg(feature = "cluster")]
        if self.cluster.is_some() {
            // The replicated log is the durable copy; the store is its local view.
            config.durability = Durability::Buffered;
        }
        let durability = config.durability;
        let upgrade_hook = self.upgrade_hook;
        let metrics = Arc::new(Metrics::default());
        let persists = metrics.journal.clone();
        // A single node keeps the outbox frontier (see `frontier.rs`); a cluster node deletes
        // each processed entry.
        #[cfg(feature = "cluster")]
        let keeps_frontier = self.cluster.is_none();
        #[cfg(not(feature = "cluster"))]
        let keeps_frontier = true;
        let frontier = Arc::new(Frontier::default());
        let opened_frontier = frontier.clone();
        let (store, recovered, found_frontier) = tokio::task::spawn_blocking(move || {
            let store: Store = Arc::new(FjallStore::open(
                &path,
                durability,
                upgrade_hook.as_ref(),
                persists,
                opened_frontier.clone(),
            )?);
            let found = store.outbox_frontier()?;
            if let Some(found) = &found {
                opened_frontier.set(found);
            }
            let entries = store.outbox_entries(ALL_SHARDS, found.as_ref())?;
            Ok::<_, Error>((store, entries, found))
        })
        .await
        .map_err(|e| Error::Config(format!("open task failed: {e}")))??;
        #[allow(unused_mut)]
        let mut placement = self.placement;
        #[allow(unused_mut)]
        let mut replicator = None;
        #[allow(unused_mut)]
        let mut served_at_start = ALL_SHARDS;
        #[cfg(feature = "cluster")]
        if self.cluster.is_some() {
            // A node takes its shards (and their outboxes and timers) as it gets them.
            served_at_start = 0..0;
        }
        let recovered = if served_at_start.is_empty() {
            Vec::new()
        } else {
            recovered
        };
        let (backlog, recovered) = recover_outbox(
            recovered,
            config.outbox_capacity,
            config.outbox_numbering_from,
            found_frontier.as_ref(),
        );
        if keeps_frontier {
            backlog.track();
        }
        #[cfg(feature = "cluster")]
        let membership = match &self.cluster {
            Some(cluster) => {
                let local = crate::cluster::Local {
                    store: store.clone(),
                    metrics: metrics.clone(),
                    numbers: backlog.numbers(),
                };
                let membership = match crate::cluster::Membership::prepare(cluster, local).await {
                    Ok(membership) => membership,
                    Err(e) => {
                        // Dropping the store joins fjall's threads: off the workers.
                        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
                        return Err(e);
                    }
                };
                placement = membership.placement();
                replicator = Some(membership.replicator());
                Some(membership)
            }
            None => None,
        };
        let (committer, committer_thread) = Committer::start(
            store.clone(),
            placement.clone(),
            metrics.clone(),
            config.commit_queue,
            self.fault,
            replicator,
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
        let clock = match &config.virtual_time {
            Some(time) => crate::clock::Clock::Virtual(time.clone()),
            None => crate::clock::Clock::System {
                opened: Instant::now(),
            },
        };
        let shared = Arc::new(Shared {
            config,
            store: parking_lot::RwLock::new(Some(store)),
            committer,
            loader,
            metrics,
            types,
            by_name: names,
            backlog,
            frontier,
            keeps_frontier,
            dead_letters: Default::default(),
            services: OnceLock::new(),
            handoff: Default::default(),
            live: AtomicUsize::new(0),
            admission: Admission::default(),
            clock,
            tokio,
            placement,
            #[cfg(feature = "cluster")]
            forward: OnceLock::new(),
            #[cfg(feature = "cluster")]
            followed: Default::default(),
        });
        let periods = Periods {
            sweep: sweep_every,
            expire: crate::kept::check_every(shared.config.idempotency_retention),
        };
        let (host, host_ref) =
            Host::start(Arc::downgrade(&shared), periods, recovered, served_at_start)
                .await
                .map_err(|e| Error::Config(format!("cannot start the host service: {e}")))?;
        let _ = shared.services.set(Arc::new(host_ref));
        let lifecycle = Arc::new(Lifecycle {
            committer_thread: Mutex::new(Some(committer_thread)),
            host: Mutex::new(Some(host)),
            #[cfg(feature = "cluster")]
            node: Mutex::new(None),
        });
        let runtime = Runtime { shared, lifecycle };
        #[cfg(feature = "cluster")]
        if let Some(membership) = membership {
            let node = join_cluster(&runtime, membership).await;
            let node = match node {
                Ok(node) => node,
                Err(e) => {
                    let _ = runtime.shutdown().await;
                    return Err(e);
                }
            };
            *runtime.lifecycle.node.lock() = Some(Arc::new(node));
        }
        Ok(runtime)
    }
}

/// Starts a runtime's cluster membership: its hand-overs drain the commit pipeline, and its
/// services hear of every shard taken or given up.
#[cfg(feature = "cluster")]
async fn join_cluster(
    runtime: &Runtime,
    membership: crate::cluster::Membership,
) -> Result<crate::cluster::Node, Error> {
    let committer = runtime.shared.committer.clone();
    let drain: Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync> =
        Arc::new(move || {
            let committer = committer.clone();
            Box::pin(async move {
                // Commits are in order: once this empty one is settled, every write submitted
                // before it is too.
                let barrier = committer.submit(Vec::new(), None, None).await;
                let _ = barrier.wait().await;
            })
        });
    let weak = Arc::downgrade(&runtime.shared);
    let serve: crate::cluster::Serve = Arc::new(move |payload, max| {
        let shared = weak.upgrade();
        Box::pin(async move {
            match shared {
                Some(shared) => crate::remote::serve(&shared, &payload, max).await,
                None => crate::wire::stopped(),
            }
        })
    });
    let router = membership.router(serve);
    // Calls to shards served elsewhere go there from now on.
    let _ = runtime.shared.forward.set(router.clone());
    let shared = Arc::downgrade(&runtime.shared);
    let shard_events = Arc::new(move |shard: u16, taken: bool| {
        if let Some(shared) = shared.upgrade()
            && let Some(services) = shared.services.get()
        {
            // Taken: its outbox and timers, then its calls; given up: the other way round.
            if taken {
                shared.backlog.loading();
                services.shard_taken(shard);
                router.shard_event(shard, true);
            } else {
                router.shard_event(shard, false);
                services.shard_dropped(shard);
            }
        }
    });
    membership.start(drain, shard_events).await
}

/// Decodes the outbox entries left at startup, and numbers new ones after them.
fn recover_outbox(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    capacity: usize,
    numbering_from: Option<u64>,
    frontier: Option<&FrontierRecord>,
) -> (Backlog, Vec<(OutboxId, OutboxRecord)>) {
    // Sequence numbers are never used twice, even once every entry of a run is processed and
    // gone: a delivered entry's key identifies its turn (the ids of the calls it makes, see
    // `CallIds`), so a new entry must not take an old one's. A run starts numbering at the
    // clock in nanoseconds: a process sends far fewer than 10^9 messages a second, so its
    // numbers stay behind the clock, and the next run's start after them.
    let now = numbering_from.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
    });
    let (recovered, last) = crate::outbox::decode_entries(entries, frontier);
    // The frontier record says how far the last run numbered when it was written.
    let issued_before = frontier.map_or(0, |f| f.next);
    let next = now.max(1).max(last.saturating_add(1)).max(issued_before);
    if !recovered.is_empty() {
        tracing::info!(
            pending = recovered.len(),
            "delivering outbox messages left by the last run"
        );
    }
    (Backlog::new(next, recovered.len(), capacity), recovered)
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
