//! Calls to actors another node serves (feature `cluster`): what a handle sends when the
//! placement says its actor's shard is elsewhere, how the node that serves it runs it, and the
//! format of both. The transport is the cluster's ([`Forward`]: NATS request/reply on the
//! shard's subject, which only the shard's lease holder listens to); nothing here names NATS.
//!
//! A routed call is retried, until the caller's timeout, whenever its answer says it did not
//! run (nobody serves the shard right now, the node that answered no longer does, its turn
//! was fenced) and, for calls that are safe to run again, also when the outcome is unknown (no
//! answer in time). A call that may change its actor's state goes under an idempotency id of
//! its own, so that the node that runs it keeps its result with the turn: a retry that reaches
//! it, or the shard's next owner, is answered from that result instead of running it again.
//! Calls to shards this node serves never come here.

use std::any::Any;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::actor::Handlers;
use crate::codec::{ActorMeta, ActorRef, OutboxId, OutboxRecord, Payload};
use crate::commit::KeyWrite;
use crate::context::{Chain, ChainLink};
use crate::error::{DecodeError, Failure, Overload, StorageError};
use crate::handle::{Caller, Reply};
use crate::mailbox::{Answer, Body, KeyedCall, KeyedOutcome, ReplyFormat};
use crate::placement::{Fence, local_epoch};
use crate::shared::{Delivery, DoneFn, Shared};
use crate::store::Space;

/// How a call reaches the node that serves a shard, and what can go wrong on the way.
pub(crate) trait Forward: Send + Sync {
    /// Sends `payload` (an encoded [`RoutedCall`]) to whoever serves `shard` and waits at
    /// most `timeout` for the encoded [`RoutedReply`].
    fn request(
        &self,
        shard: u16,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, Hop>>;

    /// How long one attempt of a call that is safe to retry waits before it is tried again
    /// (the node it reached may have died with it).
    fn attempt_timeout(&self) -> Duration;
}

/// Why a routed call got no answer.
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

/// The format of a routed call and of its reply: their first byte. Enum variants are only
/// ever added at the end, and handlers travel by name.
const ROUTED_V1: u8 = 1;

/// A call to an actor, as it travels to the node that serves it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RoutedCall {
    actor: String,
    key: String,
    op: Op,
    /// The actors waiting on this call, innermost first (type, key): a cycle across nodes
    /// is refused as one on a node is.
    chain: Vec<(String, String)>,
    /// How long the caller still waits, in milliseconds.
    timeout_ms: u64,
}

/// What to do with the actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    /// Run `handler` with its postcard-encoded arguments.
    Call { handler: String, args: Vec<u8> },
    /// Run `handler` once under the idempotency id `id` (`request`: the hash of the
    /// request, as [`KeyedCall`]), keeping its result encoded as JSON or postcard.
    Keyed {
        handler: String,
        args: Vec<u8>,
        id: String,
        request: u64,
        json: bool,
    },
    /// Answer the actor's state record (its state and metadata).
    Read,
    /// Delete the actor.
    Delete,
    /// Deliver a durable message (an outbox entry of another shard, stored key `entry`):
    /// the target's turn keeps `idempotency`, so a repeat is not processed again.
    Deliver {
        payload: Payload,
        idempotency: String,
        entry: Vec<u8>,
        retry: bool,
    },
    /// Up to `limit` keys of the actor type with stored state in `shard`, after `after`.
    Keys {
        shard: u16,
        after: Option<String>,
        limit: u32,
    },
}

/// The answer to a [`RoutedCall`].
pub(crate) type RoutedReply = Result<Done, WireFailure>;

/// What a routed call did.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Done {
    /// The handler's result in postcard (`ok: false`: its error).
    Value { ok: bool, bytes: Vec<u8> },
    /// A [`KeyedOutcome`] with a result.
    Keyed {
        replayed: bool,
        ok: bool,
        body: Vec<u8>,
    },
    /// [`KeyedOutcome::Conflict`].
    Conflict,
    /// The actor's state record.
    State(Vec<u8>),
    /// Deleted.
    Deleted,
    /// The message was processed (or had been).
    Delivered,
    /// Keys with stored state.
    Keys(Vec<String>),
}

/// A [`Failure`] as it crosses nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireFailure {
    Timeout { ms: u64 },
    Overloaded(WireOverload),
    Panicked { handler: String },
    Cycle(String),
    Storage(String),
    Decode { key: String, reason: String },
    Invalid(String),
    NotRegistered,
    ShuttingDown,
    NotOwner(u16),
    Fenced(u16),
    Unavailable(u16),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireOverload {
    Mailbox,
    LiveActivations,
    Outbox,
}

