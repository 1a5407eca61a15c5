//! The replicated changelog of the shards: one JetStream stream per cluster,
//! `GEARS_<name>_LOG`, with one subject per shard, `gears.<name>.log.<NNN>`. Each message is a
//! [`LogEntry`]: the writes of one group commit to that shard, or an epoch marker of the node
//! that took the shard. A node's store is a view of the log; a node that takes a shard
//! replays its subject (NATS-NOTES.md §5, design (b)).
//!
//! Why no write of an old owner lands after a new owner took the shard: every append carries
//! the sequence it expects to be the subject's last (`Nats-Expected-Last-Subject-Sequence`),
//! and the server refuses it (10071) when another message is last. A new owner reads the last
//! sequence from the stream leader and appends its [`LogEntry::Epoch`] expecting it; from then
//! on every append made under an older expected sequence fails: that condition is the fence.
//!
//! Why a retry never lands twice: every attempt of one append carries the same `Nats-Msg-Id`,
//! so a clustered stream answers a retry of a landed append as a duplicate with its original
//! sequence, and a single server (which checks the expected sequence first) refuses it with
//! 10071 naming that sequence, which [`ShardLog::append`] recognises as its own message. Even
//! past the dedup window, the expected sequence keeps a retry from landing a second time.
//!
//! What the caller must keep: at most one append in flight per shard (a second CAS on a
//! subject whose first is still in process is refused with 10164, NATS-NOTES.md §2.2), and
//! each append's msg id unique across nodes and restarts (node · incarnation · shard · batch).

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use futures::StreamExt;

use crate::error::Error;
use crate::store::Space;

use super::{ClusterConfig, nats_error};

/// The stored format of a [`LogEntry`], its first byte.
const LOG_ENTRY_V1: u8 = 1;

/// What a format-1 entry is, its second byte (a name, never an enum position).
const KIND_WRITES: u8 = 1;
const KIND_EPOCH: u8 = 2;

/// The first retry of an append waits this long, each next one twice as long, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// How long an append that found no stream waits for the meta layer to say whether it
/// exists.
const GONE_PROBE: Duration = Duration::from_millis(500);

/// A replay that receives nothing for this long fails instead of waiting forever.
const REPLAY_STALL: Duration = Duration::from_secs(10);

/// Retries of an append are deduplicated by the stream for this long: far above any
/// deadline an append is given.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// One write of a changelog entry (owned), as the store applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWrite {
    pub(crate) space: Space,
    pub(crate) key: Vec<u8>,
    /// `None` deletes the key.
    pub(crate) value: Option<Vec<u8>>,
}

impl LogWrite {
    /// A write of `key` in the space whose stored code is `space_code` (1 state, 2 outbox,
    /// 3 timers, 4 kept, 5 expiry, 6 applied); `None` deletes the key. Unknown codes are
    /// refused.
    pub fn new(space_code: u8, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<LogWrite, String> {
        let space = space_of(space_code)?;
        Ok(LogWrite { space, key, value })
    }

    /// The stored code of the write's space (see [`LogWrite::new`]).
    pub fn space_code(&self) -> u8 {
        space_code(self.space)
    }

    /// The key written.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The value written, `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// What one message on a shard's subject carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// The coalesced writes of one group commit to this shard.
    Writes(Vec<LogWrite>),
    /// A node took the shard: every append made under an older expected sequence fails.
    Epoch {
        /// The node's id.
        node: String,
        /// Which run of the node.
        incarnation: u64,
    },
}

/// The stored code of each space. Explicit and never reused: stored entries outlive the
/// order of [`Space`]'s variants.
pub(super) fn space_code(space: Space) -> u8 {
    match space {
        Space::State => 1,
        Space::Outbox => 2,
        Space::Timers => 3,
        Space::Kept => 4,
        Space::Expiry => 5,
        // Written by the node that applies the log, not shipped in it; coded so that the
        // mapping is total.
        Space::Applied => 6,
        // Written by a single node only (the outbox frontier), never shipped in a log: an
        // entry that names it is refused.
        Space::Meta => 7,
    }
}

fn space_of(code: u8) -> Result<Space, String> {
    Ok(match code {
        1 => Space::State,
        2 => Space::Outbox,
        3 => Space::Timers,
        4 => Space::Kept,
        5 => Space::Expiry,
        6 => Space::Applied,
        _ => return Err(format!("unknown space code {code}")),
    })
}

/// A write as stored (postcard): the space by its code.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWrite {
    space: u8,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// An epoch marker as stored (postcard).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEpoch {
    node: String,
    incarnation: u64,
}

