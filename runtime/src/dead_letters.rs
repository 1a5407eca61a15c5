//! Dead letters: the one failure policy of durable messages (sends and timer firings), and
//! the view, retry and discard of the messages it parked.
//!
//! A delivered message whose turn fails (the handler panics or times out, a panic outside it,
//! an effect the runtime refuses for now) is retried after a growing backoff; after
//! [`MAX_ATTEMPTS`] failed turns it is *parked*. A message that cannot be delivered at all
//! (no registered type of its name, no handler of its name, arguments that do not decode, an
//! invalid key, a timer record this build cannot read) is parked at once. Failures that say
//! nothing about the message (the target busy or not served here, the store failing, the
//! target's own record undecodable) are retried without counting, so an overloaded runtime
//! never parks good messages. The outbox dispatcher ([`crate::outbox`]) and the timer service
//! ([`crate::timers`]) both ask [`after_failure`] what to do next.
//!
//! Parking stops retrying a message in this run, logs it once at error level and lists it
//! here: a summary (no payload: that stays in the store) under a [`DeadLetterId`] derived
//! from its stored key, so the same message has the same id in every run. The list holds at
//! most [`MAX_LISTED`] summaries; messages parked beyond that are counted
//! ([`DeadLetterPage::unlisted`]) and stay parked, unlisted, until the next start.
//!
//! A parked message stays in the store. An operator can retry it ([`Runtime::retry_dead_letter`]:
//! back to the dispatcher or timer service with its attempts reset) or discard it
//! ([`Runtime::discard_dead_letter`]: deleted durably, through the committer; a timer through
//! a turn of its actor, which also drops it from the actor's timers, and which cancels a
//! periodic timer for good). One neither retried nor discarded is delivered again at the next
//! start: deploy a fix, restart, and it runs; if it still fails it is parked again, under the
//! same id.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{ActorRef, OutboxId, OutboxRecord, decode_envelope};
use crate::commit::KeyWrite;
use crate::directory::{DiscardTimer, DoneFn};
use crate::error::{CallError, Failure};
use crate::metrics::Metrics;
use crate::placement::{Fence, local_epoch};
use crate::runtime::{Runtime, Shared};
use crate::store::Space;

/// Failed turns (panics, timeouts, refused effects) before a message is parked.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// Parked messages listed at once (each a summary of a few hundred bytes); more are counted.
pub const MAX_LISTED: usize = 10_000;
/// Wait before retrying a target that was busy (full mailbox, storage failing, stopping).
const BUSY_BACKOFF: Duration = Duration::from_millis(20);
/// Wait before retrying a target whose stored record cannot be decoded (until an operator or
/// a new build fixes it).
const STUCK_BACKOFF: Duration = Duration::from_secs(5);

/// What to do with a message whose delivery or turn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again after this long.
    Retry(Duration),
    /// Stop: park it.
    Park,
}

/// The policy of sends and timers alike, after a failed turn: counts the attempt in
/// `attempts` if the failure was the message's own, and says whether to retry or park.
pub(crate) fn after_failure(failure: &Failure, attempts: &mut u32) -> Next {
    let counted =
        !failure.is_busy() && !matches!(failure, Failure::Storage(_) | Failure::Decode(_));
    if !counted {
        return Next::Retry(match failure {
            Failure::Decode(_) => STUCK_BACKOFF,
            _ => BUSY_BACKOFF,
        });
    }
    *attempts += 1;
    if *attempts >= MAX_ATTEMPTS {
        Next::Park
    } else {
        // 200 ms, 400 ms, 800 ms, 1.6 s: parked within about 3 s of the first failure.
        Next::Retry(Duration::from_millis(100 << (*attempts).min(6)))
    }
}

/// What a dead letter was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterKind {
    /// A message in the outbox: a send, a subscription event, a subscription change.
    Send,
    /// A timer firing.
    Timer,
}

impl DeadLetterKind {
    /// `"send"` or `"timer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Send => "send",
            DeadLetterKind::Timer => "timer",
        }
    }
}

/// Names a parked message, by its place in the store: `send-<shard>-<sequence>` for an
/// outbox entry, `timer-<shard>-<due ms>-<hash of its key>` for a timer. The same message has
/// the same id in every run; parse one with [`str::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadLetterId(Id);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Id {
    Send { shard: u16, seq: u64 },
    Timer { shard: u16, due_ms: u64, tag: u64 },
}

