//! Turns: what drains one activation's queue, one message at a time.
//!
//! Turns run only while the queue has messages: a call that finds its actor idle runs its
//! own turn in its own task until the turn waits for something, and the rest continues in a
//! task of its own ([`start_here`]); durable deliveries start that task at once ([`start`]).
//! For each message it runs the handler
//! on the state (panics caught, bounded by the call timeout), applies what the turn asked of
//! its [`Context`] (sends, timers, events, subscriptions, deletion) and, for a durable
//! message, its removal from the outbox or timers; hands all of it to the commit pipeline as
//! one atomic request without waiting for it; and gates the reply, the new outbox entries
//! and the events on the actor's latest write.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tracing::Instrument;
use xxhash_rust::xxh3::xxh3_128;

use crate::actor::Handlers;
use crate::codec::{
    ActorMeta, ActorRef, KeptResult, MAX_GROUP, OutboxId, OutboxRecord, OutboxValue, Payload,
    Subscriber, TimerEntry, TimerMessage, decode_envelope, encode_envelope, expiry_key, kept_key,
    kept_prefix, outbox_messages, timer_key,
};
use crate::commit::{KeyWrite, Ticket, release_after};
use crate::context::{Chain, Context, Effects, SubscriptionOp, TimerOp, TurnType};
use crate::directory::{Activation, Idle, Loaded, PendingKept, Registry, Slot};
use crate::error::{DecodeError, Failure, StorageError};
use crate::handle::{CallIds, Reply};
use crate::mailbox::{
    Answer, Body, Envelope, KeyedCall, KeyedOutcome, Mailbox, Refused, Replier, ReplyFormat,
};
use crate::placement::{Fence, local_epoch};
use crate::shared::{AnyRegistry, Delivery, DiscardTimer, DoneFn, Eviction, Shared};
use crate::store::Space;
use crate::trace::Cause;

/// A result an idempotent request keeps, decided by its turn.
struct NewKept {
    idempotency: String,
    result: KeptResult,
}

impl<A: Handlers> AnyRegistry for Registry<A> {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn deliver(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        payload: &Payload,
        delivery: Delivery,
        done: DoneFn,
    ) -> Result<(), Failure> {
        crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
        // Not served here: retried later (the dispatcher counts it as busy).
        crate::placement::local_epoch(&*shared.placement, crate::codec::shard_of(A::NAME, key))?;
        let undecodable = |reason: String| {
            Failure::Decode(DecodeError {
                actor: A::NAME,
                key: key.to_string(),
                reason: format!("undeliverable message: {reason}"),
            })
        };
        let body = match payload {
            Payload::Message { handler, args } => {
                Body::Call(A::__decode_message(handler, args).map_err(undecodable)?)
            }
            // An event is the one argument of its handler.
            Payload::Event { handler, event } if A::__event_handler(handler).is_some() => {
                Body::Call(A::__decode_message(handler, event).map_err(undecodable)?)
            }
            Payload::Event { handler, .. } => {
                return Err(undecodable(format!(
                    "`{}` has no handler named `{handler}` taking one argument",
                    A::NAME
                )));
            }
            Payload::Positional(bytes) => {
                Body::Call(A::__decode_positional(bytes).map_err(undecodable)?)
            }
            Payload::Subscribe(subscriber) => Body::Subscribe(Box::new(subscriber.clone())),
            Payload::Unsubscribe(subscriber) => Body::Unsubscribe(Box::new(subscriber.clone())),
        };
        enqueue_durable(self, shared, key, body, Some(delivery), done)
    }

    fn discard_timer(
        &self,
        shared: &Arc<Shared>,
        key: &str,
        timer: DiscardTimer,
        done: DoneFn,
    ) -> Result<(), Failure> {
        crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
        local_epoch(&*shared.placement, crate::codec::shard_of(A::NAME, key))?;
        let body = Body::DiscardTimer(Box::new(timer));
        enqueue_durable(self, shared, key, body, None, done)
    }

    fn sweep(&self, shared: &Shared) -> usize {
        self.sweep_idle(shared)
    }

    fn evict_one(&self, shared: &Shared) -> Eviction {
        self.evict_idle(shared)
    }
}

/// Queues a turn for the runtime's own services (a durable message's delivery, a dead
/// letter's discard) on `key`'s activation and starts it in a task of its own; `done` hears
/// when it is over. On `Err` the turn was not queued and `done` is never called.
fn enqueue_durable<A: Handlers>(
    registry: &Registry<A>,
    shared: &Arc<Shared>,
    key: &str,
    body: Body<A>,
    delivery: Option<Delivery>,
    done: DoneFn,
) -> Result<(), Failure> {
    shared.admission.admit(false)?;
    let envelope = Envelope {
        body,
        chain: None,
        reply: Some(Replier::done(done)),
        delivery: delivery.map(Box::new),
        span: None,
    };
    registry
        .enqueue(shared, key, envelope)
        .map(|idle| {
            if let Some(idle) = idle {
                start(shared, idle);
            }
        })
        .map_err(|(failure, envelope)| {
            shared.admission.turn_finished();
            // Not queued: the caller hears of it from this `Err` alone.
            if let Some(Replier::Done(mut done)) = envelope.reply {
                done.0.take();
            }
            failure
        })
}

impl<A: Handlers> Mailbox<A> for Registry<A> {
    fn post(
        &self,
        shared: &Arc<Shared>,
        key: &Arc<str>,
        envelope: Envelope<A>,
    ) -> Result<(), Refused<A>> {
        if let Some(idle) = self.enqueue(shared, key, envelope)? {
            start_here(shared, idle);
        }
        Ok(())
    }
}

/// Releases what a turn of `A(key)` produced, once its batch settled: outbox entries to
/// the dispatcher, events to watchers, the earliest new timer to the timer service. If
/// the batch failed, its outbox entries are checked ([`Shared::recover_unsure`]).
fn release<A: Handlers>(
    shared: &Arc<Shared>,
    key: &str,
    durable: bool,
    outbox: Vec<(OutboxId, OutboxRecord)>,
    events: Vec<A::Event>,
    timer_due: Option<u64>,
) {
    if !durable {
        shared.recover_unsure(outbox);
        return;
    }
    if !outbox.is_empty() {
        shared
            .metrics
            .sends
            .fetch_add(outbox.len() as u64, Ordering::Relaxed);
        shared.hand_over(outbox);
    }
    if !events.is_empty() {
        shared
            .metrics
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        #[cfg(feature = "cluster")]
        if let Some(forward) = shared.forward.get() {
            crate::remote::publish_events::<A>(&**forward, key, &events);
        }
        if let Some(registry) = Registry::<A>::of(shared) {
            registry.publish(key, events);
        }
    }
    if let (Some(due), Some(host)) = (timer_due, shared.services.get()) {
        host.timer_scheduled(crate::codec::shard_of(A::NAME, key), due);
    }
}

/// Most bytes of one state record (fjall takes values below 4 GiB; far less is sane).
const MAX_RECORD: usize = 1 << 30;