impl LogEntry {
    /// The entry as stored: the format (1), the kind (1 writes, 2 epoch), then its body in
    /// postcard.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            LogEntry::Writes(writes) => {
                let writes: Vec<StoredWrite> = writes
                    .iter()
                    .map(|w| StoredWrite {
                        space: space_code(w.space),
                        key: w.key.clone(),
                        value: w.value.clone(),
                    })
                    .collect();
                (KIND_WRITES, postcard::to_stdvec(&writes))
            }
            LogEntry::Epoch { node, incarnation } => {
                let epoch = StoredEpoch {
                    node: node.clone(),
                    incarnation: *incarnation,
                };
                (KIND_EPOCH, postcard::to_stdvec(&epoch))
            }
        };
        // Serializing sequences of known length, strings and integers into a Vec cannot fail;
        // were it to, the entry would be a kind without a body, which `decode` refuses.
        let body = body.unwrap_or_default();
        let mut bytes = Vec::with_capacity(2 + body.len());
        bytes.push(LOG_ENTRY_V1);
        bytes.push(kind);
        bytes.extend(body);
        bytes
    }

    /// An entry from its stored bytes; refuses newer formats, unknown kinds and space codes,
    /// truncated bodies and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<LogEntry, String> {
        let (kind, body) = match bytes {
            [LOG_ENTRY_V1, kind, body @ ..] => (*kind, body),
            [LOG_ENTRY_V1] => return Err("truncated: a format byte without a kind".into()),
            [version, ..] if *version > LOG_ENTRY_V1 => {
                return Err(format!(
                    "of format {version}, newer than this build's ({LOG_ENTRY_V1})"
                ));
            }
            [version, ..] => return Err(format!("of unknown format {version}")),
            [] => return Err("empty".into()),
        };
        match kind {
            KIND_WRITES => {
                let stored: Vec<StoredWrite> = from_body(body)?;
                let writes = stored
                    .into_iter()
                    .map(|w| {
                        Ok(LogWrite {
                            space: space_of(w.space)?,
                            key: w.key,
                            value: w.value,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Ok(LogEntry::Writes(writes))
            }
            KIND_EPOCH => {
                let StoredEpoch { node, incarnation } = from_body(body)?;
                Ok(LogEntry::Epoch { node, incarnation })
            }
            _ => Err(format!("of unknown kind {kind}")),
        }
    }
}

fn from_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("followed by {} unexpected bytes", rest.len())),
        Err(e) => Err(format!("undecodable: {e}")),
    }
}

/// One entry of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Its sequence in the stream.
    pub seq: u64,
    /// The sequence its append expected to be the subject's last: the entry before it on
    /// the subject, unless a purge removed that one (a snapshot then holds what is missing).
    /// `None` when the message does not say (not appended by Gears).
    pub previous: Option<u64>,
    /// What it carries.
    pub entry: LogEntry,
}

/// Why an append did not return a sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Another entry is last (10071 and not our own earlier attempt): the shard was taken
    /// over. An earlier attempt of this append may have landed before the takeover (the new
    /// owner then has it); none can land after.
    #[error("the shard's log was taken over (its last entry is {last:?})")]
    Fenced {
        /// The subject's last sequence, as the server named it.
        last: Option<u64>,
    },
    /// Gave up on transient failures at the deadline: the entry may or may not have landed.
    #[error("the append's outcome is unknown: {0}")]
    Unknown(String),
    /// Refused for good (payload too large, stream gone…): it did not land.
    #[error("the append was refused: {0}")]
    Failed(String),
}

