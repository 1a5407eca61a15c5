//! Shard ownership: a [`Node`]'s control task heartbeats, renews the leases it holds, hands
//! shards whose rendezvous owner is another live member over to it (a few per round,
//! draining each first), and takes the free shards whose owner it is.
//!
//! A lease is the key `sNNN` of the leases bucket, holding its node's id and incarnation. It
//! is taken by create-if-absent, renewed by compare-and-set on its revision, and given back by
//! a delete that expects that revision; the bucket's entries expire a lease time after their
//! last write, which frees a dead node's shards. Error 10071 on a renewal means another node
//! holds the shard now; any other failure (a timeout, 10164, a leader change) is retried at
//! the next round while the deadline still allows serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_nats::jetstream::kv;
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::codec::SHARDS;
use crate::error::Error;

use super::placement::ClusterPlacement;
use super::replicate::Replication;
use super::{ClusterConfig, Connection, members};

/// A lease value's format, its first byte; then the incarnation (u64, big-endian) and the
/// node id.
const LEASE_V1: u8 = 1;

/// NATS operations of one round run at most this many at once.
const CONCURRENT_OPS: usize = 32;

/// Waits until the writes of turns that ran in a shard being handed over are committed (the
/// runtime's commit pipeline).
pub(crate) type Drain = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A runtime a node serves shards for: its replicated commits, its commit pipeline to drain,
/// and its services, told when a shard is taken (`true`) or given up (`false`).
#[derive(Clone)]
pub(crate) struct Attached {
    pub(crate) replication: Arc<Replication>,
    pub(crate) drain: Drain,
    pub(crate) shard_events: Arc<dyn Fn(u16, bool) + Send + Sync>,
}

/// A member of a cluster: its heartbeat, its leases, and the placement they give.
///
/// Dropping a node stops its control task without giving anything back (its leases lapse a
/// lease time later, as if it had crashed); [`Node::leave`] hands everything over first.
pub struct Node {
    config: ClusterConfig,
    placement: Arc<ClusterPlacement>,
    members: kv::Store,
    control: Mutex<Option<(oneshot::Sender<()>, JoinHandle<Control>)>>,
    /// Writes the snapshots of the shards served here (with a runtime attached).
    snapshots: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.config.node)
            .field("cluster", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Joins the cluster for ownership alone: leases and a placement of its own, no runtime
    /// (its shards' state is not replicated; the runtime's builder attaches one).
    pub async fn join(config: ClusterConfig) -> Result<Node, Error> {
        let connection = Connection::open(&config).await?;
        Node::start(connection, Arc::new(ClusterPlacement::new()), None).await
    }

    /// Starts the control task; returns after its first round, so the shards this node
    /// should own and nobody holds are served when it returns.
    pub(crate) async fn start(
        connection: Connection,
        placement: Arc<ClusterPlacement>,
        attached: Option<Attached>,
    ) -> Result<Node, Error> {
        let config = connection.config.clone();
        let mut control = Control {
            config: config.clone(),
            incarnation: connection.incarnation,
            members: connection.members.clone(),
            leases: Arc::new(connection.leases.clone()),
            placement: placement.clone(),
            attached,
            live: vec![config.node.clone()],
            held: HashMap::new(),
            caught_up: tokio::sync::mpsc::unbounded_channel(),
            catching_up: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CATCH_UPS)),
            catch_ups: HashMap::new(),
        };
        let snapshots = control.attached.as_ref().map(|a| {
            let every = super::snapshot::check_every(&config);
            tokio::spawn(a.replication.clone().keep_snapshots(every))
        });
        control.renew_round().await;
        control.acquire_round().await;
        // The first shards are served when the node starts (bounded: a catch-up that takes
        // longer ends in the background).
        let _ = tokio::time::timeout(control.config.margin(), control.finish_catch_ups()).await;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(control.run(stopped));
        Ok(Node {
            config,
            placement,
            members: connection.members,
            control: Mutex::new(Some((stop, task))),
            snapshots,
        })
    }

    /// The placement this node's leases give: what the runtime asks on every call.
    pub fn placement(&self) -> Arc<ClusterPlacement> {
        self.placement.clone()
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.config.node
    }

    /// Leaves the cluster: stops the control task, drains and gives back every shard (so
    /// their new owners take them at once instead of a lease time later), and removes the
    /// heartbeat. Idempotent.
    pub async fn leave(&self) -> Result<(), Error> {
        let control = self.control.lock().take();
        let Some((stop, task)) = control else {
            return Ok(());
        };
        let _ = stop.send(());
        if let Some(snapshots) = &self.snapshots {
            snapshots.abort();
        }
        let mut control = task
            .await
            .map_err(|e| Error::Cluster(format!("the cluster control task failed: {e}")))?;
        let held: Vec<u16> = control.held.keys().copied().collect();
        control.release(&held).await;
        let _ = members::leave(&self.members, &self.config.node).await;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((_, task)) = self.control.lock().take() {
            task.abort();
        }
        if let Some(snapshots) = &self.snapshots {
            snapshots.abort();
        }
    }
}