/// Runs the turns of an idle activation that was just given a message, in a task of its own.
///
/// The turns' future is boxed: it holds a whole turn (the handler's future with it), and a
/// task stores its future in place, then overwrites it with the output and again when that is
/// taken, each a copy of its full size (an order's three item commits and its notice are
/// deliveries).
pub(crate) fn start<A: Handlers>(shared: &Arc<Shared>, idle: Idle<A>) {
    shared
        .tokio
        .spawn(Box::pin(run(shared.clone(), idle, false)));
}

/// Turns run in their caller's task nested at most this deep on one thread (a handler
/// calling an idle actor whose handler calls another…): deeper ones get a task of their
/// own, which bounds the stack a chain of calls takes.
const MAX_DEPTH_HERE: usize = 4;

thread_local! {
    /// Turns running in their caller's task on this thread, nested.
    static DEPTH_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs the turn of the caller's own message to an idle actor here, in the caller's task, as
/// far as it gets without waiting (most turns: a handler that awaits nothing, a commit handed
/// to the committer); what is left, and the messages of other callers queued meanwhile, go
/// on in a task of its own. A call to an idle actor thus costs no task switch, and its reply
/// is ready when the caller first looks.
///
/// Nothing is lost if the caller is cancelled: the turn runs within this one synchronous
/// poll, and what is left moves to a task before it returns. A panic escaping the turn ends
/// it as it would end its task, without reaching the caller.
pub(crate) fn start_here<A: Handlers>(shared: &Arc<Shared>, idle: Idle<A>) {
    let depth = DEPTH_HERE.get();
    if depth >= MAX_DEPTH_HERE {
        return start(shared, idle);
    }
    // Spawns, timers and blocking calls made by the turn belong to the runtime's Tokio
    // runtime, whichever one the caller runs on.
    let _runtime = shared.tokio.enter();
    let mut turns = Box::pin(AssertUnwindSafe(run(shared.clone(), idle, true)).catch_unwind());
    let waker = futures::task::noop_waker_ref();
    DEPTH_HERE.set(depth + 1);
    let polled = turns
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    DEPTH_HERE.set(depth);
    if polled.is_pending() {
        shared.tokio.spawn(turns);
    }
}

/// Runs the first message, drains the slot's queue, then puts the activation back and ends.
/// `in_caller`: started in the first message's caller's task, which runs no other message.
async fn run<A: Handlers>(shared: Arc<Shared>, idle: Idle<A>, mut in_caller: bool) {
    let Idle { slot, first } = idle;
    let mut activation = std::mem::replace(&mut slot.inner.lock().activation, Activation::empty());
    let mut next = Some(first);
    loop {
        let envelope = match next.take() {
            Some(envelope) => envelope,
            None => {
                let queued = {
                    let mut inner = slot.inner.lock();
                    match inner.queue.pop_front() {
                        Some(envelope) => {
                            slot.clear_replying();
                            envelope
                        }
                        None => {
                            inner.activation = activation;
                            inner.running = false;
                            // An idle activation keeps no queue buffer (it is most of its
                            // memory).
                            if inner.queue.capacity() > 0 {
                                inner.queue = std::collections::VecDeque::new();
                            }
                            return;
                        }
                    }
                };
                if std::mem::take(&mut in_caller) {
                    // Other callers' messages: on to a task of its own (this is a wait, so
                    // `start_here` spawns the rest).
                    tokio::task::yield_now().await;
                }
                queued
            }
        };
        // Handler panics are caught inside; this catches the rest (a user `Serialize`,
        // `Deserialize`, `Default` or `Drop` that panics), so the key never stays wedged.
        let turn = AssertUnwindSafe(turn(&shared, &slot, &mut activation, envelope));
        if turn.catch_unwind().await.is_err() {
            shared.metrics.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(actor = A::NAME, key = %slot.key, "panic outside the handler; state unloaded");
            activation.loaded = None;
        }
        shared.admission.turn_finished();
    }
}

/// One message's turn, in steps: [`prepare`] (the state loaded under the shard's current
/// epoch, a retried delivery checked, an idempotency key looked up), then the turn of its
/// kind: a handler ([`handler_turn`]), a read, a deletion ([`delete_turn`]), a subscription
/// change or a delivery already processed ([`delivery_turn`]). Every failure
/// after the state may have changed goes through [`roll_back`].
async fn turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    envelope: Envelope<A>,
) {
    let Envelope {
        body,
        chain,
        reply,
        delivery,
        span,
    } = envelope;
    // The caller gave up (timeout): do not run a handler nobody waits for.
    if reply.as_ref().is_some_and(Replier::is_closed) {
        return;
    }
    let idempotency = idempotency_key(&body, delivery.as_deref());
    let prepared = prepare(shared, slot, activation, idempotency, delivery.as_deref()).await;
    let kept = match prepared {
        Ok(Prepared::Ready(kept)) => kept,
        Ok(Prepared::Processed) => return send_gated(slot, activation, reply, Ok(unit())),
        Err(failure) => return send(slot, reply, Err(failure)),
    };
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    match body {
        Body::Call(_) if is_duplicate(&l.meta, delivery.as_deref(), kept.is_some()) => {
            // Rare turns are boxed: a turn's future is allocated for every call to an idle
            // actor, so it holds only what the common one (a handler) needs.
            Box::pin(delivery_turn(
                shared, slot, activation, reply, delivery, false,
            ))
            .await
        }
        Body::Call(message) => {
            let turn = HandlerTurn {
                message,
                keyed: None,
                chain,
                reply,
                delivery,
                span,
            };
            handler_turn(shared, slot, activation, turn).await
        }
        Body::Keyed(call) => {
            let KeyedCall {
                message,
                key,
                request,
                format,
                answer,
            } = *call;
            if let Some(kept) = kept {
                let outcome = if kept.request == request {
                    KeyedOutcome::Replayed {
                        ok: kept.ok,
                        body: kept.body,
                    }
                } else {
                    KeyedOutcome::Conflict
                };
                return send_gated(slot, activation, reply, Ok(Box::new(outcome)));
            }
            let turn = HandlerTurn {
                message,
                keyed: Some((key, request, format, answer)),
                chain,
                reply,
                delivery,
                span,
            };
            handler_turn(shared, slot, activation, turn).await
        }
        Body::Read(read) => {
            let value = read(&l.state, &l.meta);
            send_gated(slot, activation, reply, Ok(value))
        }
        Body::Delete => Box::pin(delete_turn(shared, slot, activation, reply)).await,
        Body::Subscribe(subscriber) => {
            let subscribers = &mut l.meta.subscribers;
            subscribers.retain(|s| s.actor != subscriber.actor || s.key != subscriber.key);
            subscribers.push(*subscriber);
            Box::pin(delivery_turn(
                shared, slot, activation, reply, delivery, true,
            ))
            .await
        }
        Body::DiscardTimer(timer) => {
            Box::pin(discard_timer_turn(shared, slot, activation, reply, *timer)).await
        }
        Body::Unsubscribe(gone) => {
            l.meta
                .subscribers
                .retain(|s| s.actor != gone.actor || s.key != gone.key);
            Box::pin(delivery_turn(
                shared, slot, activation, reply, delivery, true,
            ))
            .await
        }
    }
}