/// The changelog of a cluster's shards: appends fenced by the expected last sequence of the
/// shard's subject, deduplicated by msg id, and replays.
pub struct ShardLog {
    js: jetstream::Context,
    stream: stream::Stream,
    /// `gears.<name>.log`: a shard's subject is this, a dot and the shard in 3 digits.
    prefix: String,
}

impl std::fmt::Debug for ShardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLog")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What one attempt of an append came to.
enum Attempt {
    Landed(u64),
    Fenced(Option<u64>),
    Retry(String),
    Failed(String),
}

impl ShardLog {
    /// Creates (or opens, if it exists with the same config) the stream `GEARS_<name>_LOG`,
    /// subjects `gears.<name>.log.*`, one subject per shard `gears.<name>.log.<NNN>` (3
    /// digits), File storage, `config.replicas` replicas, duplicate window 2 min, no direct
    /// gets (every read goes to the leader), no limits. A stream of that name with another
    /// config is refused (error 10058).
    pub async fn open(js: &jetstream::Context, config: &ClusterConfig) -> Result<ShardLog, Error> {
        config.validate()?;
        let prefix = format!("gears.{}.log", config.name);
        let stream_config = stream::Config {
            name: format!("GEARS_{}_LOG", config.name),
            subjects: vec![format!("{prefix}.*")],
            storage: StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: false,
            // Catch-ups create (and delete) a consumer each.
            max_consumers: -1,
            ..Default::default()
        };
        let what = format!("create the stream {}", stream_config.name);
        let stream = super::until_ready(&what, || js.create_stream(stream_config.clone())).await?;
        Ok(ShardLog {
            js: js.clone(),
            stream,
            prefix,
        })
    }

    fn subject(&self, shard: u16) -> String {
        format!("{}.{shard:03}", self.prefix)
    }

