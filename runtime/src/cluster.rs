//! Scale-out (feature `cluster`): nodes that share the [`SHARDS`](crate::SHARDS) shards through
//! NATS JetStream. This module and its files are the only ones that name `async-nats`.
//!
//! What it owns, per cluster (`name`), all in JetStream on the given NATS servers:
//! - **configuration**: the KV bucket `gears_<name>_meta` keeps the cluster's name and shard
//!   count; a node whose build disagrees refuses to start ([`check_config`]).
//! - **membership** (`cluster/members.rs`): every node puts a heartbeat under its id in
//!   `gears_<name>_members`, whose entries expire after half a lease; the bucket's keys are the
//!   live members.
//! - **ownership** (`cluster/leases.rs`): each shard's owner is chosen by rendezvous hashing
//!   over the live members; a node serves a shard only under a lease, a key of
//!   `gears_<name>_leases` it created (create-if-absent) and renews by compare-and-set on the
//!   key's revision. The bucket's entries expire after the lease time, so a dead node's
//!   shards are free one lease after its last renewal.
//! - **the log** (`cluster/log.rs`, `cluster/replicate.rs`): every commit is appended, one
//!   message per touched shard, to the stream `GEARS_<name>_LOG` before it is acknowledged;
//!   a node taking a shard replays what its store has not applied.
//! - **snapshots** (`cluster/snapshot.rs`): every [`ClusterConfig::snapshot_after`] entries of
//!   a shard, the node serving it writes the shard's records to the object store
//!   `gears_<name>_snapshots` and purges the log below them; a take-over loads the snapshot
//!   and replays only the entries after it.
//! - **routing** (`cluster/route.rs`): a node listens on `gears.<name>.call.<shard>` for every
//!   shard it serves; calls and durable messages to actors of other nodes' shards are sent
//!   there (what they carry and how they run: the runtime's `wire.rs`, `handle/route.rs`,
//!   `remote.rs`).
//! - **placement** (`cluster/placement.rs`): [`ClusterPlacement`] answers the runtime's
//!   [`Placement`](crate::Placement) from the leases held: a shard is `Local` under the
//!   lease's revision as its epoch, until a deadline a quarter of a lease before the lease can
//!   lapse (measured on the monotonic clock from when the renewal was *sent*).
//!
//! Why no shard is served by two nodes at once: a lease key is created by one node only, and
//! another can create it only after it was deleted (a graceful release, after which its old
//! holder no longer serves) or expired, at least a lease time after the last renewal the old
//! holder sent; the old holder stopped serving a quarter of a lease before that. A paused
//! node resumes past its deadline, so it answers nothing as owner after a pause; what it had
//! in flight is fenced by the commit pipeline, which writes only under an epoch the placement
//! still holds.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

mod leases;
mod log;
mod members;
mod placement;
mod replicate;
mod route;
mod snapshot;

// The parts below the runtime, for the cluster's own tests and tools.
#[doc(hidden)]
pub use self::leases::Node;
#[doc(hidden)]
pub use self::log::{AppendError, LogEntry, LogWrite, Replayed, ShardLog};
#[doc(hidden)]
pub use self::placement::ClusterPlacement;
pub(crate) use self::route::{Router, Serve};

use async_nats::jetstream::{self, kv};

use self::leases::{Attached, Drain};
pub(crate) use self::replicate::Local;
use self::replicate::Replication;
use self::snapshot::Snapshots;

/// How long a lease lives unless renewed, by default: above the longest write stall measured
/// for a JetStream leader change here (10.3 s, NATS-NOTES.md), with margin.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(20);

/// Log entries a shard gathers before it is snapshotted, by default (see
/// [`ClusterConfig::snapshot_after`]).
pub const DEFAULT_SNAPSHOT_AFTER: u64 = 4096;

/// Longest node id and cluster name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Where a node finds its cluster, and who it is in it.
///
/// ```
/// # #[cfg(feature = "cluster")] {
/// use gears::cluster::ClusterConfig;
/// let config = ClusterConfig::new(["nats://127.0.0.1:4222"], "node-a").name("orders");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) urls: Vec<String>,
    pub(crate) node: Arc<str>,
    pub(crate) name: String,
    pub(crate) replicas: usize,
    pub(crate) lease_ttl: Duration,
    pub(crate) max_moves: usize,
    pub(crate) snapshot_after: u64,
}