/// What [`prepare`] found.
enum Prepared {
    /// The state is loaded; for an idempotent request, the result an earlier one kept.
    Ready(Option<KeptResult>),
    /// A retried delivery whose earlier turn's batch became durable after all: done.
    Processed,
}

/// Gets the activation ready for a turn: drops a state that never became durable, loads it
/// (again, if the shard's epoch changed), checks a retried delivery, and looks up the
/// result an earlier idempotent request with the same key kept.
async fn prepare<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    idempotency: Option<&str>,
    delivery: Option<&Delivery>,
) -> Result<Prepared, Failure> {
    match &activation.last_write {
        // A write failed: memory holds a state that never became durable.
        Some(t) if t.failed() => {
            tracing::warn!(actor = A::NAME, key = %slot.key, "commit failed; reloading from the store");
            activation.loaded = None;
        }
        Some(t) if t.drained() => activation.last_write = None,
        _ => {}
    }
    // Served here, and under which epoch: state loaded under another one may be stale (the
    // shard was elsewhere meanwhile), so it is loaded again.
    let epoch = local_epoch(&*shared.placement, slot.shard())?;
    if activation.loaded.as_ref().is_some_and(|l| l.epoch != epoch) {
        activation.loaded = None;
    }
    if activation.loaded.is_none() {
        // Boxed, as the other rare waits of a turn: a turn's future is allocated for every
        // call to an idle actor, so it holds only what most turns need.
        let loaded = Box::pin(load::<A>(shared, slot, activation.last_write.take(), epoch)).await?;
        activation.loaded = Some(loaded);
    }
    // An outbox entry this actor recorded as processed (delivered again after a restart, or
    // after a turn whose commit failed but became durable).
    if let (Some(Delivery::Outbox { key, .. }), Some(l)) = (delivery, activation.loaded.as_ref())
        && OutboxId::of_key(key).is_some_and(|id| l.meta.processed.contains(&id))
    {
        tracing::debug!(actor = A::NAME, key = %slot.key, "a message was already processed");
        return Ok(Prepared::Processed);
    }
    // A message whose earlier turn failed in the commit: that batch may have become durable
    // after all (it removed the entry, or marked the message processed), and then the
    // message was processed. (Where the frontier is kept, a turn marks the message only
    // when its actor's record holds `MAX_PROCESSED` ids already; the check above finds the
    // others.)
    if let Some(Delivery::Outbox {
        key, verify: true, ..
    }) = delivery
    {
        let id = OutboxId::of_key(key)
            .ok_or_else(|| Failure::Invalid("an outbox key of the wrong length".into()))?;
        let queued = Box::pin(shared.with_store("outbox check", move |store| {
            store.outbox_entry(id).map(|entry| entry.is_some())
        }))
        .await?;
        if !queued {
            tracing::debug!(actor = A::NAME, key = %slot.key, "a retried message was already processed");
            return Ok(Prepared::Processed);
        }
    }
    // An idempotent request: the result an earlier one with the same key kept, if it has
    // not expired.
    let (Some(key), Some(l)) = (idempotency, activation.loaded.as_mut()) else {
        return Ok(Prepared::Ready(None));
    };
    let kept = Box::pin(kept_result(shared, slot, l, key)).await?;
    Ok(Prepared::Ready(kept))
}

/// The idempotency key of a request, if it has one: a keyed call, or a keyed send delivered.
fn idempotency_key<'a, A: Handlers>(
    body: &'a Body<A>,
    delivery: Option<&'a Delivery>,
) -> Option<&'a str> {
    match (body, delivery) {
        (Body::Keyed(call), _) => Some(call.key.as_str()),
        (
            Body::Call(_),
            Some(Delivery::Outbox {
                idempotency: Some(key),
                ..
            }),
        ) => Some(key.as_str()),
        _ => None,
    }
}

/// What identifies a turn every time it runs (again): its idempotency key (with the actor
/// it addresses), or the message it delivers (an outbox entry, or a timer firing: its
/// stored key, the same at every attempt). `None` for a plain call: it is not run again
/// by anything but its caller.
fn turn_identity<A: Handlers>(
    slot: &Slot<A>,
    idempotency: Option<&str>,
    delivery: Option<&Delivery>,
) -> Option<u128> {
    let (kind, id): (u8, &[u8]) = match (idempotency, delivery) {
        (Some(key), _) => (b'k', key.as_bytes()),
        (None, Some(Delivery::Outbox { key, .. })) => (b'o', key),
        (None, Some(Delivery::Timer { key, .. })) => (b't', key),
        (None, None) => return None,
    };
    let mut bytes = Vec::with_capacity(1 + slot.store_key.len() + 1 + id.len());
    bytes.push(kind);
    bytes.extend_from_slice(&slot.store_key);
    bytes.push(0);
    bytes.extend_from_slice(id);
    Some(xxh3_128(&bytes))
}

/// The span of a handler's turn: a child of the caller's span (also when it runs in another
/// task); a delivered send's joins the trace of the turn that sent it; a timer firing's is
/// a root.
fn turn_span<A: Handlers>(
    key: &str,
    handler: &'static str,
    caller: Option<&tracing::Span>,
    delivery: Option<&Delivery>,
) -> tracing::Span {
    let cause = match delivery {
        None => "call",
        Some(Delivery::Outbox { .. }) => "send",
        Some(Delivery::Timer { .. }) => "timer",
    };
    let span = match caller {
        Some(caller) => tracing::debug_span!(
            parent: caller, "turn", actor = A::NAME, key, handler, cause
        ),
        None if delivery.is_some() => {
            tracing::debug_span!(parent: None, "turn", actor = A::NAME, key, handler, cause)
        }
        None => tracing::debug_span!("turn", actor = A::NAME, key, handler, cause),
    };
    if let Some(Delivery::Outbox { cause, .. }) = delivery {
        cause.adopt(&span);
    }
    span
}

/// A handler's message with what it needs besides the state.
struct HandlerTurn<A: Handlers> {
    message: A::Message,
    /// An idempotent call: its key, the request's hash, and how to encode its result.
    keyed: Option<(String, u64, ReplyFormat, Answer)>,
    chain: Chain,
    reply: Option<Replier>,
    delivery: Option<Box<Delivery>>,
    /// The caller's span.
    span: Option<Box<tracing::Span>>,
}