impl DeadLetterId {
    pub(crate) fn send(id: OutboxId) -> DeadLetterId {
        DeadLetterId(Id::Send {
            shard: id.shard,
            seq: id.seq,
        })
    }

    /// The id of the timer stored under `key`.
    pub(crate) fn timer(key: &[u8]) -> DeadLetterId {
        DeadLetterId(Id::Timer {
            shard: crate::codec::shard_of_state_key(key),
            due_ms: crate::codec::timer_due(key).unwrap_or(0),
            tag: xxh3_64(key),
        })
    }

    /// Whether it names an outbox entry or a timer.
    pub fn kind(self) -> DeadLetterKind {
        match self.0 {
            Id::Send { .. } => DeadLetterKind::Send,
            Id::Timer { .. } => DeadLetterKind::Timer,
        }
    }

    fn shard(self) -> u16 {
        match self.0 {
            Id::Send { shard, .. } | Id::Timer { shard, .. } => shard,
        }
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Id::Send { shard, seq } => write!(f, "send-{shard}-{seq}"),
            Id::Timer { shard, due_ms, tag } => write!(f, "timer-{shard}-{due_ms}-{tag:016x}"),
        }
    }
}

/// A string that is not a [`DeadLetterId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid dead letter id {0:?}: expected `send-<shard>-<sequence>` or \
     `timer-<shard>-<due ms>-<16 hex digits>`"
)]
pub struct InvalidDeadLetterId(String);

impl FromStr for DeadLetterId {
    type Err = InvalidDeadLetterId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDeadLetterId(s.chars().take(100).collect());
        let mut parts = s.split('-');
        let kind = parts.next().ok_or_else(invalid)?;
        let shard: u16 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .filter(|&shard| shard < crate::codec::SHARDS)
            .ok_or_else(invalid)?;
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u64>().ok());
        let id = match kind {
            "send" => Id::Send {
                shard,
                seq: number(parts.next()).ok_or_else(invalid)?,
            },
            "timer" => Id::Timer {
                shard,
                due_ms: number(parts.next()).ok_or_else(invalid)?,
                tag: parts
                    .next()
                    .filter(|p| p.len() == 16)
                    .and_then(|p| u64::from_str_radix(p, 16).ok())
                    .ok_or_else(invalid)?,
            },
            _ => return Err(invalid()),
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(DeadLetterId(id))
    }
}

/// A parked message, as [`Runtime::dead_letters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// What to pass to [`Runtime::retry_dead_letter`] or [`Runtime::discard_dead_letter`].
    pub id: DeadLetterId,
    /// A send or a timer firing.
    pub kind: DeadLetterKind,
    /// The target's actor type (storage name).
    pub actor: String,
    /// The target's key.
    pub key: String,
    /// The handler it was for (`None` for a subscription change, a message stored by handler
    /// position by an old store format, or a timer record that cannot be read).
    pub handler: Option<String>,
    /// The timer's name (timers only).
    pub timer: Option<String>,
    /// Why it was parked: the last failure.
    pub reason: String,
    /// Failed attempts, the last one included (1 for a message parked at once).
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: SystemTime,
}

/// One page of [`Runtime::dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// Parked messages, by id (sends, then timers; each by shard then sequence or due time).
    pub letters: Vec<DeadLetter>,
    /// The last id of a full page: pass it as `after` for the next one.
    pub next: Option<DeadLetterId>,
    /// Messages listed in all (every page).
    pub listed: u64,
    /// Messages parked in this run beyond the [`MAX_LISTED`] that are listed: not retried,
    /// not listed, delivered again at the next start.
    pub unlisted: u64,
}

/// Where a parked message is stored.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Send(OutboxId),
    Timer(Arc<[u8]>),
}

struct Parked {
    letter: DeadLetter,
    stored: Stored,
}

/// The dead letters of this run (summaries, bounded), shared by the services that park and
/// the operators who look.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Listed>,
}

#[derive(Default)]
struct Listed {
    letters: BTreeMap<DeadLetterId, Parked>,
    unlisted: u64,
}

