//! Group commit and the output gate.
//!
//! Activations hand every state change to one committer thread and go on with their next
//! message. The committer drains everything that arrived while it was busy into one atomic
//! fjall batch with one journal sync (a key written several times is written once), then
//! hands the batch's [`Ticket`]s to a settler thread, which completes them in commit order
//! while the committer goes on with the next batch. A reply is gated on the ticket of its
//! actor's latest write: it leaves only when that write is durable, and fails if it failed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};
use futures::future::{BoxFuture, Either, Ready, ready};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::codec::shard_of_key;
use crate::error::{Failure, StorageError};
use crate::metrics::Metrics;
use crate::placement::{Fence, Placement};
use crate::store::{Space, Store, Write};

/// Most writes taken into one batch, so one huge burst does not delay every reply in it.
const MAX_BATCH: usize = 8192;

/// A step of the commit path where a test can inject a storage failure.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitStage {
    /// Before the batch is written to the store.
    BeforeWrite,
    /// After the batch was written to the journal (and applied in memory), before the journal
    /// is synced: an `Err` fails the batch and skips the sync, so the write is neither
    /// durable nor flushed to the OS.
    AfterWrite,
    /// In place of the journal sync's outcome: an `Err` is a failed sync. The journal is
    /// flushed to the OS but not fsynced (as when `fsync` reports an I/O error), and the
    /// batch fails.
    Sync,
    /// After the batch was written and synced, before replies are released (the write is
    /// durable but the runtime treats it as failed: callers see an error, never a false ack).
    AfterSync,
}

/// A test seam: called at each [`CommitStage`] of a batch that holds an actor's write; an
/// `Err` fails the batch as a storage error would. A batch of only the store's own records
/// (the outbox frontier) passes by it: such a batch comes at no moment a test chooses, and
/// would take a fault the test armed for a turn (a failed frontier write is tried again at
/// the next tick).
#[doc(hidden)]
pub type FaultHook = Arc<dyn Fn(CommitStage) -> Result<(), String> + Send + Sync>;

