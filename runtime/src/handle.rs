//! The untyped core of every generated handle: validates the target, enqueues the message,
//! and waits (bounded by the call timeout) for the gated reply.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use tokio::sync::oneshot;
use xxhash_rust::xxh3::xxh3_64;

use crate::actor::{Actor, Deliver, Handlers};
use crate::codec::encode_envelope;
use crate::commit::KeyWrite;
use crate::context::message_record;
use crate::context::{Chain, find_cycle};
use crate::error::{CallError, DecodeError, Failure};
use crate::mailbox::{
    Answer, Body, Envelope, KeyedCall, KeyedOutcome, Mailbox, Replier, ReplyFormat, mailbox_of,
};
use crate::placement::{Fence, local_epoch};
use crate::shared::Shared;
use crate::store::Space;

/// Longest a call from outside waits for deliveries while the outbox is over half full.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(100);

#[cfg(feature = "cluster")]
mod route;
#[cfg(feature = "cluster")]
pub(crate) use route::{failure_of, mismatched};

/// What travels back from a turn to its caller.
#[doc(hidden)]
pub type Reply = Result<Box<dyn Any + Send>, Failure>;

/// Where a handle's calls go: its type's mailbox and its key.
type Target<A> = (Arc<dyn Mailbox<A>>, Arc<str>);

/// A cheap, cloneable reference to one actor, wrapped by the generated `<Type>Handle`.
#[doc(hidden)]
pub struct Caller<A: Actor> {
    shared: Arc<Shared>,
    target: Result<Target<A>, Failure>,
    /// The actor's shard: every call asks the placement where it is served.
    shard: u16,
    chain: Chain,
    /// Made by a turn that may run again: its calls are made exactly once.
    ids: Option<Arc<CallIds>>,
    /// How long a call waits for its reply, if not the runtime's call timeout.
    timeout: Option<Duration>,
    /// Made for a call another node routed here: it runs here or fails, never goes on.
    routed: bool,
}

impl<A: Actor> Clone for Caller<A> {
    fn clone(&self) -> Self {
        Caller {
            shared: self.shared.clone(),
            target: self.target.clone(),
            shard: self.shard,
            chain: self.chain.clone(),
            ids: self.ids.clone(),
            timeout: self.timeout,
            routed: self.routed,
        }
    }
}

/// Ids for the calls of a turn that runs again when it fails or its process dies before it
/// commits (a delivered send, a timer firing, an idempotent request): derived from what
/// identifies the turn and each call's position in it, so they are the same every time it
/// runs. The callee keeps a call's result under its id, in the batch of the turn that
/// produced it and for the idempotency retention; a repeated call is answered from it
/// without running the handler again.
pub(crate) struct CallIds {
    /// A hash of what identifies the turn.
    turn: u128,
    /// The position of the turn's next call.
    next: AtomicU32,
}

impl CallIds {
    pub(crate) fn new(turn: u128) -> Self {
        CallIds {
            turn,
            next: AtomicU32::new(0),
        }
    }

    /// The hash of what identifies the turn.
    pub(crate) fn turn(&self) -> u128 {
        self.turn
    }

    /// The id of the turn's next call, and its position. The prefix is a control character,
    /// which no caller-chosen idempotency key may contain.
    fn next(&self) -> (String, u32) {
        let position = self.next.fetch_add(1, Ordering::Relaxed);
        (format!("\u{1}call:{:032x}:{position}", self.turn), position)
    }
}

/// What a handle is without handlers: `#[derive(Actor)]` declares the handle, `#[handlers]`
/// gives it its calls.
impl<A: Actor> Caller<A> {
    /// The same handle, its calls waiting at most `timeout` for their reply (the generated
    /// handle's `timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The key this handle addresses.
    pub fn key(&self) -> &str {
        match &self.target {
            Ok((_, key)) => key,
            Err(_) => "",
        }
    }
}