impl Registry {
    /// Parks a message: counted, logged once at error level, and listed while there is room.
    pub(crate) fn park(&self, metrics: &Metrics, letter: DeadLetter, stored: Stored) {
        metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            id = %letter.id,
            kind = letter.kind.as_str(),
            actor = %letter.actor,
            key = %letter.key,
            handler = letter.handler.as_deref().unwrap_or("-"),
            timer = letter.timer.as_deref().unwrap_or("-"),
            attempts = letter.attempts,
            reason = %letter.reason,
            "parked a message: it stays in the store, listed by Runtime::dead_letters, and is \
             tried again at the next start unless retried or discarded first"
        );
        let mut listed = self.inner.lock();
        if listed.letters.len() >= MAX_LISTED && !listed.letters.contains_key(&letter.id) {
            listed.unlisted += 1;
            return;
        }
        listed.letters.insert(letter.id, Parked { letter, stored });
    }

    fn page(&self, after: Option<DeadLetterId>, limit: usize) -> DeadLetterPage {
        use std::ops::Bound;
        let listed = self.inner.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let letters: Vec<DeadLetter> = listed
            .letters
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, parked)| parked.letter.clone())
            .collect();
        let next = (letters.len() == limit && limit > 0)
            .then(|| letters.last().map(|l| l.id))
            .flatten();
        DeadLetterPage {
            letters,
            next,
            listed: listed.letters.len() as u64,
            unlisted: listed.unlisted,
        }
    }

    /// Takes a dead letter off the list, so one operation at a time acts on it.
    fn take(&self, id: DeadLetterId) -> Option<Parked> {
        self.inner.lock().letters.remove(&id)
    }

    /// Drops the dead letter of a message that is no longer stored (its actor cancelled or
    /// rescheduled the timer, or was deleted).
    pub(crate) fn forget(&self, id: DeadLetterId) {
        self.inner.lock().letters.remove(&id);
    }

    /// Lists again a dead letter whose retry or discard failed.
    fn put_back(&self, parked: Parked) {
        self.inner.lock().letters.insert(parked.letter.id, parked);
    }
}

/// A summary of an outbox entry for the list.
pub(crate) fn send_letter(
    id: OutboxId,
    record: &OutboxRecord,
    failure: &Failure,
    attempts: u32,
) -> DeadLetter {
    DeadLetter {
        id: DeadLetterId::send(id),
        kind: DeadLetterKind::Send,
        actor: record.target.actor.clone(),
        key: record.target.key.clone(),
        handler: record.payload.handler().map(str::to_string),
        timer: None,
        reason: failure.to_string(),
        attempts,
        parked_at: SystemTime::now(),
    }
}