fn lease_key(shard: u16) -> String {
    format!("s{shard:03}")
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The shard's epoch here once it is served; `None` while its store catches up with its
    /// log (the lease is renewed meanwhile).
    epoch: Option<u64>,
    /// Its latest revision, which the next renewal expects.
    revision: u64,
    /// The revision it was created at: names this acquisition (a catch-up reports for it).
    created: u64,
    /// When its latest write (creation or renewal) was sent: its deadline counts from there.
    written: Instant,
}

/// A catch-up that ended: the shard, the acquisition (its lease's creation revision), and
/// the shard's epoch or why it failed.
type CaughtUp = (u16, u64, Result<u64, Error>);

/// Catch-ups that replay and append at once (the rest wait their turn).
const CONCURRENT_CATCH_UPS: usize = 8;

/// The control task's state.
struct Control {
    config: ClusterConfig,
    incarnation: u64,
    members: kv::Store,
    leases: Arc<kv::Store>,
    placement: Arc<ClusterPlacement>,
    attached: Option<Attached>,
    /// The live members as last listed (this node always among them).
    live: Vec<Arc<str>>,
    held: HashMap<u16, Held>,
    /// Where catch-ups, which run as tasks of their own so renewals never wait for a long
    /// replay, report (at most one per shard at a time, so bounded by the shard count).
    caught_up: (
        tokio::sync::mpsc::UnboundedSender<CaughtUp>,
        tokio::sync::mpsc::UnboundedReceiver<CaughtUp>,
    ),
    catching_up: Arc<tokio::sync::Semaphore>,
    /// The catch-ups running, by shard: the acquisition (its lease's creation revision) and
    /// the flag that tells one its shard was given up.
    catch_ups: HashMap<u16, (u64, Arc<AtomicBool>)>,
}

