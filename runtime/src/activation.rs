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
}

/// What an activation keeps between turns. The pending write outlives the state: after an
/// unload (panic, undecodable record, failed commit) the next load waits for it, and replies
/// stay gated on it.
pub(crate) struct Activation<A> {
    pub(crate) loaded: Option<Loaded<A>>,
    /// The latest write of this actor while it may not be durable yet.
    pub(crate) last_write: Option<Arc<Ticket>>,
}

impl<A> Activation<A> {
    pub(crate) fn empty() -> Self {
        Activation {
            loaded: None,
            last_write: None,
        }
    }

    /// Nothing of this activation is waiting to become durable.
    pub(crate) fn settled(&self) -> bool {
        self.last_write.as_ref().is_none_or(|t| t.settled())
    }
}

/// Most bytes of one state record (fjall takes values below 4 GiB; far less is sane).
const MAX_RECORD: usize = 1 << 30;

/// Drains the slot's queue, then puts the activation back and ends.
pub(crate) async fn run<A: Handlers>(shared: Arc<Shared>, slot: Arc<Slot<A>>) {
    let mut activation = std::mem::replace(&mut slot.inner.lock().activation, Activation::empty());
    loop {
        let envelope = {
            let mut inner = slot.inner.lock();
            match inner.queue.pop_front() {
                Some(envelope) => envelope,
                None => {
                    inner.activation = activation;
                    inner.running = false;
                    return;
                }
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
        shared.turn_finished();
    }
}

async fn turn<A: Handlers>(
    shared: &Arc<Shared>,
    slot: &Slot<A>,
    activation: &mut Activation<A>,
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
    match &activation.last_write {
        // A write failed: memory holds a state that never became durable.
        Some(t) if t.failed() => {
            tracing::warn!(actor = A::NAME, key = %slot.key, "commit failed; reloading from the store");
            activation.loaded = None;
        }
        Some(t) if t.settled() => activation.last_write = None,
        _ => {}
    }
    if activation.loaded.is_none() {
        match load::<A>(shared, slot, activation.last_write.take()).await {
            Ok(l) => activation.loaded = Some(l),
            Err(failure) => {
                send(reply, Err(failure));
                return;
            }
        }
    }
    let Some(l) = activation.loaded.as_mut() else {
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
            reset(&mut activation.loaded, slot);
            Err(Failure::Timeout(timeout))
        }
        Ok(Err(_panic)) => {
            shared.metrics.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(actor = A::NAME, key = %slot.key, handler, "handler panicked; state reset");
            reset(&mut activation.loaded, slot);
            Err(Failure::Panicked {
                actor: A::NAME,
                handler,
            })
        }
        Ok(Ok(output)) if !mutates => Ok(output.value),
        Ok(Ok(output)) if output.failed => {
            reset(&mut activation.loaded, slot);
            Ok(output.value)
        }
        Ok(Ok(output)) => match commit(shared, slot, l, &mut activation.last_write).await {
            Ok(()) => Ok(output.value),
            Err(failure) => {
                reset(&mut activation.loaded, slot);
                Err(failure)
            }
        },
    };

    match reply {
        Some(tx) => release_after(
            activation.last_write.as_ref(),
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
    last_write: &mut Option<Arc<Ticket>>,
) -> Result<(), Failure> {
    let record = crate::codec::encode_state(A::SCHEMA, &l.state)
        .map_err(|e| Failure::Storage(StorageError::new(format!("cannot encode state: {e}"))))?;
    if l.record.as_deref() == Some(&record[..]) {
        return Ok(());
    }
    if record.len() > MAX_RECORD {
        return Err(Failure::Storage(StorageError::new(format!(
            "the state of {}({:?}) encodes to {} bytes, over the limit of {MAX_RECORD}",
            A::NAME,
            &*slot.key,
            record.len()
        ))));
    }
    let record: Arc<[u8]> = record.into();
    let ticket = shared
        .committer
        .submit(
            slot.store_key.clone(),
            Some(record.clone()),
            last_write.take(),
        )
        .await;
    l.record = Some(record);
    *last_write = Some(ticket);
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

/// Reads the actor's record from the store (off the async workers) and decodes it, after
/// the actor's pending write (if any) has settled, so the store is the truth.
async fn load<A: Handlers>(
    shared: &Shared,
    slot: &Slot<A>,
    pending: Option<Arc<Ticket>>,
) -> Result<Loaded<A>, Failure> {
    if let Some(ticket) = pending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ticket.gate(Box::new(move |_| {
            let _ = tx.send(());
        }));
        let _ = rx.await;
    }
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
        });
    };
    match crate::codec::decode_state::<A>(&bytes) {
        Ok((_schema, state)) => Ok(Loaded {
            state,
            record: Some(bytes.into()),
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