/// A summary of the timer stored under `key` for the list; `target` and `handler` from its
/// record when it can be read, else from its key.
pub(crate) fn timer_letter(
    key: &[u8],
    target: Option<(&ActorRef, &str)>,
    handler: Option<&str>,
    reason: String,
    attempts: u32,
) -> DeadLetter {
    let (actor, actor_key, name) = match target {
        Some((target, name)) => (target.actor.as_str(), target.key.as_str(), name),
        None => crate::codec::timer_key_parts(key).unwrap_or(("", "", "")),
    };
    DeadLetter {
        id: DeadLetterId::timer(key),
        kind: DeadLetterKind::Timer,
        actor: actor.to_string(),
        key: actor_key.to_string(),
        handler: handler.map(str::to_string),
        timer: Some(name.to_string()),
        reason,
        attempts,
        parked_at: SystemTime::now(),
    }
}

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
            Stored::Timer(_) => match shared.host() {
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
            Stored::Send(entry) => delete(shared, Space::Outbox, entry.key(), entry.shard).await,
            Stored::Timer(key) => discard_timer(shared, &parked.letter, key.clone()).await,
        };
        match discarded {
            Ok(()) => {
                if let (Stored::Timer(_), Some(host)) = (&parked.stored, shared.host()) {
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
    let key = entry.key();
    let value = shared
        .with_store("dead letter read", move |store| store.outbox_get(&key))
        .await?;
    // Gone from the store: nothing is left to deliver.
    let Some(value) = value else {
        return Ok(());
    };
    let record = decode_envelope::<OutboxRecord>(&value)
        .map_err(|reason| Failure::Invalid(format!("undecodable outbox entry: {reason}")))?;
    let host = shared.host().ok_or(Failure::ShuttingDown)?;
    shared.outbox.reserve(1)?;
    host.committed(vec![(entry, record)]);
    Ok(())
}

/// Discards a parked timer by a turn of its actor, or, without one to run it, by deleting it
/// from the store.
async fn discard_timer(
    shared: &Arc<Shared>,
    letter: &DeadLetter,
    key: Arc<[u8]>,
) -> Result<(), Failure> {
    let shard = crate::codec::shard_of_state_key(&key);
    let due_ms = crate::codec::timer_due(&key).unwrap_or(0);
    let registry = shared
        .by_name(&letter.actor)
        .filter(|_| crate::codec::validate_key(&letter.key).is_ok());
    let Some(registry) = registry else {
        return delete(shared, Space::Timers, key, shard).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done: DoneFn = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    let timer = DiscardTimer {
        key,
        name: letter.timer.clone().unwrap_or_default(),
        due_ms,
    };
    registry.discard_timer(shared, &letter.key, timer, done)?;
    rx.await.unwrap_or(Err(Failure::ShuttingDown))
}

/// Deletes one stored key of `shard` through the committer and waits until that is durable.
async fn delete(
    shared: &Arc<Shared>,
    space: Space,
    key: Arc<[u8]>,
    shard: u16,
) -> Result<(), Failure> {
    let fence = Fence {
        shard,
        epoch: local_epoch(&*shared.placement, shard)?,
    };
    let write = KeyWrite {
        space,
        key,
        value: None,
    };
    shared
        .committer
        .submit(vec![write], None, Some(fence))
        .await
        .wait()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_back() {
        let send = DeadLetterId::send(OutboxId { seq: 42, shard: 7 });
        assert_eq!(send.to_string(), "send-7-42");
        assert_eq!("send-7-42".parse::<DeadLetterId>(), Ok(send));
        let key = crate::codec::timer_key(&crate::codec::state_key("alarm", "a"), 99, "t");
        let timer = DeadLetterId::timer(&key);
        assert_eq!(timer.to_string().parse::<DeadLetterId>(), Ok(timer));
        assert_eq!(timer.kind(), DeadLetterKind::Timer);
        assert!(send < timer, "sends list before timers");
        for bad in [
            "",
            "send",
            "send-1",
            "send-1-x",
            "send-1-2-3",
            "send-256-1",
            "timer-1-2",
            "timer-1-2-zz",
            "timer-1-2-0123",
            "mail-1-2",
            "send--1",
        ] {
            assert!(bad.parse::<DeadLetterId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_policy_counts_own_failures_and_parks_at_the_limit() {
        let panicked = Failure::Panicked {
            actor: "a",
            handler: "h",
        };
        let mut attempts = 0;
        for _ in 1..MAX_ATTEMPTS {
            assert!(matches!(
                after_failure(&panicked, &mut attempts),
                Next::Retry(_)
            ));
        }
        assert_eq!(after_failure(&panicked, &mut attempts), Next::Park);
        assert_eq!(attempts, MAX_ATTEMPTS);

        let mut attempts = 0;
        let busy = Failure::Overloaded(crate::error::Overload::Mailbox);
        for _ in 0..100 {
            assert_eq!(
                after_failure(&busy, &mut attempts),
                Next::Retry(BUSY_BACKOFF)
            );
        }
        assert_eq!(attempts, 0, "busy targets never count");
    }

    #[test]
    fn the_list_is_capped_and_counts_the_rest() {
        let registry = Registry::default();
        let metrics = Metrics::default();
        let failure = Failure::Invalid("x".into());
        let record = OutboxRecord {
            target: ActorRef {
                actor: "a".into(),
                key: "k".into(),
            },
            payload: crate::codec::Payload::Message {
                handler: "h".into(),
                args: Vec::new(),
            },
            idempotency: None,
        };
        for seq in 0..(MAX_LISTED as u64 + 3) {
            let id = OutboxId { seq, shard: 0 };
            let letter = send_letter(id, &record, &failure, 1);
            registry.park(&metrics, letter, Stored::Send(id));
        }
        let page = registry.page(None, 10);
        assert_eq!((page.listed, page.unlisted), (MAX_LISTED as u64, 3));
        assert_eq!(page.letters.len(), 10);
        let next = registry.page(page.next, 10);
        assert_eq!(
            next.letters[0].id,
            DeadLetterId::send(OutboxId { seq: 10, shard: 0 })
        );
        assert_eq!(
            metrics.dead_letters.load(Ordering::Relaxed),
            MAX_LISTED as u64 + 3
        );
    }
}