impl<A: Handlers> Caller<A> {
    pub(crate) fn new(shared: &Arc<Shared>, key: &str, chain: Chain) -> Self {
        let target = match crate::codec::validate_key(key) {
            Err(e) => Err(Failure::InvalidKey(e)),
            Ok(()) => mailbox_of::<A>(shared)
                .map(|m| (m, Arc::from(key)))
                .ok_or(Failure::NotRegistered(A::NAME)),
        };
        Caller {
            shared: shared.clone(),
            target,
            shard: crate::codec::shard_of(A::NAME, key),
            chain,
            ids: None,
            timeout: None,
            routed: false,
        }
    }

    /// The same handle, for a call another node routed here: where this node does not serve
    /// the shard, it fails (`NotOwner`, `Unavailable`) for the caller to retry.
    #[cfg(feature = "cluster")]
    pub(crate) fn routed(mut self) -> Self {
        self.routed = true;
        self
    }

    /// The runtime state this handle calls through.
    #[cfg(feature = "cluster")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The shard of the actor this handle addresses.
    #[cfg(feature = "cluster")]
    pub(crate) fn shard(&self) -> u16 {
        self.shard
    }

    /// The call chain this handle's calls carry.
    #[cfg(feature = "cluster")]
    pub(crate) fn chain(&self) -> &Chain {
        &self.chain
    }