/// Runs a handler, applies what it asked of its context, commits, and gates the reply.
async fn handler_turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    turn: HandlerTurn<A>,
) {
    let HandlerTurn {
        message,
        keyed,
        chain,
        reply,
        delivery,
        span: caller,
    } = turn;
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    let (handler, mutates) = A::__describe(&message);
    let timeout = shared.config.call_timeout;
    // A retried delivery's failure was reported at its first attempt (panic report
    // included); it is reported again only if it is parked.
    let retry = delivery.as_deref().is_some_and(Delivery::is_retry);
    // The turn's span, and what its sends keep of it.
    let span: tracing::Span;
    let cause: Cause;
    // In a block of its own, so the context and the handler's future take no room in this
    // future's later waits.
    let (ran, mut effects) = {
        let key = keyed.as_ref().map(|(key, ..)| key.as_str());
        let ids = turn_identity(slot, key, delivery.as_deref()).map(|t| Arc::new(CallIds::new(t)));
        let ctx = Context::new(
            shared.clone(),
            TurnType::of::<A>(),
            slot.key.clone(),
            chain,
            l.meta.timers.clone(),
            ids,
        );
        span = turn_span::<A>(&slot.key, handler, caller.as_deref(), delivery.as_deref());
        cause = span.in_scope(Cause::current);
        let ran = run_bounded(
            timeout,
            AssertUnwindSafe(crate::panics::polled(
                retry,
                l.state.__dispatch(&ctx, message),
            ))
            .catch_unwind(),
        )
        .instrument(span.clone())
        .await;
        (ran, ctx.into_effects())
    };
    shared.metrics.turns.fetch_add(1, Ordering::Relaxed);

    let mut released = Released::default();
    let output = match ran {
        Err(_) => {
            if retry {
                tracing::debug!(actor = A::NAME, key = %slot.key, handler, ?timeout, "retried message: handler timed out again; state reset");
            } else {
                tracing::warn!(actor = A::NAME, key = %slot.key, handler, ?timeout, "handler timed out; state reset");
            }
            roll_back(shared, slot, activation, &mut released);
            return send_gated(slot, activation, reply, Err(Failure::Timeout(timeout)));
        }
        Ok(Err(_panic)) => {
            shared.metrics.panics.fetch_add(1, Ordering::Relaxed);
            if retry {
                tracing::debug!(actor = A::NAME, key = %slot.key, handler, "retried message: handler panicked again; state reset");
            } else {
                tracing::error!(actor = A::NAME, key = %slot.key, handler, "handler panicked; state reset");
            }
            roll_back(shared, slot, activation, &mut released);
            let failure = Failure::Panicked {
                actor: A::NAME,
                handler,
            };
            return send_gated(slot, activation, reply, Err(failure));
        }
        Ok(Ok(output)) => output,
    };

    // The handler returned: the message counts as processed, even if the turn is rolled back.
    let refused = effects.as_mut().and_then(|e| e.error.take());
    let handler_failed = output.error;
    // A handler's `Err` rolls the turn back unless it is `#[handler(commit_errors)]`.
    let keep = refused.is_none() && !output.roll_back;
    let mut writes = Vec::new();
    let mut dirty = keep && mutates;
    if !keep && mutates {
        roll_back(shared, slot, activation, &mut released);
    }
    let Some(l) = activation.loaded.as_mut() else {
        return send_gated(
            slot,
            activation,
            reply,
            refused.map_or(Ok(output.value), Err),
        );
    };
    // An idempotent call keeps its result (a handler error too: it is the answer a retry
    // gets) with the turn; a refused turn keeps nothing.
    let mut value = output.value;
    let mut new_kept = None;
    if let Some((key, request, format, answer)) = keyed
        && refused.is_none()
    {
        match format.encode::<A>(shared, handler, &*value) {
            Ok((ok, body)) => {
                let kept = body.clone();
                if answer == Answer::Encoded {
                    value = Box::new(KeyedOutcome::Fresh { ok, body });
                }
                new_kept = Some(NewKept {
                    idempotency: key,
                    result: KeptResult {
                        request,
                        ok,
                        body: kept,
                    },
                });
            }
            Err(e) => {
                roll_back(shared, slot, activation, &mut released);
                let failure =
                    Failure::Invalid(format!("cannot encode the result of `{handler}`: {e}"));
                return send_gated(slot, activation, reply, Err(failure));
            }
        }
    }
    if keep && let Some(effects) = effects {
        match apply_effects(
            shared,
            slot,
            l,
            *effects,
            &cause,
            &mut writes,
            &mut released,
        ) {
            Ok(changed) => dirty |= changed,
            Err(failure) => {
                // Transient (the outbox is full): the message is not consumed.
                roll_back(shared, slot, activation, &mut released);
                return send_gated(slot, activation, reply, Err(failure));
            }
        }
    }
    let mut fired = false;
    if let Some(d) = delivery {
        fired = matches!(*d, Delivery::Timer { .. });
        if let Delivery::Outbox {
            idempotency: Some(key),
            ..
        } = &*d
        {
            // A keyed send: its key is kept, so a repeat is not processed again.
            new_kept = Some(NewKept {
                idempotency: key.clone(),
                result: KeptResult::send(),
            });
        }
        dirty |= complete_delivery(shared, l, *d, true, &mut writes, &mut released.timer_due);
    }
    dirty |= crate::timers::sync_index(
        &slot.store_key,
        &mut l.meta,
        fired,
        &mut writes,
        &mut released.timer_due,
    );
    // Ends once the turn's write is durable.
    let mut commit_span = tracing::Span::none();
    // Most read-only turns have nothing to write: then no `submit` future is made at all.
    let committed = match commit(
        shared,
        slot,
        activation,
        writes,
        dirty,
        new_kept,
        &mut released,
    ) {
        Ok(Some(staged)) => {
            commit_span =
                tracing::debug_span!(parent: &span, "commit", actor = A::NAME, key = %slot.key);
            submit(shared, activation, staged).await;
            Ok(())
        }
        nothing_or_failed => nothing_or_failed.map(drop),
    };
    let result = match (committed, refused) {
        (Err(failure), _) => Err(failure),
        // A refused turn still consumed its durable message (removed in this commit): the
        // dispatcher must hear "done", not "retry", or it would deliver it again.
        (Ok(()), Some(failure)) if matches!(reply, Some(Replier::Done(..))) => {
            tracing::error!(actor = A::NAME, key = %slot.key, handler, error = %failure, "a delivered message's turn was refused; the message is consumed");
            Ok(unit())
        }
        (Ok(()), Some(failure)) => Err(failure),
        // The handler decided: its `Err` consumes a delivered message (removed in this
        // commit, never retried), which is worth a count and a warning, as nobody gets the
        // answer.
        (Ok(()), None) if handler_failed && matches!(reply, Some(Replier::Done(..))) => {
            shared
                .metrics
                .handler_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(actor = A::NAME, key = %slot.key, handler, committed = keep, "a delivered message's handler returned an error; the message is consumed");
            Ok(value)
        }
        (Ok(()), None) => Ok(value),
    };
    reply_after(
        shared,
        slot,
        activation,
        reply,
        result,
        released,
        commit_span,
    );
}

