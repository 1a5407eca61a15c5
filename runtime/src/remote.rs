//! A node's side of calls other nodes route to it (feature `cluster`): each registered type's
//! face that runs them ([`RoutedFace`]), durable messages delivered to another shard
//! ([`deliver_apart`]), and key listings of shards served elsewhere ([`keys_elsewhere`]).
//! The transport is the cluster's (`placement::Forward`: NATS request/reply on the shard's
//! subject, which only the shard's lease holder listens to); the format is `wire.rs`'s.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::actor::Handlers;
use crate::codec::{ActorMeta, ActorRef, OutboxId, OutboxRecord};
use crate::commit::KeyWrite;
use crate::context::{Chain, ChainLink};
use crate::directory::Registry;
use crate::error::Failure;
use crate::handle::{Caller, failure_of, mismatched};
use crate::mailbox::{Answer, Body, KeyedCall, KeyedOutcome, ReplyFormat};
use crate::placement::{Fence, Forward, Hop, local_epoch};
use crate::shared::{Delivery, DoneFn, Shared, done_channel};
use crate::store::Space;
use crate::wire::{Done, Op, Published, RoutedCall, RoutedReply, WireFailure, decode, encode};

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
/// idempotency retention). `done` hears the outcome as soon as it is known (the deletion
/// follows).
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
            // One attempt's wait, as a routed call's: a target node that died with the
            // message is tried again then (the target drops a repeat), not a call timeout later.
            let attempt = forward.attempt_timeout().min(timeout);
            let request = forward.request(target_shard, encode(&call), attempt);
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
        let processed = outcome.is_ok();
        // The next message to the target need not wait for the deletion: the target drops
        // this one if it comes again.
        done(outcome);
        if processed {
            delete_entry(&shared, id).await;
        }
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
                        .encode::<A>(caller.shared(), name, &*value)
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
                    // One name for the type the turn boxes and the type unboxed here.
                    type Encoded = Result<Vec<u8>, String>;
                    let read = Body::Read(Box::new(|state: &A, meta: &ActorMeta| {
                        let record: Encoded = crate::codec::encode_record(A::VERSION, meta, state);
                        Box::new(record) as Box<dyn Any + Send>
                    }));
                    let value = caller.request(read, "read").await.map_err(failed)?;
                    match value.downcast::<Encoded>().map(|r| *r) {
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
                Ok(Err(failure)) if failure.not_run() => failure_of::<A>(failure),
                Ok(Err(failure)) => return Err(failure_of::<A>(failure)),
                Err(e) => return Err(Failure::Invalid(e)),
            },
            Err(Hop::Refused(why)) => return Err(Failure::Invalid(why)),
            Err(_) => Failure::Unavailable(shard),
        };
        tracing::debug!(shard, error = %failure, "listing a shard's keys elsewhere; retrying");
        shared.sleep(backoff.min(remaining)).await;
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

/// Runs a call another node routed here (an encoded [`RoutedCall`]) and encodes its answer,
/// or a refusal if that is longer than `max` bytes.
pub(crate) async fn serve(shared: &Arc<Shared>, payload: &[u8], max: usize) -> Vec<u8> {
    let face = |name: &str| {
        let routed = shared.by_name(name)?.routed.clone();
        routed.downcast_ref::<Arc<dyn ServeRouted>>().cloned()
    };
    let reply: RoutedReply = match decode::<RoutedCall>(payload) {
        Err(e) => Err(WireFailure::Invalid(e)),
        Ok(call) => match face(&call.actor) {
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
    let answer = encode(&reply);
    if answer.len() > max {
        return crate::wire::refusal(format!(
            "the answer is {} bytes, more than NATS carries ({max} bytes)",
            answer.len()
        ));
    }
    answer
}

/// Publishes the events of a committed turn of `A(key)` for watchers on other nodes.
pub(crate) fn publish_events<A: Handlers>(forward: &dyn Forward, key: &str, events: &[A::Event]) {
    let events = match postcard::to_stdvec(events) {
        Ok(events) => events,
        Err(e) => {
            tracing::debug!(actor = A::NAME, key, error = %e, "cannot encode events for other nodes");
            return;
        }
    };
    let published = Published {
        node: forward.node().to_string(),
        key: key.to_string(),
        events,
    };
    let shard = crate::codec::shard_of(A::NAME, key);
    forward.publish_events(shard, A::NAME, encode(&published));
}

/// Hands the events of `A(key)` published on other nodes to its watchers here, until it has
/// none (checked at least every second): one listener per watched actor.
pub(crate) fn follow_events<A: Handlers>(
    shared: &Arc<Shared>,
    forward: Arc<dyn Forward>,
    key: &str,
) {
    let followed = (A::NAME, key.to_string());
    if !shared.followed.lock().insert(followed.clone()) {
        return;
    }
    let shard = crate::codec::shard_of(A::NAME, key);
    let weak = Arc::downgrade(shared);
    let key = key.to_string();
    shared.tokio.spawn(async move {
        let mut events = match forward.events(shard, A::NAME).await {
            Ok(events) => Some(events),
            Err(e) => {
                tracing::warn!(actor = A::NAME, key, error = %e, "cannot follow events published on other nodes");
                None
            }
        };
        let node = forward.node().to_string();
        while let Some(stream) = events.as_mut() {
            let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let Some(registry) = Registry::<A>::of(&shared) else {
                break;
            };
            if !registry.is_watched(&key) {
                // Nobody watches any more: stop, unless a watcher came meanwhile.
                shared.followed.lock().remove(&followed);
                if registry.is_watched(&key) && shared.followed.lock().insert(followed.clone()) {
                    continue;
                }
                return;
            }
            match next {
                Ok(Some(bytes)) => {
                    let Ok(published) = decode::<Published>(&bytes) else {
                        continue;
                    };
                    if published.node == node || published.key != key {
                        continue;
                    }
                    match postcard::from_bytes::<Vec<A::Event>>(&published.events) {
                        Ok(events) => registry.publish(&key, events),
                        Err(e) => tracing::debug!(actor = A::NAME, key, error = %e, "undecodable events from another node"),
                    }
                }
                Ok(None) => events = None,
                Err(_elapsed) => {}
            }
        }
        if let Some(shared) = weak.upgrade() {
            shared.followed.lock().remove(&followed);
        }
    });
}