impl Control {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Control {
        let mut renew = tokio::time::interval(self.config.renew_every());
        let mut acquire = tokio::time::interval(self.config.acquire_every());
        for timer in [&mut renew, &mut acquire] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = &mut stop => return self,
                _ = renew.tick() => self.renew_round().await,
                _ = acquire.tick() => self.acquire_round().await,
                Some((shard, created, epoch)) = self.caught_up.1.recv() => {
                    self.caught_up(shard, created, epoch).await;
                }
            }
        }
    }

    /// Waits until every catch-up started has ended.
    async fn finish_catch_ups(&mut self) {
        while self.held.values().any(|h| h.epoch.is_none()) {
            match self.caught_up.1.recv().await {
                Some((shard, created, epoch)) => self.caught_up(shard, created, epoch).await,
                None => return,
            }
        }
    }

    fn lease_value(&self) -> bytes::Bytes {
        let mut value = vec![LEASE_V1];
        value.extend(self.incarnation.to_be_bytes());
        value.extend(self.config.node.as_bytes());
        value.into()
    }

    /// Until when a lease written (created or renewed) at `sent` may be served.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + (self.config.lease_ttl - self.config.margin())
    }

    /// The member that should own `shard` now.
    fn owner(&self, shard: u16) -> Option<&Arc<str>> {
        members::owner(shard, &self.live)
    }

    fn mine(&self, shard: u16) -> bool {
        self.owner(shard) == Some(&self.config.node)
    }

    /// Heartbeat, list the members, renew every lease, point other shards at their owners,
    /// and hand over (a bounded number of) shards that another member should own.
    async fn renew_round(&mut self) {
        let node = self.config.node.clone();
        if let Err(e) = members::heartbeat(&self.members, &node, self.incarnation).await {
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        match members::live(&self.members).await {
            Ok(mut live) => {
                if !live.contains(&node) {
                    live.push(node.clone());
                    live.sort();
                }
                if live != self.live {
                    tracing::info!(members = ?live, "cluster members changed");
                }
                self.live = live;
            }
            Err(e) => tracing::warn!(error = %e, "listing the cluster's members failed"),
        }
        self.renew().await;
        for shard in 0..SHARDS {
            let owner = self.owner(shard).filter(|o| **o != node).cloned();
            self.placement.point_to(shard, owner);
        }
        let mut leaving: Vec<u16> = self
            .held
            .keys()
            .copied()
            .filter(|&s| !self.mine(s))
            .collect();
        leaving.sort_unstable();
        leaving.truncate(self.config.max_moves);
        // A shard served here whose log this node may no longer append to (fenced, or an
        // append's outcome unknown) is given back, and taken again with a catch-up if still
        // ours. (One still catching up may not append yet either: it is not lost.)
        if let Some(attached) = &self.attached {
            let lost: Vec<u16> = self
                .held
                .iter()
                .filter(|(s, h)| {
                    h.epoch.is_some() && attached.replication.lost(**s) && !leaving.contains(s)
                })
                .map(|(s, _)| *s)
                .collect();
            leaving.extend(lost);
        }
        if !leaving.is_empty() {
            tracing::info!(
                shards = leaving.len(),
                "handing shards over to their owners"
            );
            self.release(&leaving).await;
        }
    }

    /// Renews every held lease; a lease another node took is dropped at once, one that could
    /// not be renewed is dropped once its deadline has passed.
    async fn renew(&mut self) {
        let value = self.lease_value();
        let held: Vec<(u16, Held)> = self.held.iter().map(|(s, h)| (*s, *h)).collect();
        let renewals = futures::stream::iter(held.into_iter().map(|(shard, held)| {
            let (value, leases) = (value.clone(), self.leases.clone());
            async move {
                let sent = Instant::now();
                let outcome = leases.update(lease_key(shard), value, held.revision).await;
                (shard, held, sent, outcome)
            }
        }))
        .buffer_unordered(CONCURRENT_OPS)
        .collect::<Vec<_>>()
        .await;
        for (shard, held, sent, outcome) in renewals {
            match outcome {
                Ok(revision) => {
                    if let Some(epoch) = held.epoch {
                        self.placement.extend(shard, epoch, self.deadline(sent));
                    }
                    if let Some(h) = self.held.get_mut(&shard) {
                        h.revision = revision;
                        h.written = sent;
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(shard, "shard lease lost to another node");
                    self.stop_serving(shard);
                }
                Err(e) => {
                    if self.placement.serving_for(shard).is_none() {
                        tracing::warn!(shard, error = %e, "shard lease not renewed in time; stopped serving it");
                        self.stop_serving(shard);
                    } else {
                        tracing::debug!(shard, error = %e, "shard lease renewal failed; retrying");
                    }
                }
            }
        }
    }

    /// Takes every free shard this node should own.
    async fn acquire_round(&mut self) {
        let wanted: Vec<u16> = (0..SHARDS)
            .filter(|s| !self.held.contains_key(s) && self.mine(*s))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let value = self.lease_value();
        let taken = futures::stream::iter(wanted.into_iter().map(|shard| {
            let (value, leases) = (value.clone(), self.leases.clone());
            async move {
                let sent = Instant::now();
                let outcome = leases.create(lease_key(shard), value).await;
                (shard, sent, outcome)
            }
        }))
        .buffer_unordered(CONCURRENT_OPS)
        .collect::<Vec<_>>()
        .await;
        let mut created = Vec::new();
        for (shard, sent, outcome) in taken {
            match outcome {
                Ok(revision) => created.push((shard, sent, revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => tracing::debug!(shard, error = %e, "taking a shard lease failed"),
            }
        }
        // Each taken shard's store catches up with its log (and fences earlier owners)
        // before it is served, in a task of its own.
        let count = created.len();
        for (shard, written, revision) in created {
            self.held.insert(
                shard,
                Held {
                    epoch: None,
                    revision,
                    created: revision,
                    written,
                },
            );
            let report = self.caught_up.0.clone();
            match &self.attached {
                Some(a) => {
                    let (replication, turn) = (a.replication.clone(), self.catching_up.clone());
                    let cancelled = Arc::new(AtomicBool::new(false));
                    self.catch_ups.insert(shard, (revision, cancelled.clone()));
                    tokio::spawn(async move {
                        let _turn = turn.acquire_owned().await;
                        let epoch = replication.catch_up(shard, &cancelled).await;
                        let _ = report.send((shard, revision, epoch));
                    });
                }
                None => {
                    let _ = report.send((shard, revision, Ok(revision)));
                }
            }
        }
        if count > 0 {
            tracing::info!(shards = count, held = self.held.len(), "took shard leases");
        }
    }

    /// A catch-up ended: the shard is served from now on (if its lease is still held), or
    /// its lease is given back.
    async fn caught_up(&mut self, shard: u16, created: u64, epoch: Result<u64, Error>) {
        if self
            .catch_ups
            .get(&shard)
            .is_some_and(|(c, _)| *c == created)
        {
            self.catch_ups.remove(&shard);
        }
        let Some(held) = self.held.get_mut(&shard) else {
            // Given up while it caught up: nothing may append under its epoch.
            if let Some(a) = &self.attached {
                a.replication.forget(shard);
            }
            return;
        };
        if held.created != created || held.epoch.is_some() {
            // An earlier acquisition's catch-up, ended after a newer one began: the newer
            // one's epoch entry fences it, and its own report decides.
            return;
        }
        match epoch {
            Ok(epoch) => {
                held.epoch = Some(epoch);
                let written = held.written;
                self.placement.grant(shard, epoch, self.deadline(written));
                if let Some(a) = &self.attached {
                    (a.shard_events)(shard, true);
                }
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "cannot catch up with a taken shard's log; giving it back");
                let revision = held.revision;
                self.held.remove(&shard);
                if let Some(a) = &self.attached {
                    a.replication.forget(shard);
                }
                if let Err(e) = self
                    .leases
                    .delete_expect_revision(lease_key(shard), Some(revision))
                    .await
                {
                    tracing::debug!(shard, error = %e, "giving a shard lease back failed");
                }
            }
        }
    }

    /// Stops serving `shard` at once: nothing of it commits any more, and the runtime's
    /// services stop its deliveries and timers.
    fn stop_serving(&mut self, shard: u16) {
        self.placement.revoke(shard);
        self.held.remove(&shard);
        // A catch-up still running stops before its next step: it must not fence the
        // shard's next owner with an epoch entry of its own.
        if let Some((_, cancelled)) = self.catch_ups.remove(&shard) {
            cancelled.store(true, Ordering::Release);
        }
        if let Some(a) = &self.attached {
            a.replication.forget(shard);
            (a.shard_events)(shard, false);
        }
    }

    /// Hands `shards` over: refuses their new calls, waits (bounded) for the writes of turns
    /// already run, stops serving them, and deletes their leases so the owner takes them now.
    async fn release(&mut self, shards: &[u16]) {
        for &shard in shards {
            self.placement.drain(shard);
        }
        // Turns in flight get a moment to hand their writes to the committer, then the
        // committer gets until a forced release to make them durable.
        if let Some(attached) = &self.attached {
            tokio::time::sleep(self.config.acquire_every()).await;
            if tokio::time::timeout(self.config.margin(), (attached.drain)())
                .await
                .is_err()
            {
                tracing::warn!(
                    shards = shards.len(),
                    "draining shards took too long; releasing them anyway"
                );
            }
        }
        let held: Vec<(u16, Held)> = shards
            .iter()
            .filter_map(|s| self.held.get(s).map(|h| (*s, *h)))
            .collect();
        for &shard in shards {
            self.stop_serving(shard);
        }
        futures::stream::iter(held.into_iter().map(|(shard, held)| {
            let leases = self.leases.clone();
            async move {
                if let Err(e) = leases
                    .delete_expect_revision(lease_key(shard), Some(held.revision))
                    .await
                {
                    // It lapses by itself a lease time after its last renewal.
                    tracing::debug!(shard, error = %e, "giving a shard lease back failed");
                }
            }
        }))
        .buffer_unordered(CONCURRENT_OPS)
        .collect::<Vec<()>>()
        .await;
    }
}
