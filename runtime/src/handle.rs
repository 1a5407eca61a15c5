//! The untyped core of every generated handle: validates the target, enqueues the message,
//! and waits (bounded by the call timeout) for the gated reply.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use tokio::sync::oneshot;

use crate::actor::{Deliver, Handlers};
use crate::codec::encode_envelope;
use crate::commit::KeyWrite;
use crate::context::message_record;
use crate::context::{Chain, find_cycle};
use crate::error::{CallError, Failure};
use crate::mailbox::{Body, Envelope, Mailbox, Replier, mailbox_of};
use crate::placement::{Fence, local_epoch};
use crate::shared::Shared;
use crate::store::Space;

/// What travels back from a turn to its caller.
#[doc(hidden)]
pub type Reply = Result<Box<dyn Any + Send>, Failure>;

/// Where a handle's calls go: its type's mailbox and its key.
type Target<A> = (Arc<dyn Mailbox<A>>, Arc<str>);

/// A cheap, cloneable reference to one actor, wrapped by the generated `<Type>Handle`.
#[doc(hidden)]
pub struct Caller<A: Handlers> {
    shared: Arc<Shared>,
    target: Result<Target<A>, Failure>,
    /// The actor's shard: every call asks the placement where it is served.
    shard: u16,
    chain: Chain,
}

impl<A: Handlers> Clone for Caller<A> {
    fn clone(&self) -> Self {
        Caller {
            shared: self.shared.clone(),
            target: self.target.clone(),
            shard: self.shard,
            chain: self.chain.clone(),
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
        }
    }

    /// The key this handle addresses.
    pub fn key(&self) -> &str {
        match &self.target {
            Ok((_, key)) => key,
            Err(_) => "",
        }
    }

    /// Sends `message` to the actor and waits for its durable reply.
    pub async fn call(&self, message: A::Message) -> Reply {
        let (handler, _) = A::__describe(&message);
        self.request(Body::Call(message), handler).await
    }

    /// Queues `body` on the actor and waits (bounded by the call timeout) for its gated
    /// reply. `handler` names the turn in errors.
    pub(crate) async fn request(&self, body: Body<A>, handler: &'static str) -> Reply {
        let (mailbox, key) = self.target.as_ref().map_err(Clone::clone)?;
        if let Some(cycle) = find_cycle(&self.chain, A::NAME, key) {
            return Err(Failure::Cycle(cycle));
        }
        // Served here? (The turn checks the epoch it runs under again.)
        local_epoch(&*self.shared.placement, self.shard)?;
        self.shared.admission.admit(self.chain.is_some())?;
        let (tx, mut rx) = oneshot::channel();
        let envelope = Envelope {
            body,
            chain: self.chain.clone(),
            reply: Some(Replier::Call(tx)),
            delivery: None,
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
                let timeout = self.shared.config.call_timeout;
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

impl<A: Handlers> std::fmt::Debug for Caller<A> {
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
                        value: Some(value.into()),
                    };
                    let fence = Fence {
                        shard: target_shard,
                        epoch: local_epoch(&*shared.placement, target_shard)?,
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