/// A turn that runs no handler and only completes a delivery and commits metadata: a
/// subscription change (`changed`: the metadata is written, the delivery counts as
/// processed), or a duplicate (its idempotency key was kept) or stale (a cancelled or
/// rescheduled timer) delivery, completed without running anything.
async fn delivery_turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    reply: Option<Replier>,
    delivery: Option<Box<Delivery>>,
    changed: bool,
) {
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    let mut writes = Vec::new();
    let mut released = Released::default();
    let mut changed = changed;
    if let Some(d) = delivery {
        changed |= complete_delivery(shared, l, *d, changed, &mut writes, &mut released.timer_due);
    }
    let changed = changed
        | crate::timers::sync_index(
            &slot.store_key,
            &mut l.meta,
            false,
            &mut writes,
            &mut released.timer_due,
        );
    commit_and_reply(shared, slot, activation, reply, writes, changed, released).await;
}

/// Deletes the actor as `ctx.delete()` would: state, timers, subscriptions.
async fn delete_turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    reply: Option<Replier>,
) {
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    let effects = Effects {
        delete: true,
        ..Effects::default()
    };
    let mut writes = Vec::new();
    let mut released = Released::default();
    if let Err(failure) = apply_effects(
        shared,
        slot,
        l,
        effects,
        &Cause::default(),
        &mut writes,
        &mut released,
    ) {
        roll_back(shared, slot, activation, &mut released);
        return send_gated(slot, activation, reply, Err(failure));
    }
    commit_and_reply(shared, slot, activation, reply, writes, true, released).await;
}

/// Drops a parked timer for good: from the actor's timers (unless it was cancelled or
/// rescheduled since it was parked) and from the store, in one batch.
async fn discard_timer_turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    reply: Option<Replier>,
    timer: DiscardTimer,
) {
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    let DiscardTimer { key, name, due_ms } = timer;
    if name.is_empty() {
        return upkeep_turn(shared, slot, activation, reply, key, due_ms).await;
    }
    let listed = l
        .meta
        .timers
        .iter()
        .position(|t| t.name == name && t.due_ms == due_ms);
    let mut writes = Vec::new();
    // Stored apart by an older version, or no longer listed (then its key, if any, goes).
    if listed.is_none_or(|at| l.meta.timers[at].stored_apart()) {
        writes.push(KeyWrite {
            space: Space::Timers,
            key,
            value: None,
        });
    }
    if let Some(at) = listed {
        Arc::make_mut(&mut l.meta.timers).remove(at);
    }
    let mut released = Released::default();
    let dirty = listed.is_some()
        | crate::timers::sync_index(
            &slot.store_key,
            &mut l.meta,
            true,
            &mut writes,
            &mut released.timer_due,
        );
    commit_and_reply(shared, slot, activation, reply, writes, dirty, released).await;
}

/// Moves this actor's timer index entry `key` (due at `due_ms`), which the timer service
/// found due with no timer due behind it, to the earliest timer in the record, or removes it
/// if there is none (a timer armed since it looked is kept). An entry the record does not
/// name (`indexed`) is deleted: no turn of this actor relies on it.
async fn upkeep_turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    reply: Option<Replier>,
    key: Arc<[u8]>,
    due_ms: u64,
) {
    let Some(l) = activation.loaded.as_mut() else {
        return;
    };
    let mut writes = Vec::new();
    if l.meta.indexed != Some(due_ms) {
        writes.push(KeyWrite {
            space: Space::Timers,
            key,
            value: None,
        });
    }
    let mut released = Released {
        upkeep: true,
        ..Released::default()
    };
    let dirty = crate::timers::sync_index(
        &slot.store_key,
        &mut l.meta,
        true,
        &mut writes,
        &mut released.timer_due,
    );
    // The timer service looks at the entry's place once it is durable (also when it stayed).
    released.timer_due = l.meta.indexed;
    commit_and_reply(shared, slot, activation, reply, writes, dirty, released).await;
}

/// Stages a turn's writes (the record if `dirty`, `writes`, a kept result) as one commit
/// request, for [`submit`] to hand to the committer; if that fails, the turn is rolled back
/// ([`roll_back`]). `None`: nothing to write, nothing to wait for.
///
/// Synchronous, so that a turn's future holds only the small [`submit`] future across its
/// wait for room in the commit queue: a turn's future is allocated for every call to an
/// idle actor, and every byte of it is copied when it is built.
#[inline]
fn commit<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    writes: Vec<KeyWrite>,
    dirty: bool,
    kept: Option<NewKept>,
    released: &mut Released<A::Event>,
) -> Result<Option<Staged>, Failure> {
    // Most read-only turns: nothing to stage.
    if !dirty && writes.is_empty() && kept.is_none() {
        return Ok(None);
    }
    let Some(l) = activation.loaded.as_mut() else {
        return Ok(None);
    };
    let mut staged = stage(shared, slot, l, writes, dirty, kept);
    match &mut staged {
        Ok(Some(staged)) => staged.upkeep = released.upkeep,
        Ok(None) => {}
        Err(_) => roll_back(shared, slot, activation, released),
    }
    staged
}

/// A turn's writes, ready for the committer, and what the activation records once they are
/// submitted.
struct Staged {
    writes: Vec<KeyWrite>,
    /// Only a timer index entry's upkeep (counted apart).
    upkeep: bool,
    fence: Fence,
    /// The state's new record, if it is written.
    record: Option<Arc<[u8]>>,
    /// Results of idempotent requests written with it, answered from the activation until
    /// the write is durable.
    kept: Vec<NewKept>,
    /// When they expire.
    expires_ms: u64,
}

/// Hands a staged turn to the committer: the activation's latest write is now this one.
async fn submit<A: Handlers>(shared: &Shared, activation: &mut Activation<A>, staged: Staged) {
    let Staged {
        writes,
        upkeep,
        fence,
        record,
        kept,
        expires_ms,
    } = staged;
    let ticket = shared
        .committer
        .submit_counted(writes, activation.last_write.take(), Some(fence), upkeep)
        .await;
    if let Some(l) = activation.loaded.as_mut() {
        if record.is_some() {
            l.record = record;
        }
        if !kept.is_empty() {
            l.kept.retain(|p| !p.ticket.settled());
            l.kept.extend(kept.into_iter().map(|k| PendingKept {
                idempotency: k.idempotency,
                result: k.result,
                expires_ms,
                ticket: ticket.clone(),
            }));
        }
    }
    activation.last_write = Some(ticket);
}

/// The end of a turn that runs no handler: commits its writes and answers `()` once they
/// (and the actor's earlier writes) are durable.
async fn commit_and_reply<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    reply: Option<Replier>,
    writes: Vec<KeyWrite>,
    dirty: bool,
    mut released: Released<A::Event>,
) {
    let result = match commit(shared, slot, activation, writes, dirty, None, &mut released) {
        Ok(Some(staged)) => {
            submit(shared, activation, staged).await;
            Ok(())
        }
        nothing_or_failed => nothing_or_failed.map(drop),
    };
    reply_after(
        shared,
        slot,
        activation,
        reply,
        result.map(|()| unit()),
        released,
        tracing::Span::none(),
    );
}

