//! Turns: the task that drains one activation's queue, one message at a time.
//!
//! The task exists only while the queue has messages. For each message it runs the handler
//! on the state (panics caught, bounded by the call timeout), hands a changed state to the
//! commit pipeline without waiting for it, and gates the reply on the actor's latest write.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tracing::Instrument;

use crate::actor::Handlers;
use crate::commit::{Ticket, release_after};
use crate::context::Context;
use crate::directory::{Envelope, Slot};
use crate::error::{DecodeError, Failure, StorageError};
use crate::handle::Reply;
use crate::runtime::Shared;

/// An activation's state in memory.
pub(crate) struct Loaded<A> {
    state: A,
    /// The record of the state as last written (or loaded): what a rollback returns to, and
    /// what a turn's result is compared with to skip writes that change nothing.
    record: Option<Arc<[u8]>>,
    /// The latest write of this actor, while it may still be pending.
    pub(crate) last_write: Option<Arc<Ticket>>,
}

/// Drains the slot's queue, then puts the state back and ends.
pub(crate) async fn run<A: Handlers>(shared: Arc<Shared>, slot: Arc<Slot<A>>) {
    let mut loaded = slot.inner.lock().state.take();
    loop {
        let envelope = {
            let mut inner = slot.inner.lock();
            match inner.queue.pop_front() {
                Some(envelope) => envelope,
                None => {
                    inner.state = loaded;
                    inner.running = false;
                    return;
                }
            }
        };
        turn(&shared, &slot, &mut loaded, envelope).await;
        shared.turn_finished();
    }
}

async fn turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    loaded: &mut Option<Loaded<A>>,
    envelope: Envelope<A>,
) {
    let Envelope {
        message,
        chain,
        reply,
    } = envelope;
    // The caller gave up (timeout): do not run a handler nobody waits for.
    if reply.as_ref().is_some_and(|r| r.is_closed()) {
        return;
    }
    // A write of this activation failed: its memory holds state that never became durable.
    if loaded
        .as_ref()
        .is_some_and(|l| l.last_write.as_ref().is_some_and(|t| t.failed()))
    {
        tracing::warn!(actor = A::NAME, key = %slot.key, "commit failed; reloading from the store");
        *loaded = None;
    }
    if loaded.is_none() {
        match load::<A>(shared, slot).await {
            Ok(l) => *loaded = Some(l),
            Err(failure) => {
                send(reply, Err(failure));
                return;
            }
        }
    }
    let Some(l) = loaded.as_mut() else {
        return;
    };

    let (handler, mutates) = A::__describe(&message);
    let ctx = Context::new(shared.clone(), A::NAME, slot.key.clone(), chain);
    let span = tracing::debug_span!("turn", actor = A::NAME, key = %slot.key, handler);
    let timeout = shared.config.call_timeout;
    let ran = tokio::time::timeout(
        timeout,
        AssertUnwindSafe(l.state.__dispatch(&ctx, message)).catch_unwind(),
    )
    .instrument(span)
    .await;
    drop(ctx);
    shared.metrics.turns.fetch_add(1, Ordering::Relaxed);

    let result: Reply = match ran {
        Err(_) => {
            tracing::warn!(actor = A::NAME, key = %slot.key, handler, ?timeout, "handler timed out; state reset");
            reset(loaded, slot);
            Err(Failure::Timeout(timeout))
        }
        Ok(Err(_panic)) => {
            shared.metrics.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(actor = A::NAME, key = %slot.key, handler, "handler panicked; state reset");
            reset(loaded, slot);
            Err(Failure::Panicked {
                actor: A::NAME,
                handler,
            })
        }
        Ok(Ok(output)) if !mutates => Ok(output.value),
        Ok(Ok(output)) if output.failed => {
            reset(loaded, slot);
            Ok(output.value)
        }
        Ok(Ok(output)) => match commit(shared, slot, l).await {
            Ok(()) => Ok(output.value),
            Err(failure) => {
                reset(loaded, slot);
                Err(failure)
            }
        },
    };

    let gate = loaded.as_ref().and_then(|l| l.last_write.as_ref());
    match reply {
        Some(tx) => release_after(
            gate,
            Box::new(move |durable| {
                let _ = tx.send(durable.and(result));
            }),
        ),
        None => drop(result),
    }
}

/// Encodes the state and, if it changed, hands it to the committer.
async fn commit<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    l: &mut Loaded<A>,
) -> Result<(), Failure> {
    let record: Arc<[u8]> = crate::codec::encode_state(A::SCHEMA, &l.state)
        .map_err(|e| Failure::Storage(StorageError::new(format!("cannot encode state: {e}"))))?
        .into();
    if l.record.as_deref() == Some(&*record) {
        return Ok(());
    }
    let ticket = shared
        .committer
        .submit(
            slot.store_key.clone(),
            Some(record.clone()),
            l.last_write.take(),
        )
        .await;
    l.record = Some(record);
    l.last_write = Some(ticket);
    Ok(())
}

/// Rolls the state back to its last written record (which stays gated on its write).
fn reset<A: Handlers>(loaded: &mut Option<Loaded<A>>, slot: &Slot<A>) {
    let Some(l) = loaded.as_mut() else {
        return;
    };
    let restored = match &l.record {
        None => Ok(A::default()),
        Some(bytes) => crate::codec::decode_state::<A>(bytes).map(|(_, state)| state),
    };
    match restored {
        Ok(state) => l.state = state,
        Err(reason) => {
            tracing::error!(actor = A::NAME, key = %slot.key, %reason, "cannot restore state; unloading");
            *loaded = None;
        }
    }
}

/// Reads the actor's record from the store (off the async workers) and decodes it.
async fn load<A: Handlers>(shared: &Shared, slot: &Slot<A>) -> Result<Loaded<A>, Failure> {
    let store = shared.store()?;
    let key = slot.store_key.clone();
    let bytes = tokio::task::spawn_blocking(move || store.get_state(&key))
        .await
        .map_err(|e| Failure::Storage(StorageError::new(format!("load task failed: {e}"))))?
        .map_err(Failure::Storage)?;
    let Some(bytes) = bytes else {
        return Ok(Loaded {
            state: A::default(),
            record: None,
            last_write: None,
        });
    };
    match crate::codec::decode_state::<A>(&bytes) {
        Ok((_schema, state)) => Ok(Loaded {
            state,
            record: Some(bytes.into()),
            last_write: None,
        }),
        Err(reason) => Err(Failure::Decode(DecodeError {
            actor: A::NAME,
            key: slot.key.to_string(),
            reason,
        })),
    }
}

fn send(reply: Option<tokio::sync::oneshot::Sender<Reply>>, value: Reply) {
    if let Some(tx) = reply {
        let _ = tx.send(value);
    }
}