impl WireFailure {
    fn of(failure: Failure) -> WireFailure {
        match failure {
            Failure::Timeout(d) => WireFailure::Timeout {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Overloaded(o) => WireFailure::Overloaded(match o {
                Overload::Mailbox => WireOverload::Mailbox,
                Overload::LiveActivations => WireOverload::LiveActivations,
                Overload::Outbox => WireOverload::Outbox,
            }),
            Failure::Panicked { handler, .. } => WireFailure::Panicked {
                handler: handler.into(),
            },
            Failure::Cycle(c) => WireFailure::Cycle(c),
            Failure::Storage(e) => WireFailure::Storage(e.to_string()),
            Failure::Decode(e) => WireFailure::Decode {
                key: e.key,
                reason: e.reason,
            },
            Failure::InvalidKey(e) => WireFailure::Invalid(e.to_string()),
            Failure::NotRegistered(_) => WireFailure::NotRegistered,
            Failure::ShuttingDown => WireFailure::ShuttingDown,
            Failure::Invalid(why) => WireFailure::Invalid(why),
            Failure::NotOwner(s) => WireFailure::NotOwner(s),
            Failure::Fenced(s) => WireFailure::Fenced(s),
            Failure::Unavailable(s) => WireFailure::Unavailable(s),
        }
    }

    /// The failure as a call to `A` reports it here.
    fn into_failure<A: Handlers>(self) -> Failure {
        self.into_failure_of(A::NAME, handler_name::<A>)
    }

    /// The failure as a call to the type named `actor` reports it here; `handler` names a
    /// handler by its name as sent.
    fn into_failure_of(
        self,
        actor: &'static str,
        handler: impl FnOnce(&str) -> &'static str,
    ) -> Failure {
        match self {
            WireFailure::Timeout { ms } => Failure::Timeout(Duration::from_millis(ms)),
            WireFailure::Overloaded(o) => Failure::Overloaded(match o {
                WireOverload::Mailbox => Overload::Mailbox,
                WireOverload::LiveActivations => Overload::LiveActivations,
                WireOverload::Outbox => Overload::Outbox,
            }),
            WireFailure::Panicked { handler: name } => Failure::Panicked {
                actor,
                handler: handler(&name),
            },
            WireFailure::Cycle(c) => Failure::Cycle(c),
            WireFailure::Storage(e) => Failure::Storage(StorageError::new(e)),
            WireFailure::Decode { key, reason } => {
                Failure::Decode(DecodeError { actor, key, reason })
            }
            WireFailure::Invalid(why) => Failure::Invalid(why),
            WireFailure::NotRegistered => Failure::NotRegistered(actor),
            WireFailure::ShuttingDown => Failure::ShuttingDown,
            WireFailure::NotOwner(s) => Failure::NotOwner(s),
            WireFailure::Fenced(s) => Failure::Fenced(s),
            WireFailure::Unavailable(s) => Failure::Unavailable(s),
        }
    }

    /// The call did not run where it went (or the node is stopping): another attempt, at the
    /// shard's current owner, may.
    fn not_run(&self) -> bool {
        matches!(
            self,
            WireFailure::NotOwner(_)
                | WireFailure::Unavailable(_)
                | WireFailure::Fenced(_)
                | WireFailure::ShuttingDown
        )
    }
}

/// `A`'s own name for its handler `name` (the names in failures are static).
fn handler_name<A: Handlers>(name: &str) -> &'static str {
    A::__handler_infos()
        .iter()
        .find(|h| h.name == name)
        .map_or("(unknown)", |h| h.name)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a vector fails only for types serde cannot describe (none here); the
    // empty message it would leave is refused by `decode`.
    postcard::to_extend(value, vec![ROUTED_V1]).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&ROUTED_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable routed message: {e}"))
        }
        Some((format, _)) => Err(format!(
            "a routed message of format {format}, which this build does not know"
        )),
        None => Err("an empty routed message".into()),
    }
}

/// A fresh idempotency id for one routed call (its retries share it). It starts with a
/// control character, as [`CallIds`](crate::handle::CallIds)' do: no caller-chosen key can.
fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::collections::hash_map::RandomState::new();
    let mut high = seed.build_hasher();
    high.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut low = seed.build_hasher();
    low.write_u64(u64::from(std::process::id()));
    format!("\u{1}routed:{:016x}{:016x}", high.finish(), low.finish())
}

