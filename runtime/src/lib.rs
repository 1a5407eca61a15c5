//! # Gears: virtual actors with durable state, embedded in your application
//!
//! An `InventoryItem("sku-1")` or an `Order("o-42")` always exists: the first call activates
//! it, its state is loaded from an embedded LSM store (fjall), it handles one message at a
//! time (so handlers need no locks), every change it makes is durable before anyone hears of
//! it, and when it has been idle for a while it is passivated and costs nothing but disk.
//!
//! ```
//! use gears::prelude::*;
//!
//! #[derive(Actor, Default, Serialize, Deserialize)]
//! #[actor(name = "counter")]
//! pub struct Counter {
//!     value: u64,
//! }
//!
//! #[handlers]
//! impl Counter {
//!     /// Adds `n` and returns the new value; committed before the reply leaves.
//!     pub async fn add(&mut self, n: u64) -> u64 {
//!         self.value += n;
//!         self.value
//!     }
//!
//!     /// Reads the value; never written back.
//!     pub async fn get(&self) -> u64 {
//!         self.value
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let rt = Runtime::builder().path(dir.path()).register::<Counter>().open().await?;
//! rt.get::<Counter>("visits").add(2).await?;
//! assert_eq!(rt.get::<Counter>("visits").get().await?, 2);
//! rt.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Where each part lives
//! ARCHITECTURE.md (at the repository's root) has the flow of a call, the layers and the
//! invariants; in short:
//! - [Macros](crate::Actor): `#[derive(Actor)]` marks the state, `#[handlers]` turns an
//!   `impl` block into handlers, a typed handle (`<Type>Handle`) and a serializable message
//!   type (`<Type>Message`); the traits are in `actor.rs`, state versions in `version.rs`.
//! - [The runtime](crate::Runtime) (`runtime.rs`): typed handles, sends, reads, stats,
//!   shutdown; [`Builder`] (`builder.rs`) opens it and wires the parts together.
//! - What the parts share (`shared.rs`): configuration, store, committer, registered types,
//!   the live cap; admission of calls (`admission.rs`); the outbox's counters (`backlog.rs`).
//! - [Placement](crate::Placement) (`placement.rs`): which node serves each of the 256
//!   shards, under which ownership epoch; every call asks, every commit is fenced by it.
//! - Mailboxes (`mailbox.rs`) and the directory (`directory.rs`): at most one live
//!   activation per (type, key); an idle activation holds no task; passivation by idle
//!   timeout and a live cap (sampled LRU).
//! - Turns (`activation.rs`): one message at a time per key, panics contained, timeouts,
//!   one rollback path; a call to an idle actor runs its turn in the caller's task until the
//!   turn waits.
//! - Group commit and the output gate (`commit.rs`): one batch and one journal sync for
//!   every write that arrived meanwhile, then a settler thread releases the batch's replies
//!   in order; replies wait until their state is durable.
//! - Storage (`store.rs`: the `StateStore` trait; `store/fjall.rs`, the only module naming
//!   fjall) and byte formats (`codec.rs`): shard-prefixed keys, versioned records; store
//!   reads for turns on the loader threads (`loader.rs`).
//! - [`Context`] (`context.rs`): the key, calls to other actors, cycle detection, sends,
//!   timers, events, subscriptions, deletion.
//! - The outbox (`outbox.rs`): exactly-once sends and subscription events, removed in the
//!   receiver's batch; the dispatcher.
//! - Durable timers (`timers.rs`): each shard's timers one range ordered by due time,
//!   scanned by the host.
//! - [Dead letters](crate::Runtime::dead_letters) (`dead_letters.rs`): one failure policy
//!   for sends and timers (backoff, then parked), the list of parked messages; their retry
//!   and durable discard (`runtime/parked.rs`); `panics.rs` keeps a retried delivery's
//!   panics from printing again.
//! - Idempotency (`kept.rs`): the outcomes of idempotent requests, kept under their own keys
//!   for a retention time and removed by the host once expired.
//! - Watching (`watch.rs`): [`Watch`], a bounded stream of an actor's committed events.
//! - Services (`shard.rs`, the only module naming ractor): the host, which sweeps idle
//!   activations, dispatches the outbox and fires timers.
//! - [Testing](crate::testing) (`testing.rs`): a runtime on a temporary store for a test,
//!   and contexts for handlers called directly on a plain value, recording what the turn
//!   asked for (sends, timers, events, subscriptions, deletion) without applying it.
//! - Errors (`error.rs`): [`CallError`] for calls, [`Error`] for the runtime.
//! - [Stopping on SIGTERM or SIGINT](crate::shutdown_signal) (`signal.rs`): a future for
//!   an embedding application's `main`, then an orderly shutdown.
//! - The HTTP ingress (`http.rs`, feature `http`): every registered actor over HTTP with
//!   JSON; its per-type JSON face (`json.rs`) decodes arguments and encodes results with
//!   the format-neutral code `#[handlers]` generates (the same with or without the feature:
//!   it is additive, see `actor.rs`' `ReplyProbe`), and stores idempotent results with the
//!   turn. The feature adds modules and their dependencies only; nothing a user implements
//!   changes with it.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

