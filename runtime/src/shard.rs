//! The runtime's long-lived services, as ractor actors (the only module that names ractor).
//!
//! Activations are not ractor actors (an idle ractor actor costs ≈ 7.5 KiB; a Gears
//! activation holds no task while idle). ractor runs what is long-lived and worth
//! supervising: the host, which passivates idle activations, dispatches the outbox
//! ([`crate::outbox`]) and fires due timers ([`crate::timers`]). On one node there is one
//! host for every shard; scale-out would run one per owned shard range.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::codec::{OutboxId, OutboxRecord};
use crate::commit::KeyWrite;
use crate::dead_letters::DeadLetterId;
use crate::error::Failure;
use crate::frontier::{FRONTIER_KEY, FrontierRecord};
use crate::outbox::Dispatcher;
use crate::shared::{DoneFn, Services, Settled, Shared};
use crate::store::Space;
use crate::timers::TimerService;

/// How often the host retries busy deliveries and checks for due timers: the timers'
/// resolution.
const TICK: Duration = Duration::from_millis(20);

/// Bytes the outbox may grow on disk after a whole compaction before the next one, which
/// drops the entries the frontier passed (fjall moves tables of ever-growing keys down the
/// levels without rewriting them, so its own compactions may never see them).
const COMPACT_OUTBOX_AFTER: u64 = 64 << 20;

/// Messages of the host.
pub(crate) enum HostMsg {
    /// Notices are waiting in the host's inbox ([`Link::notify`]).
    Notices,
    /// Passivate activations idle longer than their type's timeout.
    Sweep,
    /// Retry what waited for a backoff; fire due timers.
    Tick,
    /// A timer firing's turn is over.
    TimerDone {
        key: Arc<[u8]>,
        outcome: Result<(), Failure>,
    },
    /// A parked timer was retried or discarded.
    UnparkTimer { id: DeadLetterId, shard: u16 },
    /// Remove a batch of expired outcomes of idempotent requests.
    ExpireKept,
    /// Do a tick's work now, then answer whether nothing is left to do.
    Settle(RpcReplyPort<Settled>),
    /// This node took a shard (a cluster node): deliver its outbox entries, scan its timers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    ShardTaken(u16),
    /// This node gave a shard up: stop delivering its entries and firing its timers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    ShardDropped(u16),
    /// Frontier write number `.0` is over: the record, if it is durable.
    FrontierWritten(u64, Option<FrontierRecord>),
    /// Write the frontier now if it moved (a graceful shutdown, once every turn is over),
    /// and answer once that is done.
    FlushFrontier(RpcReplyPort<()>),
    /// A whole compaction of the outbox is over: the outbox's bytes on disk after it.
    OutboxCompacted(u64),
}

/// What the host hears of several times per order of the demo (a send's entries are
/// durable, a delivery is over, a turn armed a timer). They wait in the host's inbox rather
/// than each in a message of its own: a ractor message costs its send, a wake-up of the host
/// and a pass of its loop, and each of these ran the dispatcher (seven per order were ≈ 6 %
/// of its instructions); one [`HostMsg::Notices`] carries all that came in meanwhile.
enum Notice {
    /// Outbox entries whose batch is durable.
    Committed(Vec<(OutboxId, OutboxRecord)>),
    /// An outbox delivery's turn is over.
    Delivered {
        seq: OutboxId,
        outcome: Result<(), Failure>,
    },
    /// A committed turn scheduled a timer in a shard, due at a time (ms since the Unix
    /// epoch).
    TimerScheduled { shard: u16, due_ms: u64 },
}

/// The way to the host: its mailbox, and its inbox of notices.
struct Link {
    actor: ActorRef<HostMsg>,
    /// Shared by every link to this host. Never non-empty without a [`HostMsg::Notices`]
    /// on its way or being handled (the one who finds it empty sends one); bounded by what
    /// produces notices: durable sends (the outbox's backlog), deliveries in flight (the
    /// dispatcher's limit) and committed turns.
    inbox: Arc<Mutex<Vec<Notice>>>,
}