/// Makes a batch's writes durable somewhere else before the store applies them: a cluster
/// node's replicated log (feature `cluster`). On one node there is none.
///
/// Contract: called by the committer thread (it may block), with the batch's coalesced
/// writes grouped by shard (every stored key starts with its shard), at most one call at a
/// time. It answers, per shard and in the same order, the sequence under which that shard's
/// writes are durable (the store records it as the shard's applied sequence in the same
/// batch) or why they are not: those writes are not applied, and every write of the batch
/// that touched that shard fails with it.
///
/// Each shard's writes that put an outbox entry carry the shard's outbox mark (see
/// [`crate::backlog::Numbers`]): [`Replicator::issued_outbox_numbers`] when the batch was
/// replicated.
pub(crate) trait Replicator: Send + Sync {
    fn replicate(&self, shards: &[(u16, Vec<Write<'_>>)]) -> Vec<Result<u64, Failure>>;

    /// Every outbox sequence number handed out on this node so far is below this one.
    fn issued_outbox_numbers(&self) -> u64;
}

/// A reply waiting for durability: called once with the outcome of the write it waits on.
pub(crate) type GatedReply = Box<dyn FnOnce(Result<(), Failure>) + Send>;

const PENDING: u8 = 0;
/// In the store, its callbacks still running: settled, but a later turn's reply or events
/// must still wait behind them (they are queued, not run, until it is `DURABLE`).
const WRITTEN: u8 = 3;
const DURABLE: u8 = 1;
const FAILED: u8 = 2;

/// The fate of one submitted write, and the replies waiting on it.
pub(crate) struct Ticket {
    status: AtomicU8,
    /// Set by the committer the moment it knows the write failed, before the settler marks
    /// it: a later write that depends on it must fail even if it reaches the committer first.
    doomed: AtomicBool,
    inner: Mutex<TicketInner>,
}

struct TicketInner {
    waiting: smallvec::SmallVec<[GatedReply; 2]>,
    /// Why the write failed: set when it is doomed, so writes that depend on it fail alike.
    error: Option<Failure>,
}

impl Ticket {
    fn new() -> Arc<Ticket> {
        Arc::new(Ticket {
            status: AtomicU8::new(PENDING),
            doomed: AtomicBool::new(false),
            inner: Mutex::new(TicketInner {
                waiting: smallvec::SmallVec::new(),
                error: None,
            }),
        })
    }

    /// True once the write failed (it will never become durable).
    pub(crate) fn failed(&self) -> bool {
        self.status.load(Ordering::Acquire) == FAILED
    }

    /// True once the committer knows the write failed (possibly before it is settled).
    fn doomed(&self) -> bool {
        self.doomed.load(Ordering::Acquire) || self.failed()
    }

    /// Why the write failed, once the committer knows.
    fn failure(&self) -> Option<Failure> {
        self.inner.lock().error.clone()
    }

    /// True once the write is durable or failed: what it wrote is in the store (or never
    /// will be), so an activation whose last write this is can be dropped. Its callbacks may
    /// still be running (see [`Ticket::drained`]).
    pub(crate) fn settled(&self) -> bool {
        self.status.load(Ordering::Acquire) != PENDING
    }

    /// True once the write is settled and every callback registered on it has run: a later
    /// turn of the same activation may release its reply without waiting on it.
    pub(crate) fn drained(&self) -> bool {
        matches!(self.status.load(Ordering::Acquire), DURABLE | FAILED)
    }

    /// Releases `reply` when this write is durable (now, if it already is).
    pub(crate) fn gate(&self, reply: impl FnOnce(Result<(), Failure>) + Send + 'static) {
        if self.status.load(Ordering::Acquire) == DURABLE {
            return reply(Ok(()));
        }
        let outcome = {
            let mut inner = self.inner.lock();
            match self.status.load(Ordering::Acquire) {
                // While the settler runs the callbacks, a new one queues behind them.
                PENDING | WRITTEN => {
                    inner.waiting.push(Box::new(reply));
                    return;
                }
                DURABLE => Ok(()),
                _ => Err(inner.error.clone().unwrap_or_else(|| {
                    Failure::Storage(StorageError::new("an earlier write of this actor failed"))
                })),
            }
        };
        reply(outcome);
    }

    /// Waits until this write is durable (or failed).
    pub(crate) async fn wait(&self) -> Result<(), Failure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.gate(move |outcome| {
            let _ = tx.send(outcome);
        });
        rx.await.unwrap_or_else(|_| {
            Err(Failure::Storage(StorageError::new(
                "the write was abandoned",
            )))
        })
    }

    /// Marks the write settled (`WRITTEN`), runs the waiting callbacks, then marks it
    /// `DURABLE`. It is settled before its callbacks run, so a caller that got its reply finds
    /// the activation passivatable (the live cap can make room for its next call); it is
    /// `DURABLE` only once every callback registered before has run, so a later turn that
    /// sees it drained cannot release its events or reply ahead of this write's (a callback
    /// registered meanwhile queues behind them). A failure is marked first (it releases
    /// nothing but errors).
    fn settle(&self, outcome: Result<(), Failure>) {
        if let Err(error) = &outcome {
            // A failed write releases nothing whose order matters (no events, no sends): it is
            // marked failed before its replies leave, so a call made right after a failed one
            // finds the actor's write failed and reloads it, instead of failing with it.
            let waiting = {
                let mut inner = self.inner.lock();
                inner.error = Some(error.clone());
                self.status.store(FAILED, Ordering::Release);
                std::mem::take(&mut inner.waiting)
            };
            for reply in waiting {
                run_callback(reply, Err(error.clone()));
            }
            return;
        }
        self.status.store(WRITTEN, Ordering::Release);
        loop {
            let waiting = {
                let mut inner = self.inner.lock();
                if inner.waiting.is_empty() {
                    self.status.store(DURABLE, Ordering::Release);
                    return;
                }
                std::mem::take(&mut inner.waiting)
            };
            for reply in waiting {
                run_callback(reply, outcome.clone());
            }
        }
    }
}

/// Runs one waiting callback. A callback can run user code (the `Drop` of a handler's value
/// nobody waits for any more): if it panics, the others still run and the write is still
/// marked, or its actor would wait for it forever.
fn run_callback(reply: GatedReply, outcome: Result<(), Failure>) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| reply(outcome))).is_err() {
        tracing::error!("a callback of a settled write panicked");
    }
}