/// The request hash of a call made under an id of its own: its handler and arguments.
fn request_hash(handler: &str, args: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(handler.len() + 1 + args.len());
    bytes.extend_from_slice(handler.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(args);
    xxh3_64(&bytes)
}

/// How a routed call's answer is turned back into what the local call would have answered.
enum Unwrap {
    /// As it comes.
    AsIs,
    /// A plain call that went under an id of its own: the handler's value.
    Value,
}

/// Runs `body` on the node that serves `caller`'s shard, retrying (bounded by the call's
/// timeout) while the shard moves; if the shard comes here meanwhile, runs it here.
pub(crate) async fn route<A: Handlers>(
    caller: &Caller<A>,
    forward: Arc<dyn Forward>,
    body: Body<A>,
    handler: &'static str,
) -> Reply {
    let shared = caller.shared().clone();
    let shard = caller.shard();
    let timeout = caller.call_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    // A call that may change the state goes under an id of its own, so that no retry runs it
    // twice; a read runs again as it would here.
    let (body, unwrap) = match body {
        Body::Call(message) => {
            let (name, mutates) = A::__describe(&message);
            if !A::__storable_reply(name) {
                return Err(Failure::Invalid(format!(
                    "`{name}` of `{}` returns a value that is not `Serialize` and \
                     `Deserialize`: it cannot be answered from the node that serves {caller:?}",
                    A::NAME
                )));
            }
            if mutates {
                let (_, args) = A::__encode_message(&message).map_err(unencodable::<A>)?;
                let keyed = KeyedCall {
                    message,
                    key: fresh_id(),
                    request: request_hash(name, &args),
                    format: ReplyFormat::Postcard,
                    answer: Answer::Value,
                };
                (Body::Keyed(Box::new(keyed)), Unwrap::Value)
            } else {
                (Body::Call(message), Unwrap::AsIs)
            }
        }
        other => (other, Unwrap::AsIs),
    };
    let op = op_of(&body)?;
    // Every call that reaches this point can run again without being applied twice (a call
    // that may change the state goes under its id) but a deletion, which could delete what
    // was written after the first attempt: only that one waits for its answer as long as the
    // caller does, and is not retried once sent.
    let retry_safe = !matches!(body, Body::Delete);
    let chain = chain_links(caller.chain());
    let mut backoff = Duration::from_millis(2);
    let mut last = Failure::Unavailable(shard);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(match last {
                Failure::Timeout(_) => Failure::Timeout(timeout),
                other => other,
            });
        }
        // Served here now? (It may have come here while the call was retried.)
        if local_epoch(&*shared.placement, shard).is_ok() {
            let value = caller.request_here(body, handler).await?;
            return unwrap_here::<A>(value, unwrap, handler, caller);
        }
        let attempt = if retry_safe {
            remaining.min(forward.attempt_timeout())
        } else {
            remaining
        };
        // The turn may take as long as the caller waits; only this attempt's wait for it is
        // shorter (a retry that finds it still running queues behind it, and is answered
        // from its result).
        let call = RoutedCall {
            actor: A::NAME.to_string(),
            key: caller.key().to_string(),
            op: op.clone(),
            chain: chain.clone(),
            timeout_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        };
        shared
            .metrics
            .routed_requests
            .fetch_add(1, Ordering::Relaxed);
        match forward.request(shard, encode(&call), attempt).await {
            Ok(bytes) => match decode::<RoutedReply>(&bytes) {
                Ok(Ok(done)) => return finish::<A>(done, body, unwrap, handler, caller),
                Ok(Err(failure)) if failure.not_run() => last = failure.into_failure::<A>(),
                // Its own wait ended (a call it made waited on a node that died, ...).
                Ok(Err(WireFailure::Timeout { .. })) if retry_safe => {
                    last = Failure::Timeout(timeout);
                }
                Ok(Err(failure)) => return Err(failure.into_failure::<A>()),
                Err(e) => return Err(Failure::Invalid(e)),
            },
            Err(Hop::NoResponders) => last = Failure::Unavailable(shard),
            Err(Hop::TimedOut) if retry_safe => last = Failure::Timeout(timeout),
            Err(Hop::TimedOut) => return Err(Failure::Timeout(timeout)),
            Err(Hop::Refused(why)) => return Err(Failure::Invalid(why)),
            Err(Hop::Failed(e)) => {
                tracing::debug!(actor = A::NAME, shard, error = %e, "a routed call failed; retrying");
                last = Failure::Unavailable(shard);
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // The runtime's timer: the caller may run on another executor.
        let pause = {
            let _runtime = shared.tokio.enter();
            tokio::time::sleep(backoff.min(remaining))
        };
        pause.await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

fn unencodable<A: Handlers>(e: String) -> Failure {
    Failure::Invalid(format!("cannot encode a call to `{}`: {e}", A::NAME))
}

/// The wire form of what `body` asks.
fn op_of<A: Handlers>(body: &Body<A>) -> Result<Op, Failure> {
    Ok(match body {
        Body::Call(message) => {
            let (handler, args) = A::__encode_message(message).map_err(unencodable::<A>)?;
            Op::Call {
                handler: handler.into(),
                args,
            }
        }
        Body::Keyed(call) => {
            let (handler, args) = A::__encode_message(&call.message).map_err(unencodable::<A>)?;
            Op::Keyed {
                handler: handler.into(),
                args,
                id: call.key.clone(),
                request: call.request,
                json: call.format != ReplyFormat::Postcard,
            }
        }
        Body::Read(_) => Op::Read,
        Body::Delete => Op::Delete,
        Body::Subscribe(_) | Body::Unsubscribe(_) | Body::DiscardTimer(_) => {
            return Err(Failure::Invalid(format!(
                "this request to `{}` cannot be routed to another node",
                A::NAME
            )));
        }
    })
}

/// A chain as it travels: (type, key), innermost first.
fn chain_links(chain: &Chain) -> Vec<(String, String)> {
    std::iter::successors(chain.as_deref(), |l| l.parent.as_deref())
        .map(|l| (l.actor.to_string(), l.key.to_string()))
        .collect()
}

/// A chain from its travelling form (links of types not registered here are left out: they
/// cannot be called from here, so they cannot close a cycle here).
fn chain_of(shared: &Shared, links: Vec<(String, String)>) -> Chain {
    links.into_iter().rev().fold(None, |parent, (actor, key)| {
        match shared.by_name.get_key_value(actor.as_str()) {
            Some((&actor, _)) => Some(Arc::new(ChainLink {
                actor,
                key: Arc::from(key),
                parent,
            })),
            None => parent,
        }
    })
}

/// What a call that ran here answers, for a caller that routed it.
fn unwrap_here<A: Handlers>(
    value: Box<dyn Any + Send>,
    unwrap: Unwrap,
    handler: &'static str,
    caller: &Caller<A>,
) -> Reply {
    match unwrap {
        Unwrap::AsIs => Ok(value),
        Unwrap::Value => match value.downcast::<KeyedOutcome>() {
            // Answered from the result kept when an earlier attempt ran.
            Ok(outcome) => match *outcome {
                KeyedOutcome::Fresh { ok, body } | KeyedOutcome::Replayed { ok, body } => {
                    decode_value::<A>(handler, ok, &body, caller)
                }
                KeyedOutcome::Conflict => Err(conflict::<A>(handler)),
            },
            Err(value) => Ok(value),
        },
    }
}

/// What a call that ran elsewhere answers here.
fn finish<A: Handlers>(
    done: Done,
    body: Body<A>,
    unwrap: Unwrap,
    handler: &'static str,
    caller: &Caller<A>,
) -> Reply {
    match (done, unwrap) {
        (Done::Value { ok, bytes }, _)
        | (
            Done::Keyed {
                ok, body: bytes, ..
            },
            Unwrap::Value,
        ) => decode_value::<A>(handler, ok, &bytes, caller),
        (Done::Keyed { replayed, ok, body }, Unwrap::AsIs) => Ok(Box::new(if replayed {
            KeyedOutcome::Replayed { ok, body }
        } else {
            KeyedOutcome::Fresh { ok, body }
        })),
        (Done::Conflict, Unwrap::AsIs) => Ok(Box::new(KeyedOutcome::Conflict)),
        (Done::Conflict, Unwrap::Value) => Err(conflict::<A>(handler)),
        (Done::State(record), _) => {
            let Body::Read(read) = body else {
                return Err(mismatched::<A>());
            };
            let (meta, state) =
                crate::version::decode_versioned::<A>(&record).map_err(|reason| {
                    Failure::Decode(DecodeError {
                        actor: A::NAME,
                        key: caller.key().to_string(),
                        reason,
                    })
                })?;
            Ok(read(&state, &meta))
        }
        (Done::Deleted, _) => Ok(Box::new(())),
        (Done::Delivered | Done::Keys(_), _) => Err(mismatched::<A>()),
    }
}

fn decode_value<A: Handlers>(
    handler: &'static str,
    ok: bool,
    bytes: &[u8],
    caller: &Caller<A>,
) -> Reply {
    match A::__decode_reply(handler, ok, bytes) {
        Some(Ok(value)) => Ok(value),
        Some(Err(reason)) => Err(Failure::Decode(DecodeError {
            actor: A::NAME,
            key: caller.key().to_string(),
            reason: format!("the result of `{handler}` from the node that ran it: {reason}"),
        })),
        None => Err(Failure::Invalid(format!(
            "the result of `{handler}` of `{}` cannot be read back",
            A::NAME
        ))),
    }
}

fn conflict<A: Handlers>(handler: &str) -> Failure {
    Failure::Invalid(format!(
        "a routed call to `{handler}` of `{}` found its id used by another request",
        A::NAME
    ))
}

fn mismatched<A: Handlers>() -> Failure {
    Failure::Invalid(format!(
        "the node that serves `{}` answered another kind of request",
        A::NAME
    ))
}

/// A [`DoneFn`] and the outcome it will hear (a turn that unwound without answering is
/// reported as a failure by the `Done` it was wrapped in).
fn done_channel() -> (DoneFn, impl Future<Output = Result<(), Failure>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done: DoneFn = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    let outcome = async move { rx.await.unwrap_or(Err(Failure::ShuttingDown)) };
    (done, outcome)
}

/// The idempotency key of outbox entry `id` delivered apart: a control character starts
/// it, as every key the runtime makes up (no caller-chosen key can take it).
fn outbox_key(id: OutboxId) -> String {
    format!("\u{1}outbox:{}:{}", id.shard, id.seq)
}

/// Delivers outbox entry `id` (of the sender's shard, served here) to its target in another
/// shard, here or on the node that serves it: the target's turn keeps the message's
/// idempotency key (the caller's, else one made of the entry's shard and sequence) in its own
/// shard instead of deleting the entry, which would be a write to another shard's log; once
/// the turn is durable, the entry is deleted here. If this node dies or loses the shard
/// before, the shard's next owner delivers it again and the target drops the repeat (for the
/// idempotency retention). `done` hears the outcome once the entry is deleted.
pub(crate) fn deliver_apart(
    shared: &Arc<Shared>,
    record: &OutboxRecord,
    id: OutboxId,
    retry: bool,
    done: DoneFn,
) -> Result<(), Failure> {
    let idempotency = record.idempotency.clone().unwrap_or_else(|| outbox_key(id));
    let target_shard = crate::codec::shard_of(&record.target.actor, &record.target.key);
    let delivered: BoxFuture<'static, Result<(), Failure>> =
        if local_epoch(&*shared.placement, target_shard).is_ok() {
            let delivery = Delivery::Outbox {
                key: id.key(),
                idempotency: Some(idempotency),
                verify: false,
                retry,
                cause: record.cause.clone(),
                apart: true,
            };
            let (turn_done, outcome) = done_channel();
            shared.deliver_to(&record.target, &record.payload, delivery, turn_done)?;
            Box::pin(outcome)
        } else {
            let Some(forward) = shared.forward.get().cloned() else {
                return Err(Failure::NotOwner(target_shard));
            };
            // The names in failures are static: the registered type's (a type not
            // registered here is parked by the node that serves it, as here).
            let actor = shared
                .by_name
                .get_key_value(record.target.actor.as_str())
                .map_or("(unregistered)", |(name, _)| *name);
            let timeout = shared.config.call_timeout;
            let call = RoutedCall {
                actor: record.target.actor.clone(),
                key: record.target.key.clone(),
                op: Op::Deliver {
                    payload: record.payload.clone(),
                    idempotency,
                    entry: id.key().to_vec(),
                    retry,
                },
                chain: Vec::new(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            shared
                .metrics
                .routed_requests
                .fetch_add(1, Ordering::Relaxed);
            let request = forward.request(target_shard, encode(&call), timeout);
            Box::pin(async move {
                match request.await {
                    Ok(bytes) => match decode::<RoutedReply>(&bytes) {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(failure)) => {
                            Err(failure.into_failure_of(actor, |_| "(delivered message)"))
                        }
                        Err(e) => Err(Failure::Invalid(e)),
                    },
                    // The dispatcher tries again later without counting an attempt: the
                    // target's shard is moving, or its node died with the message (a
                    // repeat is dropped there).
                    Err(Hop::NoResponders | Hop::TimedOut | Hop::Failed(_)) => {
                        Err(Failure::Unavailable(target_shard))
                    }
                    Err(Hop::Refused(why)) => Err(Failure::Invalid(why)),
                }
            })
        };
    let shared = shared.clone();
    shared.tokio.clone().spawn(async move {
        let outcome = delivered.await;
        if outcome.is_ok() {
            delete_entry(&shared, id).await;
        }
        done(outcome);
    });
    Ok(())
}

/// Deletes outbox entry `id`, delivered apart, while its shard is still served here.
async fn delete_entry(shared: &Shared, id: OutboxId) {
    let Ok(epoch) = local_epoch(&*shared.placement, id.shard) else {
        return;
    };
    let write = KeyWrite {
        space: Space::Outbox,
        key: id.key(),
        value: None,
    };
    let fence = Fence {
        shard: id.shard,
        epoch,
    };
    let ticket = shared
        .committer
        .submit(vec![write], None, Some(fence))
        .await;
    if let Err(e) = ticket.wait().await {
        // Still stored: delivered again later, and dropped by its target as a repeat.
        tracing::debug!(shard = id.shard, seq = id.seq, error = %e, "cannot delete a delivered outbox entry");
    }
}

/// The face of one registered type for calls routed to this node.
pub(crate) trait ServeRouted: Send + Sync {
    fn serve(&self, shared: &Arc<Shared>, call: RoutedCall) -> BoxFuture<'static, RoutedReply>;
}

/// [`ServeRouted`] of actor type `A`.
pub(crate) struct RoutedFace<A>(PhantomData<fn() -> A>);

impl<A> RoutedFace<A> {
    pub(crate) fn new() -> Self {
        RoutedFace(PhantomData)
    }
}

impl<A: Handlers> ServeRouted for RoutedFace<A> {
    fn serve(&self, shared: &Arc<Shared>, call: RoutedCall) -> BoxFuture<'static, RoutedReply> {
        if let Op::Keys {
            shard,
            after,
            limit,
        } = call.op
        {
            return Box::pin(keys_here::<A>(shared.clone(), shard, after, limit));
        }
        let chain = chain_of(shared, call.chain);
        let caller = Caller::<A>::new(shared, &call.key, chain)
            .routed()
            .with_timeout(Duration::from_millis(call.timeout_ms));
        let op = call.op;
        Box::pin(async move {
            let failed = WireFailure::of;
            let message = |handler: &str, args: &[u8]| {
                A::__decode_message(handler, args).map_err(|e| {
                    WireFailure::Invalid(format!("a routed call to `{}`: {e}", A::NAME))
                })
            };
            match op {
                Op::Call { handler, args } => {
                    let message = message(&handler, &args)?;
                    let (name, _) = A::__describe(&message);
                    let value = caller
                        .request(Body::Call(message), name)
                        .await
                        .map_err(failed)?;
                    let (ok, bytes) = ReplyFormat::Postcard
                        .encode::<A>(name, &*value)
                        .map_err(WireFailure::Invalid)?;
                    Ok(Done::Value { ok, bytes })
                }
                Op::Keyed {
                    handler,
                    args,
                    id,
                    request,
                    json,
                } => {
                    let message = message(&handler, &args)?;
                    let (name, _) = A::__describe(&message);
                    let format = reply_format(json)?;
                    let keyed = KeyedCall {
                        message,
                        key: id,
                        request,
                        format,
                        answer: Answer::Encoded,
                    };
                    let value = caller
                        .request(Body::Keyed(Box::new(keyed)), name)
                        .await
                        .map_err(failed)?;
                    match value.downcast::<KeyedOutcome>().map(|o| *o) {
                        Ok(KeyedOutcome::Fresh { ok, body }) => Ok(Done::Keyed {
                            replayed: false,
                            ok,
                            body,
                        }),
                        Ok(KeyedOutcome::Replayed { ok, body }) => Ok(Done::Keyed {
                            replayed: true,
                            ok,
                            body,
                        }),
                        Ok(KeyedOutcome::Conflict) => Ok(Done::Conflict),
                        Err(_) => Err(WireFailure::Invalid(
                            "unexpected reply to an idempotent call".into(),
                        )),
                    }
                }
                Op::Read => {
                    let read = Body::Read(Box::new(|state: &A, meta: &ActorMeta| {
                        Box::new(crate::codec::encode_record(A::VERSION, meta, state))
                            as Box<dyn Any + Send>
                    }));
                    let value = caller.request(read, "read").await.map_err(failed)?;
                    match value.downcast::<Result<Vec<u8>, String>>().map(|r| *r) {
                        Ok(Ok(record)) => Ok(Done::State(record)),
                        Ok(Err(e)) => Err(WireFailure::Invalid(format!(
                            "cannot encode the state of {caller:?}: {e}"
                        ))),
                        Err(_) => Err(WireFailure::Invalid("unexpected reply to a read".into())),
                    }
                }
                Op::Delete => {
                    caller
                        .request(Body::Delete, "delete")
                        .await
                        .map_err(failed)?;
                    Ok(Done::Deleted)
                }
                Op::Keys { .. } => Err(WireFailure::Invalid("keys are listed apart".into())),
                Op::Deliver {
                    payload,
                    idempotency,
                    entry,
                    retry,
                } => {
                    let delivery = Delivery::Outbox {
                        key: entry.into(),
                        idempotency: Some(idempotency),
                        verify: false,
                        retry,
                        cause: Default::default(),
                        apart: true,
                    };
                    let target = ActorRef {
                        actor: A::NAME.to_string(),
                        key: caller.key().to_string(),
                    };
                    let (done, outcome) = done_channel();
                    let shared = caller.shared().clone();
                    shared
                        .deliver_to(&target, &payload, delivery, done)
                        .map_err(failed)?;
                    outcome.await.map_err(failed)?;
                    Ok(Done::Delivered)
                }
            }
        })
    }
}

/// Up to `limit` keys of `A` with stored state in `shard`, which this node serves, after the
/// key `after`.
async fn keys_here<A: Handlers>(
    shared: Arc<Shared>,
    shard: u16,
    after: Option<String>,
    limit: u32,
) -> RoutedReply {
    local_epoch(&*shared.placement, shard).map_err(WireFailure::of)?;
    let after = match after {
        Some(key) => {
            crate::codec::validate_key(&key).map_err(|e| WireFailure::Invalid(e.to_string()))?;
            Some(crate::codec::state_key(A::NAME, &key))
        }
        None => None,
    };
    let limit = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .min(MAX_KEYS_PER_REQUEST);
    let found = shared
        .with_store("key scan", move |store| {
            store.state_keys(A::NAME, shard..shard + 1, after.as_deref(), limit)
        })
        .await
        .map_err(WireFailure::of)?;
    Ok(Done::Keys(
        found
            .iter()
            .filter_map(|k| crate::codec::key_of_state_key(k, A::NAME))
            .map(str::to_string)
            .collect(),
    ))
}

/// Most keys one routed listing answers (keys are up to 1 KiB: the answer stays under
/// NATS' default 1 MiB payload).
const MAX_KEYS_PER_REQUEST: usize = 512;

/// Up to `limit` keys of `A` with stored state in `shard`, which another node serves, after
/// the key `after`: asked of that node, retried while the shard moves (bounded by the call
/// timeout). Fewer than `limit` if the shard has no more.
pub(crate) async fn keys_elsewhere<A: Handlers>(
    shared: &Arc<Shared>,
    forward: Arc<dyn Forward>,
    shard: u16,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, Failure> {
    let timeout = shared.config.call_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut keys: Vec<String> = Vec::new();
    let mut after = after.map(str::to_string);
    let mut backoff = Duration::from_millis(2);
    while keys.len() < limit {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(Failure::Timeout(timeout));
        }
        let want = (limit - keys.len()).min(MAX_KEYS_PER_REQUEST);
        let call = RoutedCall {
            actor: A::NAME.to_string(),
            key: String::new(),
            op: Op::Keys {
                shard,
                after: after.clone(),
                limit: u32::try_from(want).unwrap_or(u32::MAX),
            },
            chain: Vec::new(),
            timeout_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        };
        shared
            .metrics
            .routed_requests
            .fetch_add(1, Ordering::Relaxed);
        let attempt = remaining.min(forward.attempt_timeout());
        let failure = match forward.request(shard, encode(&call), attempt).await {
            Ok(bytes) => match decode::<RoutedReply>(&bytes) {
                Ok(Ok(Done::Keys(page))) => {
                    let full = page.len() >= want;
                    after = page.last().cloned().or(after);
                    keys.extend(page);
                    if !full {
                        break;
                    }
                    continue;
                }
                Ok(Ok(_)) => return Err(mismatched::<A>()),
                Ok(Err(failure)) if failure.not_run() => failure.into_failure::<A>(),
                Ok(Err(failure)) => return Err(failure.into_failure::<A>()),
                Err(e) => return Err(Failure::Invalid(e)),
            },
            Err(Hop::Refused(why)) => return Err(Failure::Invalid(why)),
            Err(_) => Failure::Unavailable(shard),
        };
        tracing::debug!(shard, error = %failure, "listing a shard's keys elsewhere; retrying");
        let pause = {
            let _runtime = shared.tokio.enter();
            tokio::time::sleep(backoff.min(remaining))
        };
        pause.await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
    Ok(keys)
}

/// The format a routed idempotent call keeps its result in.
fn reply_format(json: bool) -> Result<ReplyFormat, WireFailure> {
    if !json {
        return Ok(ReplyFormat::Postcard);
    }
    #[cfg(feature = "http")]
    return Ok(ReplyFormat::Json);
    #[cfg(not(feature = "http"))]
    Err(WireFailure::Invalid(
        "a JSON call was routed to a node built without the `http` feature".into(),
    ))
}

/// Runs a call another node routed here (an encoded [`RoutedCall`]) and encodes its answer.
pub(crate) async fn serve(shared: &Arc<Shared>, payload: &[u8]) -> Vec<u8> {
    let reply: RoutedReply = match decode::<RoutedCall>(payload) {
        Err(e) => Err(WireFailure::Invalid(e)),
        Ok(call) => match shared.by_name(&call.actor).map(|r| r.routed.clone()) {
            None => Err(WireFailure::Invalid(format!(
                "actor type `{}` is not registered on the node that serves it",
                call.actor
            ))),
            Some(face) => {
                let reply = face.serve(shared, call).await;
                if reply.is_ok() {
                    shared.metrics.routed_served.fetch_add(1, Ordering::Relaxed);
                }
                reply
            }
        },
    };
    encode(&reply)
}

/// A reply saying the call could not be answered with what it produced (too large for the
/// transport, ...), so the caller is not left waiting.
pub(crate) fn refusal(why: String) -> Vec<u8> {
    encode::<RoutedReply>(&Err(WireFailure::Invalid(why)))
}

/// The reply of a node whose runtime has stopped: the caller tries the shard's next owner.
pub(crate) fn stopped() -> Vec<u8> {
    encode::<RoutedReply>(&Err(WireFailure::ShuttingDown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_calls_and_replies_round_trip_and_refuse_other_formats() {
        let call = RoutedCall {
            actor: "Counter".into(),
            key: "c-1".into(),
            op: Op::Keyed {
                handler: "add".into(),
                args: vec![5],
                id: fresh_id(),
                request: 7,
                json: false,
            },
            chain: vec![("Order".into(), "o-1".into())],
            timeout_ms: 1500,
        };
        let bytes = encode(&call);
        assert_eq!(bytes[0], ROUTED_V1);
        let back: RoutedCall = decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{call:?}"));
        let mut newer = bytes.clone();
        newer[0] = ROUTED_V1 + 1;
        assert!(
            decode::<RoutedCall>(&newer)
                .unwrap_err()
                .contains("format 2")
        );
        assert!(decode::<RoutedCall>(&[]).is_err());
        let reply: RoutedReply = Err(WireFailure::Fenced(3));
        let back: RoutedReply = decode(&encode(&reply)).unwrap();
        assert!(matches!(back, Err(WireFailure::Fenced(3))));
    }

    #[test]
    fn fresh_ids_differ_and_no_caller_key_can_take_one() {
        let (a, b) = (fresh_id(), fresh_id());
        assert_ne!(a, b);
        assert!(crate::codec::validate_idempotency_key(&a).is_err());
    }

    #[test]
    fn only_failures_of_calls_that_did_not_run_are_retried() {
        assert!(WireFailure::NotOwner(1).not_run());
        assert!(WireFailure::Fenced(1).not_run());
        assert!(WireFailure::Unavailable(1).not_run());
        assert!(!WireFailure::Timeout { ms: 5 }.not_run());
        assert!(!WireFailure::Storage("x".into()).not_run());
        assert!(!WireFailure::Overloaded(WireOverload::Mailbox).not_run());
    }
}