/// The one way a turn is undone: the state goes back to its last written record (still
/// gated on its write), the outbox places its sends took are given back, and nothing it
/// produced is released.
fn roll_back<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
    released: &mut Released<A::Event>,
) {
    shared.backlog.release(released.outbox.len());
    shared
        .backlog
        .settled(released.outbox.iter().map(|(id, r)| r.stored_as(*id)));
    *released = Released::default();
    reset(&mut activation.loaded, slot);
}

/// The reply of a turn that runs no handler.
fn unit() -> Box<dyn std::any::Any + Send> {
    Box::new(())
}

/// What a committed turn releases once it is durable, besides its reply.
struct Released<E> {
    /// New outbox entries, for the dispatcher.
    outbox: Vec<(OutboxId, OutboxRecord)>,
    /// Events, for watchers.
    events: Vec<E>,
    /// The earliest timer the turn scheduled.
    timer_due: Option<u64>,
    /// The turn only removed or moved its actor's timer index entry: its writes are counted
    /// as upkeep.
    upkeep: bool,
}

impl<E> Default for Released<E> {
    fn default() -> Self {
        Released {
            outbox: Vec::new(),
            events: Vec::new(),
            timer_due: None,
            upkeep: false,
        }
    }
}

/// A delivery already processed (its idempotency key was `kept`) or a timer firing that no
/// longer exists (cancelled or rescheduled after it was picked up).
fn is_duplicate(meta: &ActorMeta, delivery: Option<&Delivery>, kept: bool) -> bool {
    match delivery {
        Some(Delivery::Outbox {
            idempotency: Some(_),
            ..
        }) => kept,
        Some(Delivery::Timer { name, due_ms, .. }) => !meta
            .timers
            .iter()
            .any(|t| t.name == *name && t.due_ms == *due_ms),
        _ => false,
    }
}

/// Applies a kept turn's effects to the metadata and collects their writes. Returns whether
/// the record changed.
fn apply_effects<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    l: &mut Loaded<A>,
    effects: Effects,
    cause: &Cause,
    writes: &mut Vec<KeyWrite>,
    released: &mut Released<A::Event>,
) -> Result<bool, Failure> {
    let Effects {
        mut sends,
        events,
        timers,
        subscriptions,
        delete,
        error: _,
    } = effects;
    let mut changed = false;
    let me = || actor_ref(slot);

    let events: Vec<A::Event> = events
        .into_iter()
        .filter_map(|e| e.downcast::<A::Event>().ok().map(|e| *e))
        .collect();
    if !events.is_empty() && !l.meta.subscribers.is_empty() {
        for event in &events {
            let bytes = postcard::to_allocvec(event).map_err(|e| {
                Failure::Invalid(format!("cannot encode an event of `{}`: {e}", A::NAME))
            })?;
            for s in &l.meta.subscribers {
                sends.push(OutboxRecord {
                    target: ActorRef {
                        actor: s.actor.clone(),
                        key: s.key.clone(),
                    },
                    payload: Payload::Event {
                        handler: s.handler.clone(),
                        event: bytes.clone(),
                    },
                    idempotency: None,
                    cause: cause.clone(),
                    group: None,
                });
            }
        }
    }

    if delete {
        for t in l.meta.timers.iter().filter(|t| t.stored_apart()) {
            writes.push(timer_write(t.due_ms, slot, &t.name, None));
        }
        if let Some(due) = l.meta.indexed {
            writes.push(crate::timers::index_write(&slot.store_key, due, None));
        }
        for publisher in l.meta.subscriptions.drain(..) {
            sends.push(OutboxRecord {
                target: publisher,
                payload: Payload::Unsubscribe(me()),
                idempotency: None,
                cause: cause.clone(),
                group: None,
            });
        }
        // What it processed is kept until the turn is staged, which marks those messages
        // processed in the outbox instead (see `stage`).
        let processed = std::mem::take(&mut l.meta.processed);
        l.meta = ActorMeta {
            processed,
            ..ActorMeta::default()
        };
        l.state = A::default();
        l.deleted = true;
        changed = true;
    } else {
        for op in timers {
            changed = true;
            match op {
                TimerOp::Cancel(name) => {
                    remove_timer(slot, &mut l.meta, &name, writes);
                }
                TimerOp::Set {
                    name,
                    due_ms,
                    every_ms,
                    message,
                } => {
                    remove_timer(slot, &mut l.meta, &name, writes);
                    Arc::make_mut(&mut l.meta.timers).push(TimerEntry {
                        name,
                        due_ms,
                        every_ms,
                        message: Some(TimerMessage::encode(&message).map_err(|e| {
                            Failure::Invalid(format!("cannot encode a timer's message: {e}"))
                        })?),
                    });
                    released.timer_due = Some(released.timer_due.map_or(due_ms, |d| d.min(due_ms)));
                }
            }
        }
        for op in subscriptions {
            changed = true;
            match op {
                SubscriptionOp::Subscribe { publisher, handler } => {
                    if !l.meta.subscriptions.contains(&publisher) {
                        l.meta.subscriptions.push(publisher.clone());
                    }
                    sends.push(OutboxRecord {
                        target: publisher,
                        payload: Payload::Subscribe(Subscriber {
                            actor: A::NAME.to_string(),
                            key: slot.key.to_string(),
                            handler,
                        }),
                        idempotency: None,
                        cause: cause.clone(),
                        group: None,
                    });
                }
                SubscriptionOp::Unsubscribe(publisher) => {
                    l.meta.subscriptions.retain(|p| *p != publisher);
                    sends.push(OutboxRecord {
                        target: publisher,
                        payload: Payload::Unsubscribe(me()),
                        idempotency: None,
                        cause: cause.clone(),
                        group: None,
                    });
                }
            }
        }
    }

    if !sends.is_empty() {
        let reserved = sends.len();
        shared.backlog.reserve(reserved)?;
        let before = released.outbox.len();
        // Where the frontier is kept, the messages of a turn share entries: one write for
        // up to `MAX_GROUP` of them (see `encode_group`). Elsewhere a target's turn deletes
        // its message, so each has an entry of its own.
        let per_entry = if shared.keeps_frontier { MAX_GROUP } else { 1 };
        let mut rest = sends;
        while !rest.is_empty() {
            let after = rest.split_off(rest.len().min(per_entry));
            let stored = OutboxValue::of(std::mem::replace(&mut rest, after));
            let value = match stored.encode() {
                Ok(v) => v,
                Err(e) => {
                    // The places of the entries already in `released` are given back when
                    // the turn is rolled back; these are the others.
                    shared
                        .backlog
                        .release(reserved - (released.outbox.len() - before));
                    return Err(Failure::Invalid(format!("cannot encode a send: {e}")));
                }
            };
            let id = shared.backlog.next_ids(slot.shard(), stored.numbers());
            writes.push(KeyWrite {
                space: Space::Outbox,
                key: id.key(),
                value: Some(value),
            });
            released.outbox.extend(outbox_messages(id, stored));
        }
    }
    released.events = events;
    Ok(changed)
}

