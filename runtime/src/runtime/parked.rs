//! What an operator does with dead letters ([`Runtime::dead_letters`] and its retry and
//! discard): the runtime side of [`crate::dead_letters`], which keeps the list and the policy.

use std::sync::Arc;

use crate::codec::{OutboxId, encode_record, outbox_message, split_record};
use crate::commit::KeyWrite;
use crate::dead_letters::{DeadLetter, DeadLetterId, DeadLetterPage, Stored};
use crate::error::{CallError, Failure};
use crate::placement::{Fence, local_epoch};
use crate::runtime::Runtime;
use crate::shared::{DiscardTimer, Shared, done_channel};
use crate::store::Space;

impl Runtime {
    /// Up to `limit` of the messages parked in this run (sends and timer firings that failed
    /// every attempt or could not be delivered), after the id `after` (exclusive), in id
    /// order; pass the page's [`next`](DeadLetterPage::next) as `after` for the next page.
    /// See [`retry_dead_letter`](Self::retry_dead_letter) and
    /// [`discard_dead_letter`](Self::discard_dead_letter) for what to do with them.
    pub fn dead_letters(&self, after: Option<DeadLetterId>, limit: usize) -> DeadLetterPage {
        self.shared.dead_letters.page(after, limit)
    }

    /// Delivers a parked message again, as new: its attempts start from zero (if it fails
    /// every attempt again it is parked again, under the same id). Returns `Ok(false)` if no
    /// message with this id is parked (never, or already retried or discarded).
    ///
    /// # Errors
    /// `Overloaded` if a send would overflow the outbox, `ShuttingDown`, `Storage` if its
    /// entry cannot be read; the message stays parked.
    pub async fn retry_dead_letter(&self, id: DeadLetterId) -> Result<bool, CallError> {
        let shared = &self.shared;
        let Some(parked) = shared.dead_letters.take(id) else {
            return Ok(false);
        };
        let retried = match &parked.stored {
            Stored::Send(entry) => retry_send(shared, *entry).await,
            Stored::Timer(_) => match shared.services.get() {
                Some(host) => host.unpark_timer(id, id.shard()),
                None => Err(Failure::ShuttingDown),
            },
        };
        match retried {
            Ok(()) => {
                tracing::info!(%id, "retrying a dead letter");
                Ok(true)
            }
            Err(failure) => {
                shared.dead_letters.put_back(parked);
                Err(CallError::from_failure(failure))
            }
        }
    }

    /// Deletes a parked message for good, durably: it is not delivered again, in this run or
    /// any later one. A send's outbox entry is deleted through the committer; a timer by a
    /// turn of its actor, which also removes it from the actor's timers (a periodic timer is
    /// cancelled), or, if its type is not registered in this run or its key is invalid, by
    /// deleting the stored timer alone. Returns once the deletion is durable, `Ok(false)` if
    /// no message with this id is parked.
    ///
    /// # Errors
    /// `Storage`, `ShuttingDown`, or a failure of the actor's turn (its record cannot be
    /// decoded); the message stays parked.
    pub async fn discard_dead_letter(&self, id: DeadLetterId) -> Result<bool, CallError> {
        let shared = &self.shared;
        let Some(parked) = shared.dead_letters.take(id) else {
            return Ok(false);
        };
        let discarded = match &parked.stored {
            Stored::Send(entry) => {
                let write = shared.processed_write(entry.key());
                commit(shared, vec![write], entry.shard).await
            }
            Stored::Timer(key) => discard_timer(shared, &parked.letter, key.clone()).await,
        };
        match discarded {
            Ok(()) => {
                if let (Stored::Timer(_), Some(host)) = (&parked.stored, shared.services.get()) {
                    // Nothing left to fire: the service forgets it was parked (if it has
                    // stopped, there is nothing to forget).
                    let _ = host.unpark_timer(id, id.shard());
                }
                tracing::info!(%id, actor = %parked.letter.actor, key = %parked.letter.key, "discarded a dead letter");
                Ok(true)
            }
            Err(failure) => {
                shared.dead_letters.put_back(parked);
                Err(CallError::from_failure(failure))
            }
        }
    }
}