// The README's examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

mod activation;
mod actor;
mod admission;
mod backlog;
mod builder;
mod clock;
/// Scale-out over NATS JetStream (feature `cluster`): nodes share the shards by leases,
/// replicate every commit through a per-shard log, and route calls and messages to the node
/// that serves their actor ([`Builder::cluster`]).
#[cfg(feature = "cluster")]
pub mod cluster;
mod codec;
mod commit;
mod context;
mod dead_letters;
mod directory;
mod error;
mod frontier;
mod handle;
/// The HTTP ingress: call any registered actor over HTTP (feature `http`).
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
mod json;
mod kept;
mod loader;
mod mailbox;
mod metrics;
mod outbox;
mod panics;
mod placement;
#[cfg(feature = "cluster")]
mod remote;
mod runtime;
mod schema;
mod shard;
mod shared;
mod signal;
mod store;
pub mod testing;
mod timers;
mod trace;
mod version;
mod watch;
#[cfg(feature = "cluster")]
mod wire;

// Decoders of stored and received bytes against truncated, flipped and random input.
#[cfg(test)]
mod codec_fuzz;

pub use actor::{Actor, HandlerInfo, Handlers};
pub use builder::Builder;
pub use codec::{MAX_IDEMPOTENCY_KEY_LEN, MAX_KEY_LEN, SHARDS};
pub use context::{Context, MAX_TIMER_NAME_LEN, Timer, TimerInfo};
pub use dead_letters::{
    DeadLetter, DeadLetterId, DeadLetterKind, DeadLetterPage, InvalidDeadLetterId, MAX_LISTED,
};
pub use error::{CallError, DecodeError, Error, KeyError, Overload, StorageError};
pub use gears_macros::{Actor, StateVersion, handlers};
pub use metrics::Stats;
pub use placement::{LocalPlacement, Place, Placement};
pub use runtime::Runtime;
pub use signal::{Signal, shutdown_signal};
pub use store::Durability;
pub use version::StateVersion;
pub use watch::{Watch, Watched};

/// Everything needed to define and call actors.
pub mod prelude {
    pub use crate::{
        Actor, CallError, Context, Durability, Runtime, StateVersion, Timer, Watched, handlers,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Used by the code the macros generate, and by Gears' own tests. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{
        DecodeProbe, Deliver, DeserializeReply, MessageArgument, OpaqueDecode, OpaqueReply, Output,
        ReplyEncoder, ReplyProbe, SerializeReply, assert_message_argument,
    };
    pub use crate::codec::{
        decode_arguments, decode_state_bytes, encode_arguments, shard_of, split_variant, state_key,
    };
    pub use crate::commit::{CommitStage, FaultHook};
    pub use crate::context::{TimerSet, TurnSend};
    pub use crate::error::Failure;
    pub use crate::handle::OutsideSend;
    pub use crate::handle::{Caller, Reply, finish, finish_result};
    pub use crate::schema::{JsonSchemaProbe, OpaqueSchemaProbe, Schema, SchemaProbe, SchemaSink};
    pub use crate::store::UpgradeHook;
    pub use crate::version::{decode_or_migrate, decode_version};
    pub use futures::future::BoxFuture;
    pub use serde;

    /// Encodes a state record as the store holds it, in the state's own version (for golden
    /// fixtures).
    pub fn encode_state<S: crate::StateVersion + serde::Serialize>(state: &S) -> Vec<u8> {
        crate::codec::encode_state(S::VERSION, state).unwrap_or_default()
    }

    /// Decodes a state record as the store holds it, migrating an older version as a load
    /// does (for golden fixtures).
    pub fn decode_state<A: crate::Actor>(bytes: &[u8]) -> Result<A, String> {
        crate::version::decode_versioned(bytes).map(|(_, state)| state)
    }
}