/// Removes timer `name` from the record, and its own key if an older version stored it
/// apart. The index entry stays (see [`crate::timers::sync_index`]).
fn remove_timer<A: Handlers>(
    slot: &Slot<A>,
    meta: &mut ActorMeta,
    name: &str,
    writes: &mut Vec<KeyWrite>,
) {
    let Some(at) = meta.timers.iter().position(|t| t.name == name) else {
        return;
    };
    let old = Arc::make_mut(&mut meta.timers).remove(at);
    if old.stored_apart() {
        writes.push(timer_write(old.due_ms, slot, name, None));
    }
}

/// This actor as a message target.
fn actor_ref<A: Handlers>(slot: &Slot<A>) -> ActorRef {
    ActorRef {
        actor: A::NAME.to_string(),
        key: slot.key.to_string(),
    }
}

fn timer_write<A: Handlers>(
    due_ms: u64,
    slot: &Slot<A>,
    name: &str,
    value: Option<Arc<[u8]>>,
) -> KeyWrite {
    KeyWrite {
        space: Space::Timers,
        key: timer_key(&slot.store_key, due_ms, name).into(),
        value,
    }
}

/// Most outbox entries an actor's record lists as processed (see `crate::frontier`): about
/// 12 bytes each, written with every write of the record until the frontier passes them.
const MAX_PROCESSED: usize = 64;

/// Removes a delivery in the turn's batch (what makes it exactly-once): an outbox entry, or
/// a timer from the record (a periodic one gets its next firing there; one an older
/// version stored apart loses its key too). Returns whether the record changed.
fn complete_delivery<A: Handlers>(
    shared: &Shared,
    l: &mut Loaded<A>,
    delivery: Delivery,
    processed: bool,
    writes: &mut Vec<KeyWrite>,
    timer_due: &mut Option<u64>,
) -> bool {
    match delivery {
        // Its sender deletes an entry of another shard once this turn is durable.
        Delivery::Outbox { apart: true, .. } => false,
        // Recorded in the record, which the turn writes (see `crate::frontier`), unless the
        // record holds as many ids as it may: a message to an actor that gets more than
        // that between two frontiers is marked processed in the outbox instead.
        Delivery::Outbox { key, .. } if shared.keeps_frontier => {
            let processed = &mut l.meta.processed;
            if processed.len() >= MAX_PROCESSED {
                // Room from the ids the frontier passed (`stage` forgets them otherwise).
                processed.retain(|id| !shared.frontier.passed(*id));
            }
            match OutboxId::of_key(&key) {
                Some(id) if processed.len() < MAX_PROCESSED => {
                    processed.push(id);
                    true
                }
                _ => {
                    writes.push(shared.processed_write(key));
                    false
                }
            }
        }
        // Elsewhere its target's turn deletes the entry (the same write as the mark above).
        Delivery::Outbox { key, .. } => {
            writes.push(shared.processed_write(key));
            false
        }
        Delivery::Timer {
            key,
            name,
            due_ms,
            every_ms,
            message,
            stored,
            ..
        } => {
            if stored {
                writes.push(KeyWrite {
                    space: Space::Timers,
                    key,
                    value: None,
                });
            }
            if processed {
                shared.metrics.timers_fired.fetch_add(1, Ordering::Relaxed);
            }
            // The handler may have cancelled or re-armed its own timer: then there is no
            // entry left to remove or advance.
            let Some(at) = l
                .meta
                .timers
                .iter()
                .position(|t| t.name == name && t.due_ms == due_ms)
            else {
                return false;
            };
            let timers = Arc::make_mut(&mut l.meta.timers);
            match every_ms {
                None => {
                    timers.remove(at);
                }
                Some(every) => {
                    // Missed periods are not replayed: the next firing is one period after
                    // the later of the due time and now.
                    let now = shared.clock.epoch_ms();
                    let next = match due_ms.saturating_add(every) {
                        next if next > now => next,
                        _ => now.saturating_add(every),
                    };
                    // Re-armed in the record (a timer an older version stored apart too).
                    timers[at].due_ms = next;
                    if timers[at].stored_apart() {
                        match TimerMessage::encode(&message) {
                            Ok(kept) => timers[at].message = Some(kept),
                            Err(e) => {
                                tracing::error!(timer = %name, error = %e, "cannot keep a periodic timer's message in its record");
                            }
                        }
                    }
                    *timer_due = Some(timer_due.map_or(next, |d| d.min(next)));
                }
            }
            true
        }
    }
}

/// The result an earlier idempotent request with the key `idempotency` kept on this actor,
/// unless it expired: from this activation's writes still on their way to the store, from
/// the record of an older version, or from the store (off the async workers).
async fn kept_result<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    l: &mut Loaded<A>,
    idempotency: &str,
) -> Result<Option<KeptResult>, Failure> {
    let now = shared.clock.epoch_ms();
    // A settled write is in the store (or failed, and then so did this actor's later ones).
    l.kept.retain(|p| !p.ticket.settled());
    if let Some(p) = l
        .kept
        .iter()
        .rev()
        .find(|p| p.idempotency == idempotency && p.expires_ms > now)
    {
        return Ok(Some(p.result.clone()));
    }
    if let Some(legacy) = l.meta.legacy_result(idempotency) {
        return Ok(Some(legacy));
    }
    let prefix = kept_prefix(&slot.store_key, idempotency);
    let found = shared
        .with_store("idempotency lookup", move |store| {
            store.kept_result(&prefix, now)
        })
        .await?;
    let Some((_, value)) = found else {
        return Ok(None);
    };
    decode_envelope::<KeptResult>(&value)
        .map(Some)
        .map_err(|reason| {
            Failure::Decode(DecodeError {
                actor: A::NAME,
                key: slot.key.to_string(),
                reason: format!("the kept result of idempotency key {idempotency:?}: {reason}"),
            })
        })
}

/// The writes that keep `result` under `idempotency` until `expires_ms`: the result, and its
/// entry in the expiry index.
fn kept_writes<A: Handlers>(
    slot: &Slot<A>,
    idempotency: &str,
    result: &KeptResult,
    expires_ms: u64,
) -> Result<[KeyWrite; 2], Failure> {
    let value = encode_envelope(result).map_err(|e| Failure::Storage(StorageError::new(e)))?;
    let key = kept_key(&slot.store_key, idempotency, expires_ms);
    Ok([
        KeyWrite {
            space: Space::Expiry,
            key: expiry_key(&key, expires_ms).into(),
            value: Some(Arc::from([].as_slice())),
        },
        KeyWrite {
            space: Space::Kept,
            key: key.into(),
            value: Some(value),
        },
    ])
}