impl Link {
    /// Queues `notice` for the host; handled in order with the other notices, and no later
    /// than a message sent now would be.
    fn notify(&self, notice: Notice) {
        let ring = {
            let mut inbox = self.inbox.lock();
            inbox.push(notice);
            inbox.len() == 1
        };
        if ring {
            let _ = self.actor.cast(HostMsg::Notices);
        }
    }
}

struct HostActor;

struct HostState {
    shared: Weak<Shared>,
    link: Arc<Link>,
    /// The inbox's notices being handled (kept to reuse its buffer).
    notices: Vec<Notice>,
    dispatcher: Dispatcher,
    timers: TimerService,
    frontier: Keeper,
}

/// Where the writing of the outbox frontier stands.
struct Keeper {
    /// A write is under way.
    writing: bool,
    /// A whole compaction of the outbox is under way.
    compacting: bool,
    /// When the last frontier was computed (or the host started).
    at: Instant,
    /// The last record written.
    written: Option<FrontierRecord>,
    /// Frontier writes started, and the number of the last one taken on (a write that ends
    /// after a later one, as the one at shutdown, is not).
    started: u64,
    applied: u64,
    /// The outbox's bytes on disk after its last whole compaction.
    compacted: u64,
}

impl Actor for HostActor {
    type Msg = HostMsg;
    type State = HostState;
    /// The runtime, the periods of the host's work, the outbox entries left by the last run,
    /// and the shards whose timers are scanned from the start (all of them on one node; none
    /// on a cluster node, which takes shards as it acquires them).
    type Arguments = (
        Weak<Shared>,
        Periods,
        Vec<(OutboxId, OutboxRecord)>,
        std::ops::Range<u16>,
        Arc<Mutex<Vec<Notice>>>,
    );

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, periods, recovered, shards, inbox): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(periods.sweep, || HostMsg::Sweep);
        myself.send_interval(TICK, || HostMsg::Tick);
        myself.send_interval(periods.expire, || HostMsg::ExpireKept);
        let mut dispatcher = Dispatcher::default();
        dispatcher.add(recovered);
        // Deliver what was left in the outbox and fire missed timers at once.
        let _ = myself.cast(HostMsg::Tick);
        Ok(HostState {
            shared,
            link: Arc::new(Link {
                actor: myself.clone(),
                inbox,
            }),
            notices: Vec::new(),
            dispatcher,
            timers: TimerService::new(shards),
            frontier: Keeper {
                writing: false,
                compacting: false,
                at: Instant::now(),
                written: None,
                started: 0,
                applied: 0,
                compacted: 0,
            },
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(shared) = state.shared.upgrade() else {
            // The runtime is gone.
            myself.stop(None);
            return Ok(());
        };
        match message {
            HostMsg::Sweep => {
                let passivated = shared.sweep();
                if passivated > 0 {
                    tracing::debug!(passivated, "passivated idle activations");
                }
                return Ok(());
            }
            HostMsg::Tick => tick(&myself, &shared, state).await,
            HostMsg::Settle(reply) => {
                tick(&myself, &shared, state).await;
                // Deliver what the tick made ready before answering.
                deliver(&shared, state);
                let (timers_quiet, next_due_ms) = state.timers.settled(shared.clock.epoch_ms());
                let _ = reply.send(Settled {
                    quiet: timers_quiet && state.dispatcher.idle(),
                    next_due_ms,
                });
                return Ok(());
            }
            HostMsg::Notices => {
                std::mem::swap(&mut *state.link.inbox.lock(), &mut state.notices);
                let mut notices = std::mem::take(&mut state.notices);
                let mut dispatch = false;
                for notice in notices.drain(..) {
                    dispatch |= handle_notice(&shared, state, notice);
                }
                state.notices = notices;
                if !dispatch {
                    return Ok(());
                }
            }
            HostMsg::ShardTaken(shard) => take_shard(&shared, state, shard).await,
            HostMsg::ShardDropped(shard) => {
                let dropped = state.dispatcher.drop_shard(shard);
                shared.backlog.release(dropped);
                state.timers.drop_shard(shard);
                return Ok(());
            }
            HostMsg::TimerDone { key, outcome } => {
                state.timers.done(&shared, key, outcome);
                return Ok(());
            }
            HostMsg::UnparkTimer { id, shard } => {
                state.timers.unpark(id, shard);
                return Ok(());
            }
            HostMsg::FrontierWritten(number, record) => {
                state.frontier.writing = false;
                match record {
                    Some(record) => {
                        take_frontier(&shared, &mut state.frontier, number, record);
                        compact_outbox(&myself, &shared, &mut state.frontier);
                    }
                    // Computed again at the next tick.
                    None => state.dispatcher.progressed = true,
                }
                return Ok(());
            }
            HostMsg::FlushFrontier(reply) => {
                if shared.keeps_frontier
                    && let Some(record) = moved_frontier(&shared, state)
                {
                    // A write still under way was submitted before this one: it lands
                    // first, this one after it, and this one is taken on.
                    state.frontier.started += 1;
                    let number = state.frontier.started;
                    match persist_frontier(&shared, record).await {
                        Some(record) => take_frontier(&shared, &mut state.frontier, number, record),
                        None => state.dispatcher.progressed = true,
                    }
                }
                let _ = reply.send(());
                return Ok(());
            }
            HostMsg::OutboxCompacted(space) => {
                state.frontier.compacting = false;
                state.frontier.compacted = space;
                return Ok(());
            }
            HostMsg::ExpireKept => {
                // Awaited here, so the host never stops while a removal is in flight; one
                // batch per message, so timers and deliveries go on between batches.
                match crate::kept::remove_expired(&shared).await {
                    Ok(true) => {
                        let _ = myself.cast(HostMsg::ExpireKept);
                    }
                    Ok(false) => {}
                    Err(failure) => {
                        tracing::warn!(error = %failure, "cannot remove expired idempotent results; trying again later");
                    }
                }
                return Ok(());
            }
        }
        deliver(&shared, state);
        Ok(())
    }
}

