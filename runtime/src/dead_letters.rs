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
//! never parks good messages. The outbox dispatcher (`outbox.rs`) and the timer service
//! (`timers.rs`) both ask [`after_failure`] what to do next.
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

use crate::codec::{ActorRef, OutboxId, OutboxRecord};
use crate::error::Failure;
use crate::metrics::Metrics;

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
            shard: crate::codec::shard_of_key(key),
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

    pub(crate) fn shard(self) -> u16 {
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

pub(crate) struct Parked {
    pub(crate) letter: DeadLetter,
    pub(crate) stored: Stored,
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

    pub(crate) fn page(&self, after: Option<DeadLetterId>, limit: usize) -> DeadLetterPage {
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
    pub(crate) fn take(&self, id: DeadLetterId) -> Option<Parked> {
        self.inner.lock().letters.remove(&id)
    }

    /// Drops the dead letter of a message that is no longer stored (its actor cancelled or
    /// rescheduled the timer, or was deleted).
    pub(crate) fn forget(&self, id: DeadLetterId) {
        self.inner.lock().letters.remove(&id);
    }

    /// Lists again a dead letter whose retry or discard failed.
    pub(crate) fn put_back(&self, parked: Parked) {
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
            cause: Default::default(),
            group: None,
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