/// Hands a parked outbox entry, read again from the store, back to the dispatcher.
async fn retry_send(shared: &Arc<Shared>, entry: OutboxId) -> Result<(), Failure> {
    let stored = shared
        .with_store("dead letter read", move |store| store.outbox_entry(entry))
        .await?;
    // Processed since: nothing is left to deliver.
    let Some((key, value)) = stored else {
        return Ok(());
    };
    let record = outbox_message(entry, &key, &value)
        .map_err(|reason| Failure::Invalid(format!("undecodable outbox entry: {reason}")))?;
    let Some(record) = record else {
        return Ok(());
    };
    let host = shared.services.get().ok_or(Failure::ShuttingDown)?;
    shared.backlog.reserve(1)?;
    host.committed(vec![(entry, record)]);
    Ok(())
}

/// Discards a parked timer by a turn of its actor, or, without one to run it, in the store
/// (see [`discard_unregistered`]).
async fn discard_timer(
    shared: &Arc<Shared>,
    letter: &DeadLetter,
    key: Arc<[u8]>,
) -> Result<(), Failure> {
    let shard = crate::codec::shard_of_key(&key);
    let due_ms = crate::codec::timer_due(&key).unwrap_or(0);
    let registry = shared
        .by_name(&letter.actor)
        .map(|r| r.registry.clone())
        .filter(|_| crate::codec::validate_key(&letter.key).is_ok());
    let Some(registry) = registry else {
        let name = letter.timer.clone().unwrap_or_default();
        return discard_unregistered(shared, key, shard, due_ms, name).await;
    };
    let (done, outcome) = done_channel();
    let timer = DiscardTimer {
        key,
        name: letter.timer.clone().unwrap_or_default(),
        due_ms,
    };
    registry.discard_timer(shared, &letter.key, timer, done)?;
    outcome.await
}

/// Discards a parked timer of an actor no turn can run for in this run (its type is not
/// registered, or its key is invalid), so nothing else writes its record: the timer leaves
/// the record, rewritten here with the same state bytes, and the timer index entry follows
/// it (`timers::sync_index`). A timer an older version stored apart, or one whose record
/// cannot be read, is deleted by its key.
async fn discard_unregistered(
    shared: &Arc<Shared>,
    key: Arc<[u8]>,
    shard: u16,
    due_ms: u64,
    name: String,
) -> Result<(), Failure> {
    let Some(state_key) = crate::codec::timer_key_state_key(&key).map(<[u8]>::to_vec) else {
        return delete(shared, Space::Timers, key, shard).await;
    };
    let read = state_key.clone();
    let record = shared
        .with_store("dead letter read", move |store| store.get_state(&read))
        .await?;
    let mut writes = Vec::new();
    if let Some(Ok((schema, mut meta, state))) = record.as_deref().map(split_record)
        && let Some(at) = meta
            .timers
            .iter()
            .position(|t| t.name == name && t.due_ms == due_ms && !t.stored_apart())
    {
        Arc::make_mut(&mut meta.timers).remove(at);
        // The rescan that unparking schedules looks at the entry's new place.
        crate::timers::sync_index(&state_key, &mut meta, true, &mut writes, &mut None);
        // `()` encodes to no bytes: the record's metadata, then its state as it was.
        let mut bytes: Vec<u8> = encode_record(schema, &meta, &()).map_err(Failure::Invalid)?;
        bytes.extend_from_slice(state);
        writes.push(KeyWrite {
            space: Space::State,
            key: state_key.into(),
            value: Some(bytes.into()),
        });
    } else {
        writes.push(KeyWrite {
            space: Space::Timers,
            key,
            value: None,
        });
    }
    commit(shared, writes, shard).await
}

/// Deletes one stored key of `shard` through the committer and waits until that is durable.
async fn delete(
    shared: &Arc<Shared>,
    space: Space,
    key: Arc<[u8]>,
    shard: u16,
) -> Result<(), Failure> {
    let write = KeyWrite {
        space,
        key,
        value: None,
    };
    commit(shared, vec![write], shard).await
}

/// Writes `writes` (all of `shard`) through the committer, fenced by this node's hold on
/// the shard, and waits until they are durable.
async fn commit(shared: &Arc<Shared>, writes: Vec<KeyWrite>, shard: u16) -> Result<(), Failure> {
    let fence = Fence {
        shard,
        epoch: local_epoch(&*shared.placement, shard)?,
    };
    shared
        .committer
        .submit(writes, None, Some(fence))
        .await
        .wait()
        .await
}