    /// How long a call waits for its reply.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.shared.config.call_timeout)
    }

    /// The same handle, its calls made exactly once under `ids` (a turn's).
    pub(crate) fn with_ids(mut self, ids: Option<Arc<CallIds>>) -> Self {
        self.ids = ids;
        self
    }

    /// Sends `message` to the actor and waits for its durable reply.
    ///
    /// From a turn that may run again, a call to a handler that may change its actor's state
    /// and whose result can be stored is made exactly once ([`CallIds`]); read-only handlers
    /// run again, as do calls whose result is not `Serialize` and `Deserialize`.
    pub async fn call(&self, message: A::Message) -> Reply {
        let (handler, mutates) = A::__describe(&message);
        match &self.ids {
            // Boxed: only turns that may run again take this path, and the future of every
            // other call stays small.
            Some(ids) if mutates && A::__storable_reply(handler) => {
                Box::pin(self.call_once(ids, message, handler)).await
            }
            _ => self.request(Body::Call(message), handler).await,
        }
    }

    /// A call under the next of `ids`: run, or answered from the result the callee kept
    /// when the calling turn ran before.
    async fn call_once(&self, ids: &CallIds, message: A::Message, handler: &'static str) -> Reply {
        let (id, position) = ids.next();
        let request = match A::__encode_message(&message) {
            Ok((name, args)) => request_hash(name, &args),
            Err(e) => {
                return Err(Failure::Invalid(format!(
                    "cannot encode a call to `{}`: {e}",
                    A::NAME
                )));
            }
        };
        let body = Body::Keyed(Box::new(KeyedCall {
            message,
            key: id,
            request,
            format: ReplyFormat::Postcard,
            answer: Answer::Value,
        }));
        let value = self.request(body, handler).await?;
        let outcome = match value.downcast::<KeyedOutcome>() {
            Ok(outcome) => *outcome,
            // Run now: the handler's own value.
            Err(value) => return Ok(value),
        };
        let (ok, body) = match outcome {
            KeyedOutcome::Replayed { ok, body } | KeyedOutcome::Fresh { ok, body } => (ok, body),
            KeyedOutcome::Conflict => {
                return Err(Failure::Invalid(format!(
                    "call {position} of this turn, to `{handler}` of {self:?}, had other \
                     arguments or another handler when the turn ran before: a turn that runs \
                     again must make the same calls in the same order"
                )));
            }
        };
        match A::__decode_reply(handler, ok, &body) {
            Some(Ok(value)) => Ok(value),
            Some(Err(reason)) => Err(Failure::Decode(DecodeError {
                actor: A::NAME,
                key: self.key().to_string(),
                reason: format!("the kept result of a call to `{handler}`: {reason}"),
            })),
            None => Err(Failure::Invalid(format!(
                "the kept result of a call to `{handler}` of {self:?} cannot be read back"
            ))),
        }
    }

    /// Backpressure on calls from outside: while more than half the outbox is taken, waits
    /// up to [`BACKPRESSURE_WAIT`] (or the call's timeout if shorter) for the dispatcher to
    /// deliver enough to bring it to half or below, then goes on (a full outbox still
    /// refuses sends). Under sustained load that slows the callers to the pace of the
    /// deliveries; an outbox that does not drain (its messages failing, or parked) delays
    /// each call by that much, no more. Calls made by turns never wait: they hold an actor.
    #[cold]
    async fn wait_for_deliveries(&self) {
        let backlog = &self.shared.backlog;
        let drained = backlog.drained();
        let mut drained = std::pin::pin!(drained);
        // Registered before the check: a fall to half in between wakes it.
        drained.as_mut().enable();
        if !backlog.backed_up() {
            return;
        }
        // The runtime's timer: the caller may run on another executor.
        let give_up = {
            let _runtime = self.shared.tokio.enter();
            tokio::time::sleep(self.call_timeout().min(BACKPRESSURE_WAIT))
        };
        tokio::select! {
            () = drained => {}
            () = give_up => {}
        }
    }

    /// Queues `body` on the actor and waits (bounded by this handle's timeout, else the
    /// runtime's call timeout) for its gated reply. `handler` names the turn in errors.
    ///
    /// Giving up stops only the wait: the turn is never cut short by it. One that has
    /// started runs on and commits in full or rolls back in full, as it would have; one still
    /// queued finds its caller gone and does not run (`activation::turn`).
    pub(crate) async fn request(&self, body: Body<A>, handler: &'static str) -> Reply {
        let (_, key) = self.target.as_ref().map_err(Clone::clone)?;
        if let Some(cycle) = find_cycle(&self.chain, A::NAME, key) {
            return Err(Failure::Cycle(cycle));
        }
        // Served here? (The turn checks the epoch it runs under again.) Else, in a cluster,
        // the call goes to the node that serves it.
        let served = local_epoch(&*self.shared.placement, self.shard);
        #[cfg(feature = "cluster")]
        if served.is_err()
            && !self.routed
            && let Some(forward) = self.shared.forward.get()
        {
            // Boxed: the future of every local call stays small.
            return Box::pin(route::route(self, forward.clone(), body, handler)).await;
        }
        served?;
        let (mailbox, key) = self.target.as_ref().map_err(Clone::clone)?;
        if self.chain.is_none() && self.shared.backlog.backed_up() {
            self.wait_for_deliveries().await;
        }
        self.shared.admission.admit(self.chain.is_some())?;
        // Lives until the reply: the call's span, parent of the turn's wherever it runs.
        let span = tracing::debug_span!("call", actor = A::NAME, key = &**key, handler);
        let (tx, mut rx) = oneshot::channel();
        let envelope = Envelope {
            body,
            chain: self.chain.clone(),
            reply: Some(Replier::Call(tx)),
            delivery: None,
            span: (!span.is_disabled()).then(|| Box::new(span.clone())),
        };
        if let Err((failure, _)) = mailbox.post(&self.shared, key, envelope) {
            self.shared.admission.turn_finished();
            return Err(failure);
        }
        // The reply is often ready already (the turn ran here): then no timer is armed.
        // (The timeout counts from here: what ran here already was the turn's CPU time, not
        // a wait.)
        let replied = match futures::poll!(&mut rx) {
            std::task::Poll::Ready(replied) => replied,
            std::task::Poll::Pending => {
                let timeout = self.call_timeout();
                // The runtime's timer: the caller may run on another executor.
                let bounded = {
                    let _runtime = self.shared.tokio.enter();
                    tokio::time::timeout(timeout, rx)
                };
                match bounded.await {
                    Ok(replied) => replied,
                    Err(_) => return Err(Failure::Timeout(timeout)),
                }
            }
        };
        // `Err`: the turn unwound without answering (a panic outside the handler).
        replied.unwrap_or(Err(Failure::Panicked {
            actor: A::NAME,
            handler,
        }))
    }
}

impl<A: Actor> std::fmt::Debug for Caller<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", A::NAME, self.key())
    }
}

/// A durable send from outside any actor: what [`Runtime::send`](crate::Runtime::send)'s
/// methods deliver to. Resolves once the message is in the outbox and durable.
#[doc(hidden)]
pub struct OutsideSend<A> {
    shared: Arc<Shared>,
    key: String,
    idempotency: Option<String>,
    _target: PhantomData<fn() -> A>,
}