/// Gates `reply` on `ticket`, or releases it at once when there is no pending write.
pub(crate) fn release_after(
    ticket: Option<&Arc<Ticket>>,
    reply: impl FnOnce(Result<(), Failure>) + Send + 'static,
) {
    match ticket {
        Some(t) => t.gate(reply),
        None => reply(Ok(())),
    }
}

/// One key to write: a value, or `None` to delete it.
pub(crate) struct KeyWrite {
    pub(crate) space: Space,
    pub(crate) key: Arc<[u8]>,
    pub(crate) value: Option<Arc<[u8]>>,
}

/// What one turn (or one outside send) hands to the committer: applied atomically.
pub(crate) struct CommitRequest {
    pub(crate) writes: Vec<KeyWrite>,
    /// The actor's previous write, if it was not durable at submission: if it fails, this one
    /// must fail too (it was computed from a state that will never exist on disk).
    pub(crate) after: Option<Arc<Ticket>>,
    pub(crate) ticket: Arc<Ticket>,
    /// The shard and epoch the writes were made under: written only while the placement
    /// still holds it.
    pub(crate) fence: Option<Fence>,
    /// The writes only remove or move a timer index entry (counted apart).
    pub(crate) upkeep: bool,
}

enum Command {
    Write(CommitRequest),
    /// Commit what has arrived and stop.
    Stop,
}

/// Settles a write the stopped committer will never take as failed; returns its ticket.
fn stopped(command: Command, ticket: Arc<Ticket>) -> Arc<Ticket> {
    if let Command::Write(request) = command {
        request
            .ticket
            .settle(Err(Failure::Storage(StorageError::new(
                "the committer has stopped",
            ))));
    }
    ticket
}

/// The sending side of the commit pipeline.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Command>,
}

impl Committer {
    /// Starts the committer thread.
    pub(crate) fn start(
        store: Store,
        placement: Arc<dyn Placement>,
        metrics: Arc<Metrics>,
        capacity: usize,
        fault: Option<FaultHook>,
        replicator: Option<Arc<dyn Replicator>>,
    ) -> std::io::Result<(Committer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name("gears-committer".into())
            .spawn(move || {
                let pipeline = Pipeline {
                    store,
                    placement,
                    metrics,
                    fault,
                    replicator,
                };
                run_committer(rx, &pipeline)
            })?;
        Ok((Committer { tx }, thread))
    }

    /// Submits a write and returns its ticket; waits (asynchronously) while the pipeline is
    /// full, which slows down only the writing actor.
    ///
    /// Not an `async fn`: the future of a submission that found room (most) is a ready
    /// ticket, a couple of words in the future of the turn that awaits it; only a wait for
    /// room is boxed.
    pub(crate) fn submit(
        &self,
        writes: Vec<KeyWrite>,
        after: Option<Arc<Ticket>>,
        fence: Option<Fence>,
    ) -> Either<Ready<Arc<Ticket>>, BoxFuture<'static, Arc<Ticket>>> {
        self.submit_counted(writes, after, fence, false)
    }

    /// [`Committer::submit`], counting the writes as timer index upkeep if `upkeep`.
    pub(crate) fn submit_counted(
        &self,
        writes: Vec<KeyWrite>,
        after: Option<Arc<Ticket>>,
        fence: Option<Fence>,
        upkeep: bool,
    ) -> Either<Ready<Arc<Ticket>>, BoxFuture<'static, Arc<Ticket>>> {
        let ticket = Ticket::new();
        let after = after.filter(|t| !t.settled() || t.failed());
        let request = CommitRequest {
            writes,
            after,
            ticket: ticket.clone(),
            fence,
            upkeep,
        };
        match self.tx.try_send(Command::Write(request)) {
            Ok(()) => Either::Left(ready(ticket)),
            Err(mpsc::error::TrySendError::Closed(command)) => {
                Either::Left(ready(stopped(command, ticket)))
            }
            Err(mpsc::error::TrySendError::Full(command)) => {
                let tx = self.tx.clone();
                Either::Right(Box::pin(async move {
                    match tx.send(command).await {
                        Ok(()) => ticket,
                        Err(e) => stopped(e.0, ticket),
                    }
                }))
            }
        }
    }

    /// Asks the committer to commit everything submitted so far and stop.
    pub(crate) async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }
}

