//! [`Placement`]: which node serves each shard's actors, as this node sees it.
//!
//! Every call and every durable delivery asks the placement of its actor's shard before it
//! reaches the directory: here (under an ownership epoch), on another node, or nowhere right
//! now. A turn runs under the epoch its message was routed with, and its commit carries it:
//! the commit pipeline writes it only while the placement still holds that epoch, so a node
//! that lost a shard (a lease that lapsed while it was paused) can never write to it. On one
//! node, [`LocalPlacement`] owns every shard forever; a cluster plugs in its own.

use std::sync::Arc;

/// Where one shard's actors are served, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// Here, under ownership `epoch`: a turn's writes commit only while this node still holds
    /// the shard under the same epoch.
    Local {
        /// Changes every time this node (re)gains the shard.
        epoch: u64,
    },
    /// On another node: a cluster node routes calls there; with no cluster they fail with
    /// [`CallError::NotOwner`](crate::CallError::NotOwner).
    Remote(Arc<str>),
    /// Nowhere right now: the shard is moving
    /// ([`CallError::Unavailable`](crate::CallError::Unavailable)).
    Unavailable,
}

/// Decides which node serves each of the [`SHARDS`](crate::SHARDS) shards.
///
/// Contract:
/// - [`place`](Placement::place) is called on every call and delivery: it must be cheap
///   (an atomic read), and must not block.
/// - An epoch is never reused for a shard: after this node loses a shard and gains it again,
///   `place` reports a new epoch, so writes of turns that ran under the old one are refused
///   (`Fenced`) instead of landing on top of what another owner wrote meanwhile.
/// - [`holds`](Placement::holds) is what the commit pipeline checks right before it writes.
pub trait Placement: Send + Sync + 'static {
    /// Where `shard`'s actors are served now.
    fn place(&self, shard: u16) -> Place;

    /// Whether this node still holds `shard` under `epoch`.
    fn holds(&self, shard: u16, epoch: u64) -> bool {
        matches!(self.place(shard), Place::Local { epoch: e } if e == epoch)
    }
}

/// The single-node placement: every shard is here, under epoch 1, forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalPlacement;

impl Placement for LocalPlacement {
    fn place(&self, _shard: u16) -> Place {
        Place::Local { epoch: LOCAL_EPOCH }
    }

    fn holds(&self, _shard: u16, epoch: u64) -> bool {
        epoch == LOCAL_EPOCH
    }
}

/// The epoch of every shard under [`LocalPlacement`].
const LOCAL_EPOCH: u64 = 1;

/// A shard and the epoch a turn of one of its actors ran under: what its commit is fenced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) shard: u16,
    pub(crate) epoch: u64,
}

/// Resolves a place to the epoch to run under, or the failure a caller sees.
pub(crate) fn local_epoch(
    placement: &dyn Placement,
    shard: u16,
) -> Result<u64, crate::error::Failure> {
    match placement.place(shard) {
        Place::Local { epoch } => Ok(epoch),
        Place::Remote(_) => Err(crate::error::Failure::NotOwner(shard)),
        Place::Unavailable => Err(crate::error::Failure::Unavailable(shard)),
    }
}

/// How a call reaches the node that serves a shard another node serves (a cluster's
/// transport: NATS request/reply), and what can go wrong on the way.
#[cfg(feature = "cluster")]
pub(crate) trait Forward: Send + Sync {
    /// Sends `payload` (an encoded routed call, `wire.rs`) to whoever serves `shard` and
    /// waits at most `timeout` for its encoded answer.
    fn request(
        &self,
        shard: u16,
        payload: Vec<u8>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, Hop>>;

    /// How long one attempt of a call that is safe to retry waits before it is tried again
    /// (the node it reached may have died with it).
    fn attempt_timeout(&self) -> std::time::Duration;

    /// This node's id in the cluster.
    fn node(&self) -> &str;

    /// Publishes the encoded events of a committed turn of an actor of type `actor` in
    /// `shard`, for watchers on other nodes (fire and forget: nobody may listen).
    fn publish_events(&self, shard: u16, actor: &str, payload: Vec<u8>);

    /// The encoded events published from now on for actors of type `actor` in `shard`.
    fn events(
        &self,
        shard: u16,
        actor: &str,
    ) -> futures::future::BoxFuture<
        'static,
        Result<futures::stream::BoxStream<'static, Vec<u8>>, String>,
    >;
}

/// Why a routed call got no answer.
#[cfg(feature = "cluster")]
#[derive(Debug)]
pub(crate) enum Hop {
    /// Nobody serves the shard right now (it is moving): the call was not delivered.
    NoResponders,
    /// No answer in time: the call may or may not have run.
    TimedOut,
    /// The transport failed (the connection is down, ...).
    Failed(String),
    /// The transport refuses the call for good (too large): it was not sent.
    Refused(String),
}