/// The writes of a turn: the record if `dirty` and it changed (or its removal, for a
/// deleted actor with nothing left), `writes`, and the result of an idempotent request
/// (`new`), kept under its own key in the same batch. Results an older version kept in the
/// record move to their own keys with its next write. `None`: nothing to write.
fn stage<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    l: &mut Loaded<A>,
    mut writes: Vec<KeyWrite>,
    dirty: bool,
    new: Option<NewKept>,
) -> Result<Option<Staged>, Failure> {
    let mut kept: Vec<NewKept> = new.into_iter().collect();
    if dirty {
        kept.extend(
            l.meta
                .take_legacy_results()
                .map(|(idempotency, result)| NewKept {
                    idempotency,
                    result,
                }),
        );
    }
    let mut expires_ms = 0;
    if !kept.is_empty() {
        let retention =
            u64::try_from(shared.config.idempotency_retention.as_millis()).unwrap_or(u64::MAX);
        expires_ms = shared.clock.epoch_ms().saturating_add(retention);
        for k in &kept {
            writes.extend(kept_writes(slot, &k.idempotency, &k.result, expires_ms)?);
        }
    }
    if dirty && !l.meta.processed.is_empty() {
        if l.deleted {
            // A deleted actor keeps nothing: the messages it processed are marked processed
            // in the outbox instead, so that none is delivered to it again.
            for id in std::mem::take(&mut l.meta.processed) {
                writes.push(shared.processed_write(id.key()));
            }
        } else {
            // The frontier passed them: never delivered again.
            l.meta.processed.retain(|id| !shared.frontier.passed(*id));
        }
    }
    let mut record = None;
    if dirty && l.deleted && l.meta.is_empty() {
        // A deleted actor with nothing left: remove its record rather than store a default.
        if l.record.take().is_some() {
            writes.push(KeyWrite {
                space: Space::State,
                key: slot.store_key.clone(),
                value: None,
            });
        }
    } else if dirty {
        let bytes: Arc<[u8]> = crate::codec::encode_record(A::VERSION, &l.meta, &l.state)
            .map_err(|e| Failure::Storage(StorageError::new(e)))?;
        if l.record.as_deref() != Some(&bytes[..]) {
            if bytes.len() > MAX_RECORD {
                return Err(Failure::Storage(StorageError::new(format!(
                    "the state of {}({:?}) encodes to {} bytes, over the limit of {MAX_RECORD}",
                    A::NAME,
                    &*slot.key,
                    bytes.len()
                ))));
            }
            writes.push(KeyWrite {
                space: Space::State,
                key: slot.store_key.clone(),
                value: Some(bytes.clone()),
            });
            record = Some(bytes);
        }
    }
    // The deletion is dealt with (its removal is in `writes`, or there was no record): a
    // later turn's state must be written again.
    l.deleted = false;
    if writes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Staged {
        upkeep: false,
        writes,
        fence: Fence {
            shard: slot.shard(),
            epoch: l.epoch,
        },
        record,
        kept,
        expires_ms,
    }))
}

/// Gates the reply, and everything the turn releases, on the actor's latest write.
fn reply_after<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &Activation<A>,
    reply: Option<Replier>,
    result: Reply,
    released: Released<A::Event>,
    commit_span: tracing::Span,
) {
    let Released {
        outbox,
        events,
        timer_due,
        upkeep: _,
    } = released;
    let nothing_released = outbox.is_empty() && events.is_empty() && timer_due.is_none();
    if reply.is_none() && nothing_released {
        drop(commit_span);
        return;
    }
    let release = (!nothing_released).then(|| {
        let shared = shared.clone();
        let key = slot.key.clone();
        move |durable: bool| release::<A>(&shared, &key, durable, outbox, events, timer_due)
    });
    if reply.is_some() {
        // Marked before the reply can leave: whoever gets it finds this turn ending.
        slot.set_replying();
    }
    release_after(activation.last_write.as_ref(), move |durable| {
        if let Some(release) = release {
            release(durable.is_ok());
        }
        if let Some(reply) = reply {
            reply.send(durable.and(result));
        }
        drop(commit_span);
    });
}

/// Replies once the actor's latest write settles (a failure still waits, so nothing is
/// heard before the state it follows is durable).
fn send_gated<A: Handlers>(
    slot: &Slot<A>,
    activation: &Activation<A>,
    reply: Option<Replier>,
    result: Reply,
) {
    if let Some(reply) = reply {
        // Marked before the reply can leave: whoever gets it finds this turn ending.
        slot.set_replying();
        release_after(activation.last_write.as_ref(), move |durable| {
            reply.send(durable.and(result))
        });
    }
}

/// Rolls the state back to its last written record (which stays gated on its write).
fn reset<A: Handlers>(loaded: &mut Option<Loaded<A>>, slot: &Slot<A>) {
    let Some(l) = loaded.as_mut() else {
        return;
    };
    let restored = match &l.record {
        None => Ok((A::default(), ActorMeta::default())),
        Some(bytes) => {
            crate::version::decode_versioned::<A>(bytes).map(|(meta, state)| (state, meta))
        }
    };
    match restored {
        Ok((state, meta)) => {
            l.state = state;
            l.meta = meta;
            l.deleted = false;
        }
        Err(reason) => {
            tracing::error!(actor = A::NAME, key = %slot.key, %reason, "cannot restore state; unloading");
            *loaded = None;
        }
    }
}

/// Reads the actor's record from the store (off the async workers) and decodes it, after
/// the actor's pending write (if any) has settled, so the store is the truth.
async fn load<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    pending: Option<Arc<Ticket>>,
    epoch: u64,
) -> Result<Loaded<A>, Failure> {
    if let Some(ticket) = pending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ticket.gate(move |_| {
            let _ = tx.send(());
        });
        let _ = rx.await;
    }
    let key = slot.store_key.clone();
    let bytes = shared
        .with_store("load task", move |store| store.get_state(&key))
        .await?;
    let Some(bytes) = bytes else {
        return Ok(Loaded {
            state: A::default(),
            meta: ActorMeta::default(),
            record: None,
            deleted: false,
            kept: thin_vec::ThinVec::new(),
            epoch,
        });
    };
    match crate::version::decode_versioned::<A>(&bytes) {
        Ok((meta, state)) => Ok(Loaded {
            state,
            meta,
            record: Some(bytes.into()),
            deleted: false,
            kept: thin_vec::ThinVec::new(),
            epoch,
        }),
        Err(reason) => Err(Failure::Decode(DecodeError {
            actor: A::NAME,
            key: slot.key.to_string(),
            reason,
        })),
    }
}

/// Replies now (nothing of this turn waits to become durable).
fn send<A: Handlers>(slot: &Slot<A>, reply: Option<Replier>, value: Reply) {
    if let Some(reply) = reply {
        slot.set_replying();
        reply.send(value);
    }
}

/// Runs `future` for at most `limit`. Most handlers finish in their first poll (they await
/// nothing that is not ready), and a timer cannot interrupt a poll anyway, so the first
/// poll runs without one: arming and clearing a timer is a measurable share of an in-memory
/// call. Only a handler that is still pending after it gets the timer, from then on.
async fn run_bounded<F: std::future::Future>(
    limit: std::time::Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    if let std::task::Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return Ok(output);
    }
    Box::pin(tokio::time::timeout(limit, future)).await
}
