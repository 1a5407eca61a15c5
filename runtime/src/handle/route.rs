//! The caller's side of a call to an actor another node serves (feature `cluster`): what
//! [`Caller::request`] does when the placement says its actor's shard is elsewhere.
//!
//! A routed call is retried, until the caller's timeout, whenever its answer says it did not
//! run (nobody serves the shard right now, the node that answered no longer does, its turn
//! was fenced) and, for calls that are safe to run again, also when the outcome is unknown (no
//! answer in time). A call that may change its actor's state goes under an idempotency id of
//! its own, so that the node that runs it keeps its result with the turn: a retry that reaches
//! it, or the shard's next owner, is answered from that result instead of running it again.
//! If the shard comes to this node meanwhile, the call runs here. The format is `wire.rs`'s;
//! the node that serves the shard runs it in `remote.rs`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::actor::Handlers;
use crate::context::Chain;
use crate::error::{DecodeError, Failure};
use crate::mailbox::{Answer, Body, KeyedCall, KeyedOutcome, ReplyFormat};
use crate::placement::{Forward, Hop, local_epoch};
use crate::wire::{Done, Op, RoutedCall, RoutedReply, WireFailure, decode, encode, fresh_id};

use super::{Caller, Reply, request_hash};

/// The failure as a call to `A` reports it here.
pub(crate) fn failure_of<A: Handlers>(failure: WireFailure) -> Failure {
    failure.into_failure_of(A::NAME, handler_name::<A>)
}

/// `A`'s own name for its handler `name` (the names in failures are static).
fn handler_name<A: Handlers>(name: &str) -> &'static str {
    A::__handler_infos()
        .iter()
        .find(|h| h.name == name)
        .map_or("(unknown)", |h| h.name)
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
            // (Boxed: `request` is what called this.)
            let value = Box::pin(caller.request(body, handler)).await?;
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
                Ok(Err(failure)) if failure.not_run() => last = failure_of::<A>(failure),
                // Its own wait ended (a call it made waited on a node that died, ...).
                Ok(Err(WireFailure::Timeout { .. })) if retry_safe => {
                    last = Failure::Timeout(timeout);
                }
                Ok(Err(failure)) => return Err(failure_of::<A>(failure)),
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
        shared.sleep(backoff.min(remaining)).await;
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

pub(crate) fn mismatched<A: Handlers>() -> Failure {
    Failure::Invalid(format!(
        "the node that serves `{}` answered another kind of request",
        A::NAME
    ))
}