impl ClusterConfig {
    /// A node `node` (unique in the cluster) that reaches NATS at `urls` (any of them; the
    /// client reconnects to another when one goes away), in the cluster named `gears`, with
    /// buckets of 3 replicas and 20 s leases.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>, node: impl AsRef<str>) -> Self {
        ClusterConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            node: Arc::from(node.as_ref()),
            name: "gears".into(),
            replicas: 3,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_moves: 64,
            snapshot_after: DEFAULT_SNAPSHOT_AFTER,
        }
    }

    /// The cluster's name: nodes of one cluster share it, and the NATS resources carry it, so
    /// several clusters can share NATS servers. Letters, digits, `-` and `_`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replicas of every bucket and stream (default 3; 1 for a single NATS server).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long a shard lease lives unless renewed (default [`DEFAULT_LEASE_TTL`]). A node
    /// renews every eighth of it and stops serving a quarter of it before it could lapse, so a
    /// dead node's shards move after about this long; it must outlast NATS' stalls (a stream
    /// leader change stalled writes up to 10 s here), or every lease could lapse at once.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Most shards this node hands to others per round of rebalancing (default 64), so that
    /// a joining node takes its share in steps instead of all shards pausing at once.
    pub fn max_moves_per_round(mut self, moves: usize) -> Self {
        self.max_moves = moves;
        self
    }

    /// How many log entries a shard gathers before the node serving it writes a snapshot of
    /// it and removes the entries before it from the log (default [`DEFAULT_SNAPSHOT_AFTER`]):
    /// what a node taking the shard over replays is at most about this many entries after
    /// the snapshot. Lower means shorter take-overs and more snapshot writes.
    pub fn snapshot_after(mut self, entries: u64) -> Self {
        self.snapshot_after = entries;
        self
    }

    /// Refuses names NATS would refuse (or read as subject separators) and times that
    /// cannot work.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_name("node id", &self.node)?;
        check_name("cluster name", &self.name)?;
        if self.urls.is_empty() {
            return Err(cluster_config("no NATS server URL given"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(cluster_config(format!(
                "replicas must be between 1 and 5, not {}",
                self.replicas
            )));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(cluster_config(format!(
                "the lease time must be at least 1 s, not {:?}",
                self.lease_ttl
            )));
        }
        if self.max_moves == 0 {
            return Err(cluster_config("max_moves_per_round must be at least 1"));
        }
        if self.snapshot_after == 0 {
            return Err(cluster_config("snapshot_after must be at least 1"));
        }
        Ok(())
    }

    /// Heartbeats and renewals happen this often.
    pub(crate) fn renew_every(&self) -> Duration {
        self.lease_ttl / 8
    }

    /// A node stops serving a shard this long before its lease could lapse.
    pub(crate) fn margin(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// A member's heartbeat lives this long.
    pub(crate) fn member_ttl(&self) -> Duration {
        self.lease_ttl / 2
    }

    /// Free shards this node should own are tried this often (a hand-off completes within it).
    pub(crate) fn acquire_every(&self) -> Duration {
        (self.lease_ttl / 40).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }

    pub(crate) fn bucket(&self, what: &str) -> String {
        format!("gears_{}_{what}", self.name)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(cluster_config(format!(
            "the {what} `{name}` must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`"
        )))
    }
}

fn cluster_config(message: impl Into<String>) -> Error {
    Error::Cluster(message.into())
}

/// What the meta bucket records about a cluster: the first node to start writes it, every
/// later one compares. Versioned, as every stored value is.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ClusterRecord {
    name: String,
    shards: u16,
}

/// The format of [`ClusterRecord`], its first byte.
const CLUSTER_RECORD_V1: u8 = 1;

impl ClusterRecord {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![CLUSTER_RECORD_V1];
        bytes.extend(postcard::to_stdvec(self).unwrap_or_default());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<ClusterRecord, String> {
        match bytes.split_first() {
            Some((&CLUSTER_RECORD_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("undecodable: {e}"))
            }
            Some((version, _)) => Err(format!("format {version}, newer than this build")),
            None => Err("empty".into()),
        }
    }
}