impl<A> OutsideSend<A> {
    pub(crate) fn new(shared: &Arc<Shared>, key: String, idempotency: Option<String>) -> Self {
        OutsideSend {
            shared: shared.clone(),
            key,
            idempotency,
            _target: PhantomData,
        }
    }
}

impl<A: Handlers> Deliver<A> for OutsideSend<A> {
    type Output = BoxFuture<'static, Result<(), CallError>>;

    fn deliver(self, message: A::Message) -> Self::Output {
        Box::pin(async move {
            let shared = self.shared;
            if let Some(key) = &self.idempotency {
                crate::codec::validate_idempotency_key(key).map_err(CallError::Invalid)?;
            }
            let record = message_record::<A>(&shared, self.key, &message, self.idempotency)
                .map_err(CallError::from_failure)?;
            let target_shard = crate::codec::shard_of(A::NAME, &record.target.key);
            let value = encode_envelope(&record)
                .map_err(|e| CallError::Invalid(format!("cannot encode a send: {e}")))?;
            shared
                .admission
                .admit(false)
                .map_err(CallError::from_failure)?;
            // Once admitted, the send runs to its end in its own task even if the caller
            // stops waiting: the in-flight count, the outbox place and the hand-over to the
            // dispatcher must not depend on the caller's future being polled.
            let task = shared.clone();
            let sent = shared.tokio.spawn(async move {
                let shared = task;
                let sent = async {
                    shared.backlog.reserve(1)?;
                    // No sender: the entry belongs to its target's shard.
                    let id = shared.backlog.next_id(target_shard);
                    let write = KeyWrite {
                        space: Space::Outbox,
                        key: id.key(),
                        value: Some(value),
                    };
                    let epoch =
                        local_epoch(&*shared.placement, target_shard).inspect_err(|_| {
                            // Never written.
                            shared.backlog.release(1);
                            shared.backlog.settled([id]);
                        })?;
                    let fence = Fence {
                        shard: target_shard,
                        epoch,
                    };
                    let ticket = shared
                        .committer
                        .submit(vec![write], None, Some(fence))
                        .await;
                    match ticket.wait().await {
                        Ok(()) => {
                            shared.committed(vec![(id, record)]);
                            Ok(())
                        }
                        Err(failure) => {
                            shared.recover_unsure(vec![(id, record)]);
                            Err(failure)
                        }
                    }
                }
                .await;
                shared.admission.turn_finished();
                sent
            });
            let sent = sent.await.unwrap_or_else(|e| {
                Err(Failure::Storage(crate::error::StorageError::new(format!(
                    "the send task failed: {e}"
                ))))
            });
            sent.map_err(CallError::from_failure)
        })
    }
}

fn downcast<T: 'static>(value: Box<dyn Any + Send>) -> T {
    match value.downcast::<T>() {
        Ok(v) => *v,
        // The generated dispatch and handle agree on every type; this is a macro bug.
        Err(_) => unreachable!("gears: handler returned an unexpected type"),
    }
}

/// Types the reply of a handler that cannot fail.
#[doc(hidden)]
pub fn finish<T: 'static>(reply: Reply) -> Result<T, CallError> {
    reply.map(downcast::<T>).map_err(CallError::from_failure)
}

/// Types the reply of a handler returning `Result<T, E>`.
#[doc(hidden)]
pub fn finish_result<T: 'static, E: 'static>(reply: Reply) -> Result<T, CallError<E>> {
    match reply {
        Ok(value) => downcast::<Result<T, E>>(value).map_err(CallError::Handler),
        Err(failure) => Err(CallError::from_failure(failure)),
    }
}

/// The request hash of a call made under an id (a call of a turn that may run again, or a
/// call routed to another node): its handler and arguments. The same id with another
/// request is a conflict.
pub(crate) fn request_hash(handler: &str, args: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(handler.len() + 1 + args.len());
    bytes.extend_from_slice(handler.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(args);
    xxh3_64(&bytes)
}