/// Tickets with their outcomes, in commit order, for the settler.
type Settlement = Vec<(Arc<Ticket>, Result<(), Failure>)>;

/// Batches the committer may finish before the settler has settled them.
const SETTLE_QUEUE: usize = 64;

/// Settles tickets in the order the committer hands them over: runs their waiting replies
/// and releases, then marks them. Off the committer thread, so the next batch is written
/// and synced while this one's callers are woken.
fn run_settler(settlements: std::sync::mpsc::Receiver<Settlement>) {
    for settlement in settlements {
        for (ticket, outcome) in settlement {
            ticket.settle(outcome);
        }
    }
}

/// What the committer writes through.
struct Pipeline {
    store: Store,
    placement: Arc<dyn Placement>,
    metrics: Arc<Metrics>,
    fault: Option<FaultHook>,
    replicator: Option<Arc<dyn Replicator>>,
}

fn run_committer(mut rx: mpsc::Receiver<Command>, pipeline: &Pipeline) {
    let metrics = &pipeline.metrics;
    let (settle_tx, settle_rx) = std::sync::mpsc::sync_channel::<Settlement>(SETTLE_QUEUE);
    let (settle_tx, settler) = match std::thread::Builder::new()
        .name("gears-settler".into())
        .spawn(move || run_settler(settle_rx))
    {
        Ok(settler) => (Some(settle_tx), Some(settler)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the settler thread; settling on the committer");
            (None, None)
        }
    };
    let settle = |settlement: Settlement| {
        if settlement.is_empty() {
            return;
        }
        // Without a settler (it could not start, or it is gone), settle here, in order.
        let unsent = match &settle_tx {
            Some(tx) => tx.send(settlement).err().map(|e| e.0),
            None => Some(settlement),
        };
        for (ticket, outcome) in unsent.into_iter().flatten() {
            ticket.settle(outcome);
        }
    };
    let mut batch = Vec::with_capacity(256);
    let mut stopping = false;
    while !stopping {
        match rx.blocking_recv() {
            Some(Command::Write(first)) => batch.push(first),
            Some(Command::Stop) | None => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Write(r)) => batch.push(r),
                Ok(Command::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut settlement = Vec::with_capacity(batch.len());
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            commit_batch(pipeline, &mut batch, &mut settlement);
        }));
        if committed.is_err() {
            // A bug (ours or the store's): fail the batch rather than leave callers hanging.
            tracing::error!(
                writes = batch.len(),
                "commit batch panicked; its writes failed"
            );
            metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
            for r in &batch {
                if !r.ticket.doomed() {
                    let panicked = StorageError::new("the commit of this write panicked");
                    hand_over(&mut settlement, &r.ticket, Err(Failure::Storage(panicked)));
                }
            }
        }
        settle(settlement);
        batch.clear();
    }
    // Everything committed is settled before what follows is.
    drop(settle_tx);
    if let Some(settler) = settler
        && settler.join().is_err()
    {
        tracing::error!("the settler thread panicked");
    }
    // Whatever is still queued was never written: its callers hear so.
    rx.close();
    while let Ok(command) = rx.try_recv() {
        if let Command::Write(r) = command {
            r.ticket.settle(Err(Failure::Storage(StorageError::new(
                "the runtime shut down before this write",
            ))));
        }
    }
    tracing::debug!("committer stopped");
}