/// Records the cluster's configuration, or checks it against the one recorded.
pub(crate) async fn check_config(
    meta: &async_nats::jetstream::kv::Store,
    config: &ClusterConfig,
) -> Result<(), Error> {
    use async_nats::jetstream::kv::CreateErrorKind;
    let ours = ClusterRecord {
        name: config.name.clone(),
        shards: crate::SHARDS,
    };
    let created = until_ready("record the cluster's configuration", || async {
        match meta.create("config", ours.encode().into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await?;
    if created {
        return Ok(());
    }
    let stored = until_ready("read the cluster's configuration", || meta.get("config"))
        .await?
        .ok_or_else(|| cluster_config("the cluster's configuration vanished while read"))?;
    let stored = ClusterRecord::decode(&stored)
        .map_err(|e| cluster_config(format!("the cluster's recorded configuration is {e}")))?;
    if stored != ours {
        return Err(cluster_config(format!(
            "the cluster `{}` was created with {} shards; this build has {}",
            stored.name, stored.shards, ours.shards
        )));
    }
    Ok(())
}

/// A node's connection to its cluster: the JetStream context and the buckets, opened (and
/// created by the first node) and checked.
pub(crate) struct Connection {
    pub(crate) config: ClusterConfig,
    /// Distinguishes this run of the node from its earlier ones (in lease values and in the
    /// ids of its log appends).
    pub(crate) incarnation: u64,
    pub(crate) js: jetstream::Context,
    pub(crate) members: kv::Store,
    pub(crate) leases: kv::Store,
}

impl Connection {
    /// Connects to NATS (any of the URLs), opens the cluster's buckets and checks (or
    /// records) its configuration.
    pub(crate) async fn open(config: &ClusterConfig) -> Result<Connection, Error> {
        config.validate()?;
        let addrs = config
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Cluster(format!("a NATS server URL is invalid: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("gears-{}-{}", config.name, config.node))
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .map_err(|e| nats_error("connect to NATS", e))?;
        let js = jetstream::new(client);
        let bucket = |what: &str, max_age: Duration| kv::Config {
            bucket: config.bucket(what),
            history: 1,
            max_age,
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let meta = open_bucket(&js, bucket("meta", Duration::ZERO)).await?;
        check_config(&meta, config).await?;
        let members = open_bucket(&js, bucket("members", config.member_ttl())).await?;
        let leases = open_bucket(&js, bucket("leases", config.lease_ttl)).await?;
        Ok(Connection {
            config: config.clone(),
            incarnation: incarnation(),
            js,
            members,
            leases,
        })
    }
}

/// Opens a bucket, creating it when missing (every node runs this at start; creating one
/// that exists with the same configuration succeeds).
async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, Error> {
    let name = config.bucket.clone();
    until_ready(&format!("create the bucket {name}"), || async {
        match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            Err(created) => js.get_key_value(&name).await.map_err(|_| created),
        }
    })
    .await
}

/// How long a starting node retries what NATS refuses while it is not ready: a stream just
/// created by another node starting at the same moment is still electing its leader ("no
/// responders", 503), as is a cluster of servers that just started.
const STARTUP_RETRIES: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or [`STARTUP_RETRIES`] have passed; then its last error,
/// as the failure to do `what`.
pub(crate) async fn until_ready<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, Error> {
    let deadline = tokio::time::Instant::now() + STARTUP_RETRIES;
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "cannot {what} yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(nats_error(what, e)),
        }
    }
}

/// Distinguishes this run of a node from its earlier ones.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(48)
}

/// A runtime's cluster membership, prepared before its commit pipeline starts (which
/// replicates through it) and started once its services run.
pub(crate) struct Membership {
    connection: Connection,
    placement: Arc<ClusterPlacement>,
    replication: Arc<Replication>,
}

impl Membership {
    /// Connects, and opens the replicated log the runtime's commits go through.
    pub(crate) async fn prepare(config: &ClusterConfig, local: Local) -> Result<Self, Error> {
        let connection = Connection::open(config).await?;
        let log = ShardLog::open(&connection.js, config).await?;
        let snapshots = Snapshots::open(&connection.js, config).await?;
        let placement = Arc::new(ClusterPlacement::new());
        let replication = Arc::new(Replication::new(
            (log, snapshots),
            local,
            placement.clone(),
            config,
            connection.incarnation,
        ));
        Ok(Membership {
            connection,
            placement,
            replication,
        })
    }

    /// The placement the runtime asks on every call.
    pub(crate) fn placement(&self) -> Arc<ClusterPlacement> {
        self.placement.clone()
    }

    /// Routes calls to the shards other nodes serve, and (once told which shards this node
    /// serves) the calls sent to this node's shards to `serve`.
    pub(crate) fn router(&self, serve: Serve) -> Arc<Router> {
        Arc::new(Router::new(
            self.connection.js.client(),
            &self.connection.config,
            serve,
        ))
    }

    /// What the commit pipeline appends through.
    pub(crate) fn replicator(&self) -> Arc<dyn crate::commit::Replicator> {
        self.replication.clone()
    }

    /// Joins: takes this node's share of the shards (each caught up with its log first).
    /// `drain` waits for the commits submitted so far; `shard_events` tells the runtime's
    /// services a shard was taken (`true`) or given up (`false`).
    pub(crate) async fn start(
        self,
        drain: Drain,
        shard_events: Arc<dyn Fn(u16, bool) + Send + Sync>,
    ) -> Result<Node, Error> {
        let attached = Attached {
            replication: self.replication,
            drain,
            shard_events,
        };
        Node::start(self.connection, self.placement, Some(attached)).await
    }
}

/// A NATS failure while doing `what`, as the runtime reports it.
pub(crate) fn nats_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Cluster(format!("cannot {what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_nats_would_refuse_are_refused() {
        for bad in ["", "a.b", "a b", "a*", "a>", &"n".repeat(65)] {
            assert!(
                ClusterConfig::new(["nats://x"], bad).validate().is_err(),
                "{bad:?}"
            );
            assert!(
                ClusterConfig::new(["nats://x"], "a")
                    .name(bad)
                    .validate()
                    .is_err()
            );
        }
        assert!(
            ClusterConfig::new(["nats://x"], "node-1_a")
                .validate()
                .is_ok()
        );
        assert!(
            ClusterConfig::new(Vec::<String>::new(), "a")
                .validate()
                .is_err()
        );
        assert!(
            ClusterConfig::new(["nats://x"], "a")
                .replicas(0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn the_cluster_record_round_trips_and_refuses_newer_formats() {
        let record = ClusterRecord {
            name: "orders".into(),
            shards: 256,
        };
        assert_eq!(ClusterRecord::decode(&record.encode()).unwrap(), record);
        let mut newer = record.encode();
        newer[0] = 2;
        assert!(ClusterRecord::decode(&newer).is_err());
        assert!(ClusterRecord::decode(&[]).is_err());
    }
}
