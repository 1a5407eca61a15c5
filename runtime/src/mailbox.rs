//! What travels to an activation and back: the envelope of one message ([`Envelope`]: what
//! to do, the call chain, who hears the outcome, and where a durable message came from), and
//! the [`Mailbox`] a typed handle posts it to. Part of the contract between the generated
//! code and the runtime, with `actor`, `context` and `handle`.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::actor::{Actor, Handlers, PostcardReply};
use crate::codec::{ActorMeta, ActorRef, Subscriber};
use crate::context::Chain;
use crate::error::Failure;
use crate::handle::Reply;
use crate::shared::{Delivery, DiscardTimer, DoneFn, Shared};

/// What an activation is asked to do.
pub(crate) enum Body<A: Handlers> {
    /// Run a handler.
    Call(A::Message),
    /// Add a durable subscriber to this actor's events.
    Subscribe(Box<Subscriber>),
    /// Remove a durable subscriber.
    Unsubscribe(Box<ActorRef>),
    /// An idempotent call: answered from the stored result of an earlier call with the same
    /// key, else run and its result stored with the turn.
    Keyed(Box<KeyedCall<A>>),
    /// Read the state without running a handler.
    Read(ReadFn<A>),
    /// Delete the actor: state, timers, subscriptions.
    Delete,
    /// Drop one of its timers, parked as a dead letter, for good.
    DiscardTimer(Box<DiscardTimer>),
}

/// A read of an actor's state and metadata, run in a turn of its own.
pub(crate) type ReadFn<A> = Box<dyn FnOnce(&A, &ActorMeta) -> Box<dyn Any + Send> + Send>;

/// How the result of a [`KeyedCall`] is encoded, to keep and to answer with: postcard for
/// calls between actors (read back as the handler's own types), JSON for the HTTP ingress
/// (sent on as it is). A value, not a function, so that a call can name it to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyFormat {
    Postcard,
    #[cfg(feature = "http")]
    Json,
}

impl ReplyFormat {
    /// `handler`'s value (`T`, or `Result<T, E>`) → whether it is a success, and its bytes.
    /// (The JSON encoder of `A` is its registration's, which the ingress made.)
    pub(crate) fn encode<A: Handlers>(
        self,
        shared: &Shared,
        handler: &str,
        value: &(dyn Any + Send),
    ) -> Result<(bool, Vec<u8>), String> {
        #[cfg(not(feature = "http"))]
        let _ = shared;
        match self {
            ReplyFormat::Postcard => A::__encode_reply(handler, value, PostcardReply)?,
            #[cfg(feature = "http")]
            ReplyFormat::Json => match shared.by_name(A::NAME).and_then(|r| r.json_reply) {
                Some(encode) => encode(handler, value),
                None => Err(format!("`{}` has no JSON face", A::NAME)),
            },
        }
    }
}

/// A call with a caller-chosen idempotency key.
pub(crate) struct KeyedCall<A: Handlers> {
    pub(crate) message: A::Message,
    pub(crate) key: String,
    /// A hash of the request: the same key with another request is a conflict.
    pub(crate) request: u64,
    pub(crate) format: ReplyFormat,
    /// How a call that runs now is answered.
    pub(crate) answer: Answer,
}

/// How a [`KeyedCall`] that runs its handler now is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// With [`KeyedOutcome::Fresh`]: the encoded result (the HTTP ingress sends it on).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Encoded,
    /// With the handler's own value (a call between actors uses it as it is).
    Value,
}

/// The answer to a [`KeyedCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyedOutcome {
    /// The handler ran now (`ok: false`: it returned an error); `body` is its encoded result.
    Fresh { ok: bool, body: Vec<u8> },
    /// An earlier call with this key and request ran it: its stored result.
    Replayed { ok: bool, body: Vec<u8> },
    /// The key was used before for a different request.
    Conflict,
}

/// Who hears the outcome of a turn.
pub(crate) enum Replier {
    /// A caller waiting for the handler's value.
    Call(oneshot::Sender<Reply>),
    /// The dispatcher of a durable message.
    Done(Done),
}

impl Replier {
    pub(crate) fn done(done: DoneFn) -> Replier {
        Replier::Done(Done(Some(done)))
    }

    /// The caller gave up (timed out): nobody waits for the turn.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, Replier::Call(tx) if tx.is_closed())
    }

    pub(crate) fn send(self, reply: Reply) {
        match self {
            Replier::Call(tx) => {
                let _ = tx.send(reply);
            }
            Replier::Done(mut done) => {
                let (outcome, value) = match reply {
                    Ok(value) => (Ok(()), Some(value)),
                    Err(failure) => (Err(failure), None),
                };
                // Report before dropping the handler's value: a user `Drop` that panics must
                // not lose the report.
                if let Some(done) = done.0.take() {
                    done(outcome);
                }
                drop(value);
            }
        }
    }
}

/// The dispatcher's callback, which must hear exactly once: if a turn unwinds before
/// answering (a panic outside the handler, before anything was submitted), dropping it
/// reports a failure, so the message is retried instead of being forgotten.
pub(crate) struct Done(pub(crate) Option<DoneFn>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(Failure::Invalid(
                "the turn unwound before answering (a panic outside the handler)".into(),
            )));
        }
    }
}

/// One message for an activation.
pub(crate) struct Envelope<A: Handlers> {
    pub(crate) body: Body<A>,
    pub(crate) chain: Chain,
    pub(crate) reply: Option<Replier>,
    /// Boxed: rare, and an envelope's size is paid by every queue slot.
    pub(crate) delivery: Option<Box<Delivery>>,
    /// The caller's span, parent of the turn's (only while spans are enabled; boxed, as
    /// `delivery`).
    pub(crate) span: Option<Box<tracing::Span>>,
}

/// An envelope that was not queued, and why.
pub(crate) type Refused<A> = (Failure, Box<Envelope<A>>);

/// Where a typed handle's messages go: the activations of one actor type. The directory
/// implements it; the contract names only this trait, so it does not depend on how turns run.
///
/// Bounded by `Actor` only, so that a handle can be declared for a type before (or without)
/// its handlers; only a type with handlers can post.
pub(crate) trait Mailbox<A: Actor>: Send + Sync {
    /// Queues `envelope` on the activation of `key` (activating it if needed), and if that
    /// activation was idle, runs its turns, starting in the calling task. On `Err` the
    /// envelope comes back, unqueued.
    fn post(
        &self,
        shared: &Arc<Shared>,
        key: &Arc<str>,
        envelope: Envelope<A>,
    ) -> Result<(), Refused<A>>
    where
        A: Handlers;
}

/// The mailbox of type `A`, if it is registered.
pub(crate) fn mailbox_of<A: Handlers>(shared: &Shared) -> Option<Arc<dyn Mailbox<A>>> {
    shared
        .typed_mailbox(std::any::TypeId::of::<A>())?
        .downcast_ref::<Arc<dyn Mailbox<A>>>()
        .cloned()
}