    /// The last sequence of `shard`'s subject, read from the stream leader (0 if empty).
    pub async fn last_seq(&self, shard: u16) -> Result<u64, Error> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(shard))
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(nats_error(
                &format!("read the last log sequence of shard {shard}"),
                e,
            )),
        }
    }

    /// Appends `payload` to `shard`'s subject expecting its last sequence to be `expected`,
    /// with Nats-Msg-Id `msg_id`; retries transient failures (10164, 10163, 10158, other
    /// 503s, timeouts, broken pipe, no responders while the stream elects a leader) with
    /// backoff (5 ms doubling to 500 ms) under the same msg id until `deadline`. Returns the
    /// entry's sequence, also when an earlier attempt landed it.
    pub async fn append(
        &self,
        shard: u16,
        expected: u64,
        msg_id: &str,
        payload: bytes::Bytes,
        deadline: Instant,
    ) -> Result<u64, AppendError> {
        let subject = self.subject(shard);
        let mut backoff = FIRST_BACKOFF;
        loop {
            // Everything an attempt does (the publish, and the reads that classify a refusal)
            // ends by the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = self.try_append(&subject, expected, msg_id, payload.clone());
            let attempt = tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| Attempt::Retry("no answer before the deadline".into()));
            let why = match attempt {
                Attempt::Landed(sequence) => return Ok(sequence),
                Attempt::Fenced(last) => return Err(AppendError::Fenced { last }),
                Attempt::Failed(why) => return Err(AppendError::Failed(why)),
                Attempt::Retry(why) => why,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AppendError::Unknown(format!(
                    "still failing at the deadline: {why}"
                )));
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_append(
        &self,
        subject: &str,
        expected: u64,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Attempt {
        let publish = PublishMessage::build()
            .message_id(msg_id)
            .expected_last_subject_sequence(expected)
            .payload(payload);
        let acked = async {
            self.js
                .send_publish(subject.to_string(), publish)
                .await?
                .await
        };
        let error = match acked.await {
            // A clustered stream answered a retry of a landed append as a duplicate; one whose
            // first attempt is still in process has no sequence yet (older servers answer
            // that with sequence 0, newer ones with 10158).
            Ok(ack) if ack.duplicate && ack.sequence == 0 => {
                return Attempt::Retry("an earlier attempt is still in process".into());
            }
            Ok(ack) => return Attempt::Landed(ack.sequence),
            Err(error) => error,
        };
        match error.kind() {
            PublishErrorKind::WrongLastSequence => match wrong_last_seq(&error) {
                // A single server checks the expected sequence before the msg id: the message
                // that is last may be this append's own earlier attempt.
                Some(last) => match self.landed_as(last, subject, msg_id).await {
                    Ok(true) => Attempt::Landed(last),
                    Ok(false) => Attempt::Fenced(Some(last)),
                    Err(e) => Attempt::Retry(format!(
                        "{error}, and message {last} could not be read to tell whose it is: {e}"
                    )),
                },
                None => Attempt::Fenced(None),
            },
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                Attempt::Retry(error.to_string())
            }
            // "No responders": while the stream elects a leader as when it is gone; only the
            // meta layer can tell.
            PublishErrorKind::StreamNotFound => {
                if self.stream_is_gone().await {
                    Attempt::Failed(format!("the stream {} is gone", self.stream_name()))
                } else {
                    Attempt::Retry(error.to_string())
                }
            }
            PublishErrorKind::Other if js_error(&error).is_some_and(|e| transient(&e)) => {
                Attempt::Retry(describe(&error))
            }
            _ => Attempt::Failed(describe(&error)),
        }
    }

    /// Whether message `sequence` (read from the leader) is this append's: on `subject` with
    /// msg id `msg_id`.
    async fn landed_as(&self, sequence: u64, subject: &str, msg_id: &str) -> Result<bool, String> {
        match self.stream.get_raw_message(sequence).await {
            Ok(message) => Ok(message.subject.as_str() == subject
                && message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|id| id.as_str())
                    == Some(msg_id)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the meta layer says the stream does not exist (anything else, a timeout
    /// included, is not proof). Asked for at most [`GONE_PROBE`]: while the stream elects a
    /// leader the question may go unanswered until the request times out (10 s), and the
    /// append should retry meanwhile.
    async fn stream_is_gone(&self) -> bool {
        let probe = self.js.get_stream(self.stream_name());
        match tokio::time::timeout(GONE_PROBE, probe).await {
            Ok(Err(e)) => matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND),
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    fn stream_name(&self) -> &str {
        &self.stream.cached_info().config.name
    }

    /// The first entry left on `shard`'s subject: its sequence and the sequence its append
    /// expected (its predecessor's, 0 for the subject's very first entry); `None` when the
    /// subject is empty. Read from the stream leader.
    pub async fn first(&self, shard: u16) -> Result<Option<(u64, Option<u64>)>, Error> {
        match self
            .stream
            .get_first_raw_message_by_subject(self.subject(shard), 0)
            .await
        {
            Ok(message) => Ok(Some((message.sequence, previous_of(&message.headers)))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_error(
                &format!("read the first log entry of shard {shard}"),
                e,
            )),
        }
    }

    /// How many entries `shard`'s subject holds.
    pub async fn entries(&self, shard: u16) -> Result<u64, Error> {
        let what = format!("count the log entries of shard {shard}");
        let mut subjects = self
            .stream
            .info_with_subjects(self.subject(shard))
            .await
            .map_err(|e| nats_error(&what, e))?;
        let mut count = 0;
        while let Some(subject) = subjects.next().await {
            count += subject.map_err(|e| nats_error(&what, e))?.1 as u64;
        }
        Ok(count)
    }

    /// Removes `shard`'s entries before `seq`, which must be one of its entries (so the
    /// subject's last entry, which fences appends, is never removed: purging a subject empty
    /// would let an append expecting 0 land). A snapshot must hold what they wrote.
    pub async fn purge_below(&self, shard: u16, seq: u64) -> Result<(), Error> {
        self.stream
            .purge()
            .filter(self.subject(shard))
            .sequence(seq)
            .await
            .map(|_| ())
            .map_err(|e| nats_error(&format!("purge the log of shard {shard} below {seq}"), e))
    }

    /// Every entry of `shard` with sequence in `from..=to` in order (nothing when from > to),
    /// read through an ordered pull consumer, stopping at `to` (as [`ShardLog::last_seq`]
    /// gave it: a consumer on a lagging replica may not have it yet, and waits). Fails when
    /// `apply` fails, when an entry is undecodable, when nothing arrives for 10 s (e.g. `to`
    /// is past the subject's last entry), and when no consumer can be created (while the meta
    /// leader is elected): the caller retries.
    pub async fn replay(
        &self,
        shard: u16,
        from: u64,
        to: u64,
        mut apply: impl FnMut(Replayed) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let from = from.max(1);
        if from > to {
            // A consumer past the end would deliver nothing and idle with heartbeats.
            return Ok(());
        }
        let what = format!("replay the log of shard {shard}");
        // A plain pull consumer of its own, deleted when done: ordered consumers linger 30 s
        // after use, and many catch-ups at once then hit the server's consumer limit (10026).
        let name = format!(
            "gears-replay-{shard}-{from}-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        );
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                name: Some(name.clone()),
                filter_subject: self.subject(shard),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: REPLAY_STALL,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            // Consumers are created through the meta leader: none while one is elected.
            .map_err(|e| nats_error(&format!("{what} (create its consumer)"), e))?;
        let replayed = read_range(&consumer, &what, from, to, &mut apply).await;
        if let Err(e) = self.stream.delete_consumer(&name).await {
            // It goes by itself once inactive.
            tracing::debug!(shard, error = %e, "deleting a replay consumer failed");
        }
        replayed
    }
}

/// Applies every message of `consumer` (which starts at `from`) up to `to`, in order.
async fn read_range(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    what: &str,
    from: u64,
    to: u64,
    apply: &mut impl FnMut(Replayed) -> Result<(), Error>,
) -> Result<(), Error> {
    {
        let mut messages = consumer.messages().await.map_err(|e| nats_error(what, e))?;
        let mut last = from - 1;
        let mut progress = Instant::now();
        loop {
            let message = match tokio::time::timeout(REPLAY_STALL, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                // A new consumer of a replicated stream may not answer its first pulls yet
                // (no responders), and a pull can lose its heartbeat in a leader change: pull
                // again (the consumer keeps its place), until nothing came for too long.
                Ok(Some(Err(e)))
                    if matches!(
                        e.kind(),
                        pull::MessagesErrorKind::NoResponders
                            | pull::MessagesErrorKind::MissingHeartbeat
                    ) && progress.elapsed() < REPLAY_STALL =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    messages = consumer.messages().await.map_err(|e| nats_error(what, e))?;
                    continue;
                }
                Ok(Some(Err(e))) => return Err(nats_error(what, e)),
                Ok(None) => {
                    return Err(Error::Cluster(format!(
                        "cannot {what}: the consumer ended after sequence {last}, before {to}"
                    )));
                }
                Err(_) => {
                    return Err(Error::Cluster(format!(
                        "cannot {what}: nothing arrived for {REPLAY_STALL:?} after sequence \
                         {last}, before {to}"
                    )));
                }
            };
            let sequence = message
                .info()
                .map_err(|e| nats_error(what, e))?
                .stream_sequence;
            // Never applied twice or out of range, whatever the consumer delivers (async-nats
            // 0.51 recreated an *ordered* consumer with `DeliverPolicy::All` once).
            if sequence <= last {
                continue;
            }
            if sequence > to {
                return Ok(());
            }
            let entry = LogEntry::decode(&message.payload).map_err(|why| {
                Error::Cluster(format!(
                    "cannot {what}: its entry at sequence {sequence} is {why}"
                ))
            })?;
            let previous = message.headers.as_ref().and_then(previous_of);
            apply(Replayed {
                seq: sequence,
                previous,
                entry,
            })?;
            if sequence == to {
                return Ok(());
            }
            last = sequence;
            progress = Instant::now();
        }
    }
}

/// The sequence an entry's append expected to be its subject's last, from its headers.
fn previous_of(headers: &async_nats::HeaderMap) -> Option<u64> {
    headers
        .get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)?
        .as_str()
        .parse()
        .ok()
}

/// The server's error behind a client error: in its source chain (publish acks).
fn js_error(error: &(dyn StdError + 'static)) -> Option<jetstream::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            return Some(js.clone());
        }
        current = e.source();
    }
    None
}

/// N of 10071 "wrong last sequence: N": the subject's actual last sequence. (The outer
/// error's text repeats the description, so it is read from the server's error.)
fn wrong_last_seq(error: &(dyn StdError + 'static)) -> Option<u64> {
    let js = js_error(error)?;
    if js.error_code() != ErrorCode::STREAM_WRONG_LAST_SEQUENCE {
        return None;
    }
    js.to_string()
        .strip_prefix("wrong last sequence: ")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Server errors after which the same append may succeed: another CAS on the subject still
/// in process (10164), the subject's last sequence not known yet (10163), this msg id still
/// in process (10158), and "temporarily unavailable" (503: no leader, a store closing under
/// a leader change).
fn transient(error: &jetstream::Error) -> bool {
    error.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        || error.error_code() == ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY
        || error.error_code() == ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
        || error.code() == 503
}

/// A client error with the server's error (which `Display` of the outer one may omit).
fn describe(error: &(dyn StdError + 'static)) -> String {
    match js_error(error) {
        Some(js) => format!("{error} ({js})"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(space: Space, key: &[u8], value: Option<&[u8]>) -> LogWrite {
        LogWrite {
            space,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn entries_round_trip() {
        let entries = [
            LogEntry::Writes(vec![
                write(Space::State, b"state key", Some(b"record")),
                write(Space::Outbox, b"", Some(b"")),
                write(Space::Timers, &[0xFF; 300], None),
                write(Space::Kept, b"k", Some(&[7; 70_000])),
                write(Space::Expiry, b"e", None),
                write(Space::Applied, &[0, 7], Some(&42u64.to_be_bytes())),
            ]),
            LogEntry::Writes(Vec::new()),
            LogEntry::Epoch {
                node: "node-a".into(),
                incarnation: u64::MAX,
            },
        ];
        for entry in entries {
            assert_eq!(LogEntry::decode(&entry.encode()), Ok(entry));
        }
    }

    #[test]
    fn space_codes_are_the_stored_ones_and_total() {
        for (space, code) in [
            (Space::State, 1),
            (Space::Outbox, 2),
            (Space::Timers, 3),
            (Space::Kept, 4),
            (Space::Expiry, 5),
            (Space::Applied, 6),
        ] {
            assert_eq!(space_code(space), code);
            assert_eq!(space_of(code), Ok(space));
            let made = LogWrite::new(code, b"k".to_vec(), None).unwrap();
            assert_eq!(made.space_code(), code);
        }
        assert!(LogWrite::new(0, Vec::new(), None).is_err());
        assert!(LogWrite::new(7, Vec::new(), None).is_err());
    }

    /// The stored bytes of format 1, written down by hand: a change of the format (or of
    /// postcard's encoding) fails here instead of in a cluster holding old entries.
    #[test]
    fn format_1_golden_bytes() {
        let writes = LogEntry::Writes(vec![
            write(Space::State, b"k", Some(b"v")),
            write(Space::Timers, b"t", None),
        ]);
        #[rustfmt::skip]
        let writes_bytes: &[u8] = &[
            0x01, // format 1
            0x01, // kind: writes
            0x02, // 2 writes
            0x01, 0x01, b'k', 0x01, 0x01, b'v', // state, key "k", Some("v")
            0x03, 0x01, b't', 0x00, // timers, key "t", None
        ];
        assert_eq!(writes.encode(), writes_bytes);
        assert_eq!(LogEntry::decode(writes_bytes), Ok(writes));

        let epoch = LogEntry::Epoch {
            node: "n1".into(),
            incarnation: 300,
        };
        #[rustfmt::skip]
        let epoch_bytes: &[u8] = &[
            0x01, // format 1
            0x02, // kind: epoch
            0x02, b'n', b'1', // node "n1"
            0xAC, 0x02, // incarnation 300 (varint)
        ];
        assert_eq!(epoch.encode(), epoch_bytes);
        assert_eq!(LogEntry::decode(epoch_bytes), Ok(epoch));
    }

    #[test]
    fn newer_formats_are_refused() {
        let mut bytes = LogEntry::Writes(Vec::new()).encode();
        bytes[0] = 2;
        let why = LogEntry::decode(&bytes).unwrap_err();
        assert!(why.contains("newer"), "{why}");
        assert!(LogEntry::decode(&[0, 1, 0]).is_err());
        assert!(LogEntry::decode(&[]).is_err());
    }

    #[test]
    fn unknown_space_codes_and_kinds_are_refused() {
        let why = LogEntry::decode(&[1, 1, 1, 9, 0, 0]).unwrap_err();
        assert!(why.contains("space code 9"), "{why}");
        let why = LogEntry::decode(&[1, 3, 0]).unwrap_err();
        assert!(why.contains("kind 3"), "{why}");
    }

    #[test]
    fn truncated_or_padded_bytes_are_refused() {
        let full = LogEntry::Writes(vec![write(Space::State, b"key", Some(b"value"))]).encode();
        for len in 0..full.len() {
            assert!(LogEntry::decode(&full[..len]).is_err(), "{len} bytes");
        }
        let mut padded = full.clone();
        padded.push(0);
        assert!(LogEntry::decode(&padded).is_err());
        let epoch = LogEntry::Epoch {
            node: "n".into(),
            incarnation: 1,
        }
        .encode();
        assert!(LogEntry::decode(&epoch[..epoch.len() - 1]).is_err());
    }

    /// A server's error as the client decodes it (its fields are private).
    fn server_error(code: usize, err_code: u64, description: &str) -> jetstream::Error {
        #[derive(serde::Serialize)]
        struct Fields<'a> {
            code: usize,
            err_code: u64,
            description: Option<&'a str>,
        }
        let fields = Fields {
            code,
            err_code,
            description: Some(description),
        };
        postcard::from_bytes(&postcard::to_stdvec(&fields).unwrap()).unwrap()
    }

    #[test]
    fn server_errors_are_told_apart() {
        use async_nats::jetstream::context::PublishError;
        let fenced = PublishError::with_source(
            PublishErrorKind::WrongLastSequence,
            server_error(400, 10071, "wrong last sequence: 42"),
        );
        assert_eq!(wrong_last_seq(&fenced), Some(42));
        let constant = server_error(400, 10164, "wrong last sequence");
        assert!(transient(&constant));
        assert!(transient(&server_error(
            409,
            10158,
            "duplicate message id is in process"
        )));
        assert!(transient(&server_error(503, 0, "raft: not leader")));
        assert!(!transient(&server_error(
            400,
            10071,
            "wrong last sequence: 1"
        )));
        let raced = PublishError::with_source(PublishErrorKind::Other, constant);
        assert_eq!(wrong_last_seq(&raced), None);
        assert!(describe(&raced).contains("10164"), "{}", describe(&raced));
    }
}