/// Applies `notice`; whether the dispatcher may have something new to deliver.
fn handle_notice(shared: &Shared, state: &mut HostState, notice: Notice) -> bool {
    match notice {
        Notice::Committed(entries) => {
            // Before the next frontier is computed (here too): the dispatcher holds them.
            shared
                .backlog
                .settled(entries.iter().map(|(id, r)| r.stored_as(*id)));
            let known = state.dispatcher.add(entries);
            shared.backlog.release(known);
            true
        }
        Notice::Delivered { seq, outcome } => {
            state.dispatcher.done(shared, seq, outcome);
            true
        }
        Notice::TimerScheduled { shard, due_ms } => {
            state.timers.scheduled(shard, due_ms);
            false
        }
    }
}

/// Starts serving `shard`'s durable work: its outbox entries (read from the store, which the
/// cluster brought up to date before the shard was granted) and its timers.
async fn take_shard(shared: &Arc<Shared>, state: &mut HostState, shard: u16) {
    let Ok(store) = shared.store() else {
        shared.backlog.loaded();
        return;
    };
    let range = shard..shard.saturating_add(1);
    match tokio::task::spawn_blocking(move || store.outbox_entries(range, None)).await {
        Ok(Ok(entries)) => {
            let (entries, last) = crate::outbox::decode_entries(entries, None);
            shared.backlog.adopt(entries.len(), last);
            let known = state.dispatcher.add(entries);
            shared.backlog.release(known);
        }
        Ok(Err(e)) => {
            shared.backlog.loaded();
            tracing::error!(shard, error = %e, "cannot read a taken shard's outbox; its messages wait for the next start")
        }
        Err(e) => {
            shared.backlog.loaded();
            tracing::error!(shard, error = %e, "reading a taken shard's outbox failed")
        }
    }
    state.timers.take(shard);
}