/// Commits `batch` and adds each of its tickets, with its outcome, to `settlement`. A
/// failed ticket is marked doomed here at once.
fn commit_batch(pipeline: &Pipeline, batch: &mut Vec<CommitRequest>, settlement: &mut Settlement) {
    let (placement, metrics) = (&*pipeline.placement, &*pipeline.metrics);
    let fault = pipeline
        .fault
        .as_ref()
        .filter(|_| !store_records_only(batch));
    // A write computed from a failed write fails with it, and never reaches the store.
    // Doomed in order, so a chain of such writes within one batch fails as a whole.
    batch.retain(|r| {
        let Some(failed) = r.after.as_ref().filter(|t| t.doomed()) else {
            return true;
        };
        let failure = failed.failure().unwrap_or_else(|| {
            Failure::Storage(StorageError::new(
                "an earlier write of this actor failed; its later writes were discarded",
            ))
        });
        hand_over(settlement, &r.ticket, Err(failure));
        false
    });
    if batch.is_empty() {
        return;
    }

    let started = Instant::now();
    if let Err(e) = inject(fault, CommitStage::BeforeWrite) {
        fail_batch(metrics, batch, settlement, started, Failure::Storage(e));
        return;
    }
    // Right before the write: a turn that ran under an epoch this node no longer holds for
    // its shard is refused, with nothing of it written.
    batch.retain(|r| match r.fence {
        Some(fence) if !placement.holds(fence.shard, fence.epoch) => {
            hand_over(settlement, &r.ticket, Err(Failure::Fenced(fence.shard)));
            false
        }
        _ => true,
    });
    if batch.is_empty() {
        return;
    }

    // Coalesce: the last write of a key within the batch wins.
    let submitted: usize = batch.iter().map(|r| r.writes.len()).sum();
    let upkeep: usize = batch
        .iter()
        .filter(|r| r.upkeep)
        .map(|r| r.writes.len())
        .sum();
    // Each key's last write, by its place among the batch's writes; an earlier write of the
    // key is marked superseded as the later one is found, so writing needs no second lookup
    // (the committer is the serial stage: the second lookups, in a nested iterator, were
    // about a tenth of its instructions per order).
    let mut last: HashMap<(Space, &[u8]), usize> = HashMap::with_capacity(submitted);
    let mut superseded = vec![false; submitted];
    // The store's own records (the outbox frontier), counted apart as upkeep is.
    let mut frontier = 0;
    for (at, w) in batch.iter().flat_map(|r| &r.writes).enumerate() {
        frontier += usize::from(w.space == Space::Meta);
        if let Some(earlier) = last.insert((w.space, &w.key), at) {
            superseded[earlier] = true;
        }
    }
    let coalesced_writes = || {
        batch
            .iter()
            .flat_map(|r| &r.writes)
            .zip(&superseded)
            .filter(|(_, superseded)| !**superseded)
            .map(|(w, _)| Write {
                space: w.space,
                key: &w.key,
                value: w.value.as_deref(),
            })
    };
    let coalesced = submitted - last.len();

    // Shards whose replication failed: their writes are not applied, and every write of the
    // batch that touched one of them fails with it.
    let mut unreplicated: HashMap<u16, Failure> = HashMap::new();
    let (outcome, written) = match &pipeline.replicator {
        None => {
            let mut writes = coalesced_writes();
            (
                write_durably(pipeline, fault, &mut writes, last.len()),
                last.len(),
            )
        }
        Some(replicator) => {
            // Read before grouping: every entry of the batch was numbered before it.
            let mark = replicator.issued_outbox_numbers().to_be_bytes();
            let mut by_shard: std::collections::BTreeMap<u16, Vec<Write<'_>>> = Default::default();
            for w in coalesced_writes() {
                by_shard.entry(shard_of_key(w.key)).or_default().push(w);
            }
            for (shard, writes) in by_shard.iter_mut() {
                if writes
                    .iter()
                    .any(|w| w.space == Space::Outbox && w.value.is_some())
                {
                    writes.push(Write {
                        space: Space::State,
                        key: crate::codec::outbox_mark_key(*shard),
                        value: Some(&mark),
                    });
                }
            }
            let slices: Vec<(u16, Vec<Write<'_>>)> = by_shard.into_iter().collect();
            let mut outcomes = replicator.replicate(&slices).into_iter();
            let mut applied = Vec::with_capacity(slices.len());
            for (shard, _) in &slices {
                match outcomes.next().unwrap_or_else(|| {
                    Err(Failure::Storage(StorageError::new(
                        "the replicator gave no outcome for this shard",
                    )))
                }) {
                    Ok(seq) => applied.push((shard.to_be_bytes(), seq.to_be_bytes())),
                    Err(failure) => {
                        unreplicated.insert(*shard, failure);
                    }
                }
            }
            let replicated = || {
                slices
                    .iter()
                    .filter(|(shard, _)| !unreplicated.contains_key(shard))
                    .flat_map(|(_, writes)| writes.iter().copied())
            };
            let count = replicated().count() + applied.len();
            let mut writes = replicated().chain(applied.iter().map(|(shard, seq)| Write {
                space: Space::Applied,
                key: shard,
                value: Some(seq),
            }));
            (write_durably(pipeline, fault, &mut writes, count), count)
        }
    };
    metrics
        .timer_index_writes
        .fetch_add(upkeep as u64, Ordering::Relaxed);
    metrics
        .frontier_writes
        .fetch_add(frontier as u64, Ordering::Relaxed);
    metrics.writes.fetch_add(written as u64, Ordering::Relaxed);
    metrics
        .coalesced
        .fetch_add(coalesced as u64, Ordering::Relaxed);
    drop(last);
    match outcome {
        Ok(()) => {
            count_batch(metrics, batch, started);
            for r in batch.iter() {
                let failed = (!unreplicated.is_empty())
                    .then(|| {
                        r.writes
                            .iter()
                            .find_map(|w| unreplicated.get(&shard_of_key(&w.key)))
                    })
                    .flatten();
                match failed {
                    Some(failure) => hand_over(settlement, &r.ticket, Err(failure.clone())),
                    None => hand_over(settlement, &r.ticket, Ok(())),
                }
            }
        }
        Err(e) => fail_batch(metrics, batch, settlement, started, Failure::Storage(e)),
    }
}

/// Writes a batch to the store and makes it durable (one journal sync), passing the fault
/// seam's stages.
fn write_durably(
    pipeline: &Pipeline,
    fault: Option<&FaultHook>,
    writes: &mut dyn Iterator<Item = Write<'_>>,
    count: usize,
) -> Result<(), StorageError> {
    let (store, metrics) = (&pipeline.store, &pipeline.metrics);
    store
        .write_batch(writes, count)
        .and_then(|()| {
            // Written to the memtables: from here a failure leaves writes that reads would
            // see but that are not durable.
            let synced = inject(fault, CommitStage::AfterWrite).and_then(|()| {
                // One journal sync per batch (fewer than batches only when a fault stops a
                // batch before its sync).
                metrics.syncs.fetch_add(1, Ordering::Relaxed);
                match inject(fault, CommitStage::Sync) {
                    Ok(()) => store.sync_batch(),
                    Err(e) => {
                        // What a failed fsync leaves: the journal reached the OS, not the disk.
                        let _ = store.flush_to_os();
                        Err(e)
                    }
                }
            });
            if synced.is_err() {
                store.mark_unsynced();
            }
            synced
        })
        .and_then(|()| inject(fault, CommitStage::AfterSync))
}

/// Counts a batch that reached the committer's write (or failed on its way there).
fn count_batch(metrics: &Metrics, batch: &[CommitRequest], started: Instant) {
    metrics.batches.fetch_add(1, Ordering::Relaxed);
    add_micros(&metrics.sync_micros, started.elapsed());
    metrics
        .max_batch
        .fetch_max(batch.len() as u64, Ordering::Relaxed);
}

/// Fails every write of `batch` with `failure`.
fn fail_batch(
    metrics: &Metrics,
    batch: &[CommitRequest],
    settlement: &mut Settlement,
    started: Instant,
    failure: Failure,
) {
    count_batch(metrics, batch, started);
    metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
    tracing::error!(error = %failure, writes = batch.len(), "commit batch failed");
    for r in batch {
        hand_over(settlement, &r.ticket, Err(failure.clone()));
    }
}

/// Adds `ticket`'s outcome to the settlement; a failure dooms the ticket at once, so a write
/// that depends on it fails even before the settler has settled it.
fn hand_over(settlement: &mut Settlement, ticket: &Arc<Ticket>, outcome: Result<(), Failure>) {
    if let Err(failure) = &outcome {
        ticket.inner.lock().error = Some(failure.clone());
        ticket.doomed.store(true, Ordering::Release);
    }
    settlement.push((ticket.clone(), outcome));
}

/// Whether every write of `batch` is to the store's own records (no actor's).
fn store_records_only(batch: &[CommitRequest]) -> bool {
    batch
        .iter()
        .all(|r| r.writes.iter().all(|w| w.space == Space::Meta))
}

fn inject(fault: Option<&FaultHook>, stage: CommitStage) -> Result<(), StorageError> {
    match fault {
        Some(hook) => hook(stage).map_err(StorageError::new),
        None => Ok(()),
    }
}

fn add_micros(counter: &AtomicU64, d: std::time::Duration) {
    counter.fetch_add(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}