/// Queues what the dispatcher can deliver now (nothing under the `hold_deliveries` seam).
fn deliver(shared: &Arc<Shared>, state: &mut HostState) {
    if shared.config.hold_deliveries {
        return;
    }
    let link = &state.link;
    let done = move |seq: OutboxId| -> DoneFn {
        let link = link.clone();
        Box::new(move |outcome| link.notify(Notice::Delivered { seq, outcome }))
    };
    state.dispatcher.dispatch(shared, &done);
}

/// Writes the outbox frontier if it moved and the last write is over, at most every
/// `frontier_every`; once it is durable, turns and compactions may forget what it passed.
fn write_frontier(myself: &ActorRef<HostMsg>, shared: &Arc<Shared>, state: &mut HostState) {
    let keeper = &mut state.frontier;
    let every = shared.config.frontier_every;
    if keeper.writing || !state.dispatcher.progressed || keeper.at.elapsed() < every {
        return;
    }
    keeper.at = Instant::now();
    let Some(record) = moved_frontier(shared, state) else {
        return;
    };
    state.frontier.writing = true;
    state.frontier.started += 1;
    let number = state.frontier.started;
    let shared = shared.clone();
    let host = myself.clone();
    tokio::spawn(async move {
        let written = persist_frontier(&shared, record).await;
        let _ = host.cast(HostMsg::FrontierWritten(number, written));
    });
}

/// Takes on durable frontier write `number`, unless a later one was taken on already: turns
/// and compactions forget what it passed from now on.
fn take_frontier(shared: &Shared, keeper: &mut Keeper, number: u64, record: FrontierRecord) {
    if number > keeper.applied {
        keeper.applied = number;
        shared.frontier.set(&record);
        keeper.written = Some(record);
    }
}

/// The frontier now, if an entry was processed or parked since it was last computed and it
/// differs from the last one written in more than the numbering (which moves with every
/// send, and which nothing forgets by).
fn moved_frontier(shared: &Shared, state: &mut HostState) -> Option<FrontierRecord> {
    if !std::mem::take(&mut state.dispatcher.progressed) {
        return None;
    }
    let record = state.dispatcher.frontier(
        shared.backlog.floor(),
        shared.backlog.issued(),
        &shared.frontier,
    );
    let same = state.frontier.written.as_ref().is_some_and(|w| {
        (w.base, &w.behind, &w.parked) == (record.base, &record.behind, &record.parked)
    });
    (!same).then_some(record)
}

/// Writes `record` through the committer: `Some` once it is durable (for the host to take
/// on), `None` if the write failed (the next tick tries again).
async fn persist_frontier(shared: &Shared, record: FrontierRecord) -> Option<FrontierRecord> {
    let value = match record.encode() {
        Ok(value) => value,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the outbox frontier");
            return None;
        }
    };
    let write = KeyWrite {
        space: Space::Meta,
        key: Arc::from(FRONTIER_KEY),
        value: Some(value),
    };
    let ticket = shared.committer.submit(vec![write], None, None).await;
    match ticket.wait().await {
        Ok(()) => Some(record),
        Err(failure) => {
            tracing::warn!(error = %failure, "cannot write the outbox frontier; trying again");
            None
        }
    }
}

/// Compacts the whole outbox (off the async workers) once it grew by
/// [`COMPACT_OUTBOX_AFTER`] since the last time, so the entries the frontier passed leave
/// the disk.
fn compact_outbox(myself: &ActorRef<HostMsg>, shared: &Arc<Shared>, keeper: &mut Keeper) {
    let Ok(store) = shared.store() else {
        return;
    };
    if keeper.compacting || store.outbox_disk_space() < keeper.compacted + COMPACT_OUTBOX_AFTER {
        return;
    }
    keeper.compacting = true;
    let host = myself.clone();
    shared.tokio.spawn_blocking(move || {
        if let Err(e) = store.compact_outbox() {
            // Tried again once the outbox grew as much again.
            tracing::warn!(error = %e, "cannot compact the outbox");
        }
        let space = store.outbox_disk_space();
        let _ = host.cast(HostMsg::OutboxCompacted(space));
    });
}

/// Where the rest of the runtime reaches the host.
#[derive(Clone)]
pub(crate) struct HostRef(Arc<Link>);

/// A tick's work: retry what waited for a backoff, fire due timers.
async fn tick(myself: &ActorRef<HostMsg>, shared: &Arc<Shared>, state: &mut HostState) {
    state.dispatcher.tick();
    if shared.keeps_frontier {
        write_frontier(myself, shared, state);
    }
    if state.timers.due(shared.clock.epoch_ms()) {
        let host = myself.clone();
        let done = move |key: Arc<[u8]>| -> DoneFn {
            let host = host.clone();
            Box::new(move |outcome| {
                let _ = host.cast(HostMsg::TimerDone { key, outcome });
            })
        };
        state.timers.fire(shared, &done).await;
    }
}

impl Services for HostRef {
    fn committed(&self, entries: Vec<(OutboxId, OutboxRecord)>) {
        self.0.notify(Notice::Committed(entries));
    }

    fn unpark_timer(&self, id: DeadLetterId, shard: u16) -> Result<(), Failure> {
        self.0
            .actor
            .cast(HostMsg::UnparkTimer { id, shard })
            .map_err(|_| Failure::ShuttingDown)
    }

    fn timer_scheduled(&self, shard: u16, due_ms: u64) {
        self.0.notify(Notice::TimerScheduled { shard, due_ms });
    }

    fn shard_taken(&self, shard: u16) {
        let _ = self.0.actor.cast(HostMsg::ShardTaken(shard));
    }

    fn shard_dropped(&self, shard: u16) {
        let _ = self.0.actor.cast(HostMsg::ShardDropped(shard));
    }

    fn flush_frontier(&self) -> BoxFuture<'static, ()> {
        let host = self.0.actor.clone();
        Box::pin(async move {
            let _ = host.call(HostMsg::FlushFrontier, None).await;
        })
    }

    fn settle(&self) -> BoxFuture<'static, Result<Settled, Failure>> {
        let host = self.0.actor.clone();
        Box::pin(async move {
            match host.call(HostMsg::Settle, None).await {
                Ok(ractor::rpc::CallResult::Success(settled)) => Ok(settled),
                _ => Err(Failure::ShuttingDown),
            }
        })
    }
}

/// How often the host does its periodic work.
pub(crate) struct Periods {
    /// Passivation sweeps.
    pub(crate) sweep: Duration,
    /// Removal of expired outcomes of idempotent requests.
    pub(crate) expire: Duration,
}

/// A running host service.
pub(crate) struct Host {
    actor: ActorRef<HostMsg>,
    handle: tokio::task::JoinHandle<()>,
}

impl Host {
    pub(crate) async fn start(
        shared: Weak<Shared>,
        periods: Periods,
        recovered: Vec<(OutboxId, OutboxRecord)>,
        shards: std::ops::Range<u16>,
    ) -> Result<(Host, HostRef), String> {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let (actor, handle) = Actor::spawn(
            None,
            HostActor,
            (shared, periods, recovered, shards, inbox.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let host_ref = HostRef(Arc::new(Link {
            actor: actor.clone(),
            inbox,
        }));
        Ok((Host { actor, handle }, host_ref))
    }

    pub(crate) async fn stop(self) {
        self.actor.stop(None);
        let _ = self.handle.await;
    }
}
