//! Byte layouts of everything Gears stores: storage keys, versioned state records (with the
//! actor's timers, subscriptions and dedup window), outbox entries and timers.
//!
//! postcard is not self-describing, so every stored value starts with a format byte; a
//! change of layout gets a new byte and the old one stays readable (golden fixtures in
//! `tests/fixtures` pin each version).

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thin_vec::ThinVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::KeyError;

/// Longest accepted actor key, in bytes. fjall refuses keys over 64 KiB (by panicking);
/// Gears keeps keys far below that and refuses longer ones itself.
pub const MAX_KEY_LEN: usize = 1024;

/// Number of shards the key space is divided into. Part of the storage format: changing it
/// moves every key.
pub const SHARDS: u16 = 256;

/// Seed of the stable shard hash. Part of the storage format.
const SHARD_SEED: u64 = 0x6765_6172_735f_7631; // "gears_v1"

/// Format byte of a state record, version 1: `[1][varint schema][postcard state]`.
/// Still written for actors without timers, subscriptions or dedup entries.
pub(crate) const STATE_RECORD_V1: u8 = 1;

/// Format byte of a state record, version 2:
/// `[2][varint schema][postcard ActorMeta][postcard state]`.
pub(crate) const STATE_RECORD_V2: u8 = 2;

/// Format byte of a state record, version 3: like version 2 with
/// [`ActorMeta::replies`] appended to the metadata. Written only when there are replies.
pub(crate) const STATE_RECORD_V3: u8 = 3;

/// Format byte of a state record, version 4: `[4][varint schema][postcard MetaV4][postcard
/// state]`: the actor's timers with their messages (kept in the record since format 4, not
/// each under a key of its own) and the due time of its entry in the timer index. Written
/// when the record holds such a timer or an index entry; versions 2 and 3 otherwise.
pub(crate) const STATE_RECORD_V4: u8 = 4;
/// Version byte of a state record of format 5: format 4's metadata, then the ids of the
/// outbox entries the actor processed that the frontier may not have passed yet
/// ([`ActorMeta::processed`]). Written only when there are any.
pub(crate) const STATE_RECORD_V5: u8 = 5;

/// Format byte of outbox entries and timers, version 1: `[1][postcard record]`.
pub(crate) const ENVELOPE_V1: u8 = 1;

/// Version of the store layout as a whole, kept in the `meta` keyspace. Format 1 keyed the
/// outbox by a global sequence and timers by due time first; format 2 (keyspaces
/// `outbox_v2`, `timers_v2`) keys both by shard first; format 3 keeps processed outbox
/// entries until the outbox frontier (`meta`: `outbox_frontier`) passes them, which a build
/// of format 2 would deliver again: it refuses the store. Older stores are upgraded when
/// they are opened (from 2, nothing moves).
pub(crate) const STORE_FORMAT: u32 = 3;

/// Checks a key before it can reach the store.
pub(crate) fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_LEN {
        Err(KeyError::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        })
    } else {
        Ok(())
    }
}

/// The shard of an actor: a seeded, stable hash (never std's) of type name and key.
///
/// It hashes `type · 0 · key` in one piece: on the stack when that fits (every call of a
/// turn asks for its target's shard, some more than once), else in a buffer of its own.
pub fn shard_of(actor: &str, key: &str) -> u16 {
    const ON_STACK: usize = 192;
    let len = actor.len() + 1 + key.len();
    let hash = if len <= ON_STACK {
        let mut buf = [0u8; ON_STACK];
        buf[..actor.len()].copy_from_slice(actor.as_bytes());
        buf[actor.len() + 1..len].copy_from_slice(key.as_bytes());
        xxh3_64_with_seed(&buf[..len], SHARD_SEED)
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(actor.as_bytes());
        buf.push(0);
        buf.extend_from_slice(key.as_bytes());
        xxh3_64_with_seed(&buf, SHARD_SEED)
    };
    (hash % u64::from(SHARDS)) as u16
}

/// The storage key of an actor's state: `shard (u16 BE) · len(type) (u8) · type · key`.
///
/// Shard first, so a shard is one contiguous range that scale-out can move.
pub fn state_key(actor: &str, key: &str) -> Vec<u8> {
    let mut out = state_key_prefix(shard_of(actor, key), actor);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Per shard: `shard · 0`, the state key of no actor type (no type's name is empty).
static OUTBOX_MARK_KEYS: [[u8; 3]; SHARDS as usize] = {
    let mut keys = [[0; 3]; SHARDS as usize];
    let mut shard = 0;
    while shard < SHARDS as usize {
        let [hi, lo] = (shard as u16).to_be_bytes();
        keys[shard] = [hi, lo, 0];
        shard += 1;
    }
    keys
};

/// On a cluster node: the state-space key under which `shard`'s records say how far the
/// outbox's sequence numbers went when its outbox was last written (a u64, big-endian: every
/// number given to an entry of the shard is below it; see `Numbers` in `backlog.rs`). It
/// moves with the shard's other records (log entries, snapshots).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn outbox_mark_key(shard: u16) -> &'static [u8] {
    &OUTBOX_MARK_KEYS[usize::from(shard) % OUTBOX_MARK_KEYS.len()]
}

/// The start of every state key of type `actor` in `shard`: `shard · len(type) · type`.
pub(crate) fn state_key_prefix(shard: u16, actor: &str) -> Vec<u8> {
    debug_assert!(actor.len() <= usize::from(u8::MAX));
    let mut out = Vec::with_capacity(3 + actor.len() + 16);
    out.extend_from_slice(&shard.to_be_bytes());
    out.push(actor.len() as u8);
    out.extend_from_slice(actor.as_bytes());
    out
}

/// The actor key inside a state key of type `actor` (the inverse of [`state_key`]).
pub(crate) fn key_of_state_key<'a>(state_key: &'a [u8], actor: &str) -> Option<&'a str> {
    std::str::from_utf8(state_key.get(3 + actor.len()..)?).ok()
}

/// What an actor keeps besides its state, in the same record (so it commits atomically
/// with the state): its timers, who subscribes to its events, what it subscribes to, and the
/// idempotency keys it processed last.
///
/// Every live activation holds one, and most have no metadata at all: empty, it allocates
/// nothing (the timers of none are one shared empty list, the other lists are one word each).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActorMeta {
    /// Pending timers (shared with the turn's `Context` without copying).
    pub(crate) timers: Arc<Vec<TimerEntry>>,
    /// Durable subscribers to this actor's events.
    pub(crate) subscribers: ThinVec<Subscriber>,
    /// The actors this actor subscribes to (so deleting it can unsubscribe).
    pub(crate) subscriptions: ThinVec<ActorRef>,
    /// The most recent idempotency keys of sends from outside, oldest first (read from
    /// records of older versions, never written now).
    pub(crate) dedup: ThinVec<String>,
    /// The results of the most recent idempotent calls, oldest first (format 3).
    pub(crate) replies: ThinVec<StoredReply>,
    /// The due time of this actor's entry in the timer index ([`timer_index_key`]), if it
    /// has one: at or before its earliest timer kept in the record (it may be earlier: a
    /// cancelled timer's entry stays until a firing or the last cancel moves it).
    pub(crate) indexed: Option<u64>,
    /// The outbox entries this actor processed that the frontier may not have passed yet
    /// (see `frontier.rs`): a delivery of one of them again is not processed again. Its
    /// turn records an entry here instead of deleting it; the ids the frontier passed are
    /// forgotten at the next write.
    pub(crate) processed: ThinVec<OutboxId>,
}

/// An id no other call of this process returns and another process returns only by chance
/// (1 in 2^128): a hash of a per-process random seed and a per-process counter. The ids of
/// turns that run once and of routed calls.
pub(crate) fn unique_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        // Each `RandomState` is keyed from the OS's randomness (then per-thread counters).
        let half = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        let mut seed = [0; 16];
        seed[..8].copy_from_slice(&half().to_le_bytes());
        seed[8..].copy_from_slice(&half().to_le_bytes());
        seed
    });
    let mut bytes = [0; 24];
    bytes[..16].copy_from_slice(seed);
    bytes[16..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

/// The timers of an actor that has none, shared (a turn that arms one copies it first).
fn no_timers() -> Arc<Vec<TimerEntry>> {
    static NONE: std::sync::LazyLock<Arc<Vec<TimerEntry>>> =
        std::sync::LazyLock::new(|| Arc::new(Vec::new()));
    NONE.clone()
}

impl Default for ActorMeta {
    fn default() -> Self {
        ActorMeta {
            timers: no_timers(),
            subscribers: ThinVec::new(),
            subscriptions: ThinVec::new(),
            dedup: ThinVec::new(),
            replies: ThinVec::new(),
            indexed: None,
            processed: ThinVec::new(),
        }
    }
}

/// The metadata as format 2 stores it (and format 3 before its replies). Borrowed for
/// encoding, owned for decoding: one field list for both.
#[derive(Serialize, Deserialize)]
struct MetaV2<T, S, R, D> {
    timers: T,
    subscribers: S,
    subscriptions: R,
    dedup: D,
}

/// The metadata as format 4 stores it: timers with their messages, and the index entry
/// (format 5 adds the processed outbox entries after it).
#[derive(Serialize, Deserialize)]
struct MetaV4<T, S, R, D, P> {
    timers: T,
    subscribers: S,
    subscriptions: R,
    dedup: D,
    replies: P,
    indexed: Option<u64>,
}

/// A timer as formats 2 and 3 list it in the record (its message is in the timer's own
/// key). Borrowed for encoding, owned for decoding.
#[derive(Serialize, Deserialize)]
struct TimerEntryV2<N> {
    name: N,
    due_ms: u64,
    every_ms: Option<u64>,
}

impl ActorMeta {
    pub(crate) fn is_empty(&self) -> bool {
        self.timers.is_empty()
            && self.indexed.is_none()
            && self.subscribers.is_empty()
            && self.subscriptions.is_empty()
            && self.dedup.is_empty()
            && self.replies.is_empty()
            && self.processed.is_empty()
    }

    /// The result kept for `idempotency` in a record written by an older version (idempotent
    /// call results and keyed sends used to be kept in the record, a window of the latest).
    pub(crate) fn legacy_result(&self, idempotency: &str) -> Option<KeptResult> {
        if let Some(r) = self.replies.iter().find(|r| r.key == idempotency) {
            return Some(KeptResult {
                request: r.request,
                ok: r.ok,
                body: r.body.clone(),
            });
        }
        self.dedup
            .iter()
            .any(|k| k == idempotency)
            .then(KeptResult::send)
    }

    /// Takes the results an older version kept in the record, to keep them under their own
    /// keys from now on.
    pub(crate) fn take_legacy_results(&mut self) -> impl Iterator<Item = (String, KeptResult)> {
        let replies = std::mem::take(&mut self.replies).into_iter().map(|r| {
            let result = KeptResult {
                request: r.request,
                ok: r.ok,
                body: r.body,
            };
            (r.key, result)
        });
        let sends = std::mem::take(&mut self.dedup)
            .into_iter()
            .map(|k| (k, KeptResult::send()));
        replies.chain(sends)
    }
}

/// The result of an idempotent call as format 3 records kept it (read, never written now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredReply {
    /// The caller's idempotency key.
    pub(crate) key: String,
    /// A hash of the request (handler and arguments): the same key with another request is
    /// a conflict, not a replay.
    pub(crate) request: u64,
    /// `false`: the handler returned an error.
    pub(crate) ok: bool,
    /// The encoded result (JSON for the HTTP ingress).
    pub(crate) body: Vec<u8>,
}

/// One pending timer in its actor's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimerEntry {
    pub(crate) name: String,
    /// Wall-clock due time, milliseconds since the Unix epoch.
    pub(crate) due_ms: u64,
    /// Period of a periodic timer.
    pub(crate) every_ms: Option<u64>,
    /// What it delivers, kept here since record format 4 (the timer index finds the
    /// actor); `None`: a timer armed by an older version, stored under its own key in the
    /// `timers` keyspace ([`timer_key`]) with its message.
    pub(crate) message: Option<TimerMessage>,
}

/// A timer's message as its record keeps it: the [`Payload`], encoded once when the timer
/// is armed. Every write of the record copies these bytes, and a turn that changes the
/// actor's timers clones the list: neither takes the message apart again (an actor may have
/// many timers pending; only a firing decodes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimerMessage(Arc<[u8]>);

impl TimerMessage {
    pub(crate) fn encode(payload: &Payload) -> Result<TimerMessage, String> {
        encoded(|out| append(out, payload).map_err(|e| e.to_string())).map(TimerMessage)
    }

    pub(crate) fn decode(&self) -> Result<Payload, String> {
        decode_all(&self.0)
    }
}

impl Serialize for TimerMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for TimerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(TimerMessage(bytes.into_vec().into()))
    }
}

impl TimerEntry {
    /// Whether the timer has a key of its own in the `timers` keyspace (armed by a version
    /// before record format 4).
    pub(crate) fn stored_apart(&self) -> bool {
        self.message.is_none()
    }
}

/// An actor by storage name and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ActorRef {
    pub(crate) actor: String,
    pub(crate) key: String,
}

/// A durable subscriber: its events go to `handler` of `actor(key)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subscriber {
    pub(crate) actor: String,
    pub(crate) key: String,
    pub(crate) handler: String,
}

/// Appends postcard's encoding to a borrowed buffer (postcard's own `Vec` flavors take the
/// buffer by value).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // postcard hands over every varint as a slice, mostly of one byte (a small number,
        // a length): pushed, it skips a call to `memcpy` (3 % of an order's instructions
        // went to these calls).
        match *bytes {
            [byte] => self.0.push(byte),
            _ => self.0.extend_from_slice(bytes),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value` in postcard to `out`.
fn append<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Append(out))
}

/// Largest scratch buffer a thread keeps between encodings; one a larger record needed is
/// dropped after it (a record may be megabytes; the ones of a turn are mostly under 1 KiB).
const SCRATCH_KEPT: usize = 64 * 1024;

/// What `write` puts in an empty buffer, returned at its exact size as a `Vec` or straight
/// as the `Arc` a commit takes. The buffer is this thread's scratch, reused: a record costs
/// one allocation of its final size and one copy, where growing a fresh `Vec` as postcard
/// writes, then moving it into an `Arc`, cost three to five allocations and as many copies
/// (each turn encodes its record, and each send its arguments and its message).
fn encoded<R: for<'a> From<&'a [u8]>>(
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<R, String> {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out while `write` runs: a `Serialize` impl that encodes a record itself finds
    // an empty one, and a panic in `write` only drops it.
    let mut buf = SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default();
    buf.clear();
    let result = write(&mut buf).map(|()| R::from(&buf[..]));
    if buf.capacity() <= SCRATCH_KEPT {
        // Fails only while the thread exits: the buffer is dropped then.
        let _ = SCRATCH.try_with(|cell| cell.set(buf));
    }
    result
}

/// Encodes a state record: version 1 when the actor has no metadata, else version 2. As
/// the `Arc` a commit takes, or a `Vec` for a reader that hands the bytes on.
pub(crate) fn encode_record<A: Serialize, R: for<'a> From<&'a [u8]>>(
    schema: u32,
    meta: &ActorMeta,
    state: &A,
) -> Result<R, String> {
    encoded(|out| {
        if meta.is_empty() {
            out.push(STATE_RECORD_V1);
            append(out, &schema).map_err(|e| e.to_string())?;
        } else if meta.indexed.is_some()
            || meta.timers.iter().any(|t| !t.stored_apart())
            || !meta.processed.is_empty()
        {
            let format = if meta.processed.is_empty() {
                STATE_RECORD_V4
            } else {
                STATE_RECORD_V5
            };
            out.push(format);
            append(out, &schema).map_err(|e| e.to_string())?;
            let v4 = MetaV4 {
                timers: &meta.timers,
                subscribers: &meta.subscribers,
                subscriptions: &meta.subscriptions,
                dedup: &meta.dedup,
                replies: &meta.replies,
                indexed: meta.indexed,
            };
            append(out, &v4).map_err(|e| format!("cannot encode meta: {e}"))?;
            if format == STATE_RECORD_V5 {
                append(out, &meta.processed)
                    .map_err(|e| format!("cannot encode processed entries: {e}"))?;
            }
        } else {
            let format = if meta.replies.is_empty() {
                STATE_RECORD_V2
            } else {
                STATE_RECORD_V3
            };
            out.push(format);
            append(out, &schema).map_err(|e| e.to_string())?;
            let timers: Vec<TimerEntryV2<&str>> = meta
                .timers
                .iter()
                .map(|t| TimerEntryV2 {
                    name: t.name.as_str(),
                    due_ms: t.due_ms,
                    every_ms: t.every_ms,
                })
                .collect();
            let v2 = MetaV2 {
                timers,
                subscribers: &meta.subscribers,
                subscriptions: &meta.subscriptions,
                dedup: &meta.dedup,
            };
            append(out, &v2).map_err(|e| format!("cannot encode meta: {e}"))?;
            if format == STATE_RECORD_V3 {
                append(out, &meta.replies).map_err(|e| format!("cannot encode replies: {e}"))?;
            }
        }
        append(out, state).map_err(|e| format!("cannot encode state: {e}"))
    })
}

/// Encodes a state record without metadata (version 1).
pub(crate) fn encode_state<A: Serialize>(schema: u32, state: &A) -> Result<Vec<u8>, String> {
    encode_record(schema, &ActorMeta::default(), state)
}

/// Decodes the state bytes of a record as `T`, using every byte.
pub fn decode_state_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((state, [])) => Ok(state),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the state", rest.len())),
        Err(e) => Err(format!("bad state bytes: {e}")),
    }
}

/// Splits a state record of any supported format: schema version, metadata, state bytes.
pub(crate) fn split_record(bytes: &[u8]) -> Result<(u32, ActorMeta, &[u8]), String> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err("empty record".into());
    };
    if !(STATE_RECORD_V1..=STATE_RECORD_V5).contains(&format) {
        return Err(format!(
            "unknown record format {format} (this build reads formats {STATE_RECORD_V1} to \
             {STATE_RECORD_V5})"
        ));
    }
    let (schema, rest) =
        postcard::take_from_bytes::<u32>(rest).map_err(|e| format!("bad schema version: {e}"))?;
    let (mut meta, mut rest) = (ActorMeta::default(), rest);
    if format >= STATE_RECORD_V4 {
        type Owned = MetaV4<
            Vec<TimerEntry>,
            ThinVec<Subscriber>,
            ThinVec<ActorRef>,
            ThinVec<String>,
            ThinVec<StoredReply>,
        >;
        let (v4, tail) =
            postcard::take_from_bytes::<Owned>(rest).map_err(|e| format!("bad meta bytes: {e}"))?;
        if !v4.timers.is_empty() {
            meta.timers = Arc::new(v4.timers);
        }
        meta.subscribers = v4.subscribers;
        meta.subscriptions = v4.subscriptions;
        meta.dedup = v4.dedup;
        meta.replies = v4.replies;
        meta.indexed = v4.indexed;
        if format == STATE_RECORD_V5 {
            let (processed, tail) = postcard::take_from_bytes::<ThinVec<OutboxId>>(tail)
                .map_err(|e| format!("bad processed entries: {e}"))?;
            meta.processed = processed;
            return Ok((schema, meta, tail));
        }
        return Ok((schema, meta, tail));
    }
    if format >= STATE_RECORD_V2 {
        type Owned = MetaV2<
            Vec<TimerEntryV2<String>>,
            ThinVec<Subscriber>,
            ThinVec<ActorRef>,
            ThinVec<String>,
        >;
        let (v2, tail) =
            postcard::take_from_bytes::<Owned>(rest).map_err(|e| format!("bad meta bytes: {e}"))?;
        if !v2.timers.is_empty() {
            let timers = v2.timers.into_iter().map(|t| TimerEntry {
                name: t.name,
                due_ms: t.due_ms,
                every_ms: t.every_ms,
                message: None,
            });
            meta.timers = Arc::new(timers.collect());
        }
        meta.subscribers = v2.subscribers;
        meta.subscriptions = v2.subscriptions;
        meta.dedup = v2.dedup;
        rest = tail;
    }
    if format == STATE_RECORD_V3 {
        let (replies, tail) = postcard::take_from_bytes::<ThinVec<StoredReply>>(rest)
            .map_err(|e| format!("bad stored replies: {e}"))?;
        meta.replies = replies;
        rest = tail;
    }
    Ok((schema, meta, rest))
}

/// Decodes a state record of any supported format as `A`, whatever version wrote it:
/// schema version, metadata, state (for tests and tools; actors read with
/// [`decode_versioned`]).
#[cfg(test)]
pub(crate) fn decode_record<A: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(u32, ActorMeta, A), String> {
    let (schema, meta, state) = split_record(bytes)?;
    Ok((schema, meta, decode_state_bytes(state)?))
}

/// Decodes a state record of any supported version, returning its schema version and state.
#[cfg(test)]
pub(crate) fn decode_state<A: DeserializeOwned>(bytes: &[u8]) -> Result<(u32, A), String> {
    decode_record(bytes).map(|(schema, _, state)| (schema, state))
}

/// What an outbox entry or a timer carries to its target. Stored with postcard, which
/// encodes the variant by position: new variants go at the end. Byte strings go through
/// `serde_bytes`: postcard lays them out as it does a `Vec<u8>` (length, then the bytes),
/// so the stored bytes are the same, written at once instead of one element at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Payload {
    /// A message as stores of format 1 wrote it: the handler by its position in the `impl`
    /// block, then its arguments. Read (see [`crate::Handlers::__decode_positional`]), never
    /// written now.
    Positional(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An event for a subscriber: the handler to run and the postcard-encoded event.
    Event {
        handler: String,
        #[serde(with = "serde_bytes")]
        event: Vec<u8>,
    },
    /// Add `subscriber` to the target's subscribers.
    Subscribe(Subscriber),
    /// Remove the subscriber `actor(key)` from the target's subscribers.
    Unsubscribe(ActorRef),
    /// A message to the target's handler named `handler`, with its arguments encoded as a
    /// tuple ([`encode_arguments`]). The name is borrowed from the handler's code when sent
    /// (no allocation per message), owned when read from the store; postcard encodes both
    /// as a string.
    Message {
        handler: Cow<'static, str>,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
}

impl Payload {
    /// The handler a message or event is for (`None` for subscription changes and messages
    /// of format 1, whose handler is known only by position).
    pub(crate) fn handler(&self) -> Option<&str> {
        match self {
            Payload::Message { handler, .. } => Some(handler),
            Payload::Event { handler, .. } => Some(handler),
            Payload::Positional(_) | Payload::Subscribe(_) | Payload::Unsubscribe(_) => None,
        }
    }
}

/// One outbox entry: a message that is durable and not yet processed by its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    pub(crate) target: ActorRef,
    pub(crate) payload: Payload,
    /// A caller-chosen key: a second send with the same key to the same actor is dropped.
    pub(crate) idempotency: Option<String>,
    /// The span it was sent under (in memory only: not stored, not compared).
    #[serde(skip)]
    pub(crate) cause: crate::trace::Cause,
    /// The number of the stored group it is a message of, if it shares one entry with the
    /// other messages of its turn (see [`encode_group`]; in memory only).
    #[serde(skip)]
    pub(crate) group: Option<u64>,
}

impl OutboxRecord {
    /// The stored entry that holds message `id`: its own, or its group's.
    pub(crate) fn stored_as(&self, id: OutboxId) -> OutboxId {
        OutboxId {
            seq: self.group.unwrap_or(id.seq),
            shard: id.shard,
        }
    }
}

/// Format byte of an outbox entry that holds several messages of one turn:
/// `[2][postcard Vec<OutboxRecord>]`. Stored under number `g`, its messages are numbered
/// `g + 1 ..= g + n` (numbers no other entry takes), in the order they were sent.
pub(crate) const OUTBOX_GROUP: u8 = 2;

/// Most messages one group holds; a turn that sends more writes several.
pub(crate) const MAX_GROUP: usize = 64;

/// The value that says the message stored under its number was processed: where the outbox
/// frontier is kept, written in place of deleting a message (a message of a group cannot be
/// deleted alone). Dropped with the entries once the frontier passes it.
pub(crate) const OUTBOX_PROCESSED: &[u8] = &[0];

/// Encodes the messages of one turn as one outbox entry (2 to [`MAX_GROUP`] of them).
pub(crate) fn encode_group(records: &[OutboxRecord]) -> Result<Arc<[u8]>, String> {
    encoded(|out| {
        out.push(OUTBOX_GROUP);
        append(out, records).map_err(|e| e.to_string())
    })
}

/// How many messages the outbox value `bytes` holds if it is a group, read from its first
/// bytes (postcard writes a sequence's length before its items).
pub(crate) fn group_len(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((&OUTBOX_GROUP, rest)) => postcard::take_from_bytes::<u64>(rest).ok().map(|(n, _)| n),
        _ => None,
    }
}

/// What an outbox value holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OutboxValue {
    /// One message (envelope format 1).
    One(OutboxRecord),
    /// The messages of one turn.
    Group(Vec<OutboxRecord>),
    /// The message stored under this number was processed.
    Processed,
}

impl OutboxValue {
    /// How messages sent together are stored: one alone, more as a group.
    pub(crate) fn of(mut records: Vec<OutboxRecord>) -> OutboxValue {
        match records.pop() {
            Some(one) if records.is_empty() => OutboxValue::One(one),
            last => {
                records.extend(last);
                OutboxValue::Group(records)
            }
        }
    }

    /// Its stored bytes.
    pub(crate) fn encode(&self) -> Result<Arc<[u8]>, String> {
        match self {
            OutboxValue::One(record) => encode_envelope(record),
            OutboxValue::Group(records) => encode_group(records),
            OutboxValue::Processed => Ok(Arc::from(OUTBOX_PROCESSED)),
        }
    }

    /// The numbers it takes: its own, and a group one per message.
    pub(crate) fn numbers(&self) -> u64 {
        match self {
            OutboxValue::Group(records) => records.len() as u64 + 1,
            OutboxValue::One(_) | OutboxValue::Processed => 1,
        }
    }
}

/// Decodes an outbox value.
pub(crate) fn decode_outbox(bytes: &[u8]) -> Result<OutboxValue, String> {
    match bytes.split_first() {
        Some((&ENVELOPE_V1, _)) => decode_envelope(bytes).map(OutboxValue::One),
        Some((&OUTBOX_GROUP, rest)) => {
            let records: Vec<OutboxRecord> = decode_all(rest)?;
            if !(2..=MAX_GROUP).contains(&records.len()) {
                return Err(format!("a group of {} messages", records.len()));
            }
            Ok(OutboxValue::Group(records))
        }
        Some((0, [])) => Ok(OutboxValue::Processed),
        None => Err("empty outbox entry".into()),
        Some((format, _)) => Err(format!(
            "unknown outbox entry format {format} (this build reads formats 0, \
             {ENVELOPE_V1} and {OUTBOX_GROUP})"
        )),
    }
}

/// The messages of the outbox entry stored under `at`, each with its own id (a group's are
/// numbered after it). Empty for a processed mark.
pub(crate) fn outbox_messages(
    at: OutboxId,
    value: OutboxValue,
) -> impl Iterator<Item = (OutboxId, OutboxRecord)> {
    let (records, group) = match value {
        OutboxValue::One(record) => (vec![record], None),
        OutboxValue::Group(records) => (records, Some(at.seq)),
        OutboxValue::Processed => (Vec::new(), None),
    };
    records.into_iter().zip(0u64..).map(move |(mut record, i)| {
        record.group = group;
        let seq = group.map_or(at.seq, |g| g + 1 + i);
        (
            OutboxId {
                seq,
                shard: at.shard,
            },
            record,
        )
    })
}

/// Message `id` from the outbox entry `key` that holds it (the store's `outbox_entry` finds
/// it).
pub(crate) fn outbox_message(
    id: OutboxId,
    key: &[u8],
    value: &[u8],
) -> Result<Option<OutboxRecord>, String> {
    let at = OutboxId::of_key(key).ok_or("an outbox key of the wrong length")?;
    Ok(outbox_messages(at, decode_outbox(value)?)
        .find(|(found, _)| *found == id)
        .map(|(_, record)| record))
}

/// One timer in the `timers` keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimerRecord {
    pub(crate) target: ActorRef,
    pub(crate) name: String,
    /// The message it delivers: [`Payload::Message`] (or [`Payload::Positional`] when read
    /// from a timer of envelope format 1).
    pub(crate) message: Payload,
    pub(crate) due_ms: u64,
    pub(crate) every_ms: Option<u64>,
}

/// A timer as envelope format 1 stored it: its message by handler position.
#[derive(Serialize, Deserialize)]
struct TimerRecordV1 {
    target: ActorRef,
    name: String,
    message: Vec<u8>,
    due_ms: u64,
    every_ms: Option<u64>,
}

/// Format byte of timers since handlers are stored by name: `[2][postcard TimerRecord]`.
pub(crate) const ENVELOPE_V2: u8 = 2;

/// Encodes a timer: `[2][postcard]` (as versions before record format 4 stored each timer;
/// for the fixtures).
#[cfg(test)]
pub(crate) fn encode_timer(record: &TimerRecord) -> Result<Vec<u8>, String> {
    postcard::to_extend(record, vec![ENVELOPE_V2]).map_err(|e| e.to_string())
}

/// Decodes a timer of envelope format 1 (message by handler position) or 2.
pub(crate) fn decode_timer(bytes: &[u8]) -> Result<TimerRecord, String> {
    match bytes.split_first() {
        Some((&ENVELOPE_V2, rest)) => decode_all::<TimerRecord>(rest),
        Some((&ENVELOPE_V1, _)) => decode_envelope::<TimerRecordV1>(bytes).map(|v1| TimerRecord {
            target: v1.target,
            name: v1.name,
            message: Payload::Positional(v1.message),
            due_ms: v1.due_ms,
            every_ms: v1.every_ms,
        }),
        None => Err("empty timer".into()),
        Some((format, _)) => Err(format!(
            "unknown timer format {format} (this build reads formats {ENVELOPE_V1} and \
             {ENVELOPE_V2})"
        )),
    }
}

/// Decodes `T` from all of `bytes`.
fn decode_all<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (record, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(record)
    } else {
        Err(format!("{} trailing bytes after the envelope", rest.len()))
    }
}

/// Encodes an outbox entry or kept result: `[1][postcard]`.
pub(crate) fn encode_envelope<T: Serialize>(record: &T) -> Result<Arc<[u8]>, String> {
    encoded(|out| {
        out.push(ENVELOPE_V1);
        append(out, record).map_err(|e| e.to_string())
    })
}

/// Decodes an outbox entry or kept result.
pub(crate) fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("empty envelope".into()),
        Some((&ENVELOPE_V1, rest)) => decode_all(rest),
        Some((format, _)) => Err(format!(
            "unknown envelope format {format} (this build reads format {ENVELOPE_V1})"
        )),
    }
}

/// An outbox entry: the shard it belongs to (its sender's; for a send from outside any
/// actor, its target's) and its sequence number, unique in the store. Its key is
/// `shard (u16 BE) · sequence (u64 BE)`, so a shard's entries are one range, in order.
///
/// Entries order by sequence (the order they were sent in), whatever their shard. Stored
/// (in [`ActorMeta::processed`]) as postcard lays out the two fields, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct OutboxId {
    pub(crate) seq: u64,
    pub(crate) shard: u16,
}

impl OutboxId {
    /// Its key in the outbox.
    pub(crate) fn key(self) -> Arc<[u8]> {
        let mut key = [0; 10];
        key[..2].copy_from_slice(&self.shard.to_be_bytes());
        key[2..].copy_from_slice(&self.seq.to_be_bytes());
        Arc::from(key.as_slice())
    }

    /// The entry an outbox key names.
    pub(crate) fn of_key(key: &[u8]) -> Option<OutboxId> {
        let key = <[u8; 10]>::try_from(key).ok()?;
        Some(OutboxId {
            shard: u16::from_be_bytes([key[0], key[1]]),
            seq: u64::from_be_bytes(key[2..].try_into().ok()?),
        })
    }
}

/// The sequence number of an outbox key of store format 1 (the sequence alone).
pub(crate) fn outbox_seq_v1(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// The shard a stored key starts with: every key that belongs to an actor (state, outbox,
/// timer, kept result, expiry, applied sequence) starts with it.
pub(crate) fn shard_of_key(key: &[u8]) -> u16 {
    match key {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// The key of a timer: `shard (u16 BE) · due (u64 BE ms) · len(state key) (u16 BE) · state
/// key · name`, so each shard's timers are one range ordered by due time.
pub(crate) fn timer_key(state_key: &[u8], due_ms: u64, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + state_key.len() + name.len());
    out.extend_from_slice(&shard_of_key(state_key).to_be_bytes());
    out.extend_from_slice(&due_ms.to_be_bytes());
    out.extend_from_slice(&(state_key.len() as u16).to_be_bytes());
    out.extend_from_slice(state_key);
    out.extend_from_slice(name.as_bytes());
    out
}

/// The key of an actor's entry in the timer index: a [`timer_key`] without a name (timer
/// names are never empty), so each shard's index entries sort by due time among the timers
/// older versions stored under keys of their own; its value is [`TIMER_INDEX`].
pub(crate) fn timer_index_key(state_key: &[u8], due_ms: u64) -> Vec<u8> {
    timer_key(state_key, due_ms, "")
}

/// The value of an index entry (a format byte no timer record has: those are envelopes of
/// format 1 or 2).
pub(crate) const TIMER_INDEX: [u8; 1] = [4];

/// The state key a timer key or index entry names.
pub(crate) fn timer_key_state_key(key: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes(key.get(10..12)?.try_into().ok()?));
    key.get(12..12 + len)
}

/// The due time of a timer key.
pub(crate) fn timer_due(key: &[u8]) -> Option<u64> {
    key.get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The actor type, actor key and timer name a timer key names (the inverse of
/// [`timer_key`]), for reporting a timer whose record cannot be read.
pub(crate) fn timer_key_parts(key: &[u8]) -> Option<(&str, &str, &str)> {
    let len = usize::from(u16::from_be_bytes(key.get(10..12)?.try_into().ok()?));
    let state_key = key.get(12..12 + len)?;
    let name = std::str::from_utf8(key.get(12 + len..)?).ok()?;
    let type_len = usize::from(*state_key.get(2)?);
    let actor = std::str::from_utf8(state_key.get(3..3 + type_len)?).ok()?;
    let actor_key = std::str::from_utf8(state_key.get(3 + type_len..)?).ok()?;
    Some((actor, actor_key, name))
}

/// The start of the timers of `shard` due at `due_ms` (the end of a range of due timers).
pub(crate) fn timer_range_key(shard: u16, due_ms: u64) -> [u8; 10] {
    let mut key = [0; 10];
    key[..2].copy_from_slice(&shard.to_be_bytes());
    key[2..].copy_from_slice(&due_ms.to_be_bytes());
    key
}

/// The key of a timer of store format 1 (`due · len(state key) · state key · name`) in
/// format 2.
pub(crate) fn timer_key_from_v1(key: &[u8]) -> Option<Vec<u8>> {
    let due = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(key.get(8..10)?.try_into().ok()?));
    let state_key = key.get(10..10 + len)?;
    let name = std::str::from_utf8(key.get(10 + len..)?).ok()?;
    (state_key.len() >= 2).then(|| timer_key(state_key, due, name))
}

/// Longest idempotency key (HTTP `Idempotency-Key`, [`Runtime::send_idempotent`]), in bytes.
///
/// [`Runtime::send_idempotent`]: crate::Runtime::send_idempotent
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an idempotency key before it can reach the store.
/// Control characters are refused: the runtime's own keys (the ids of calls between actors)
/// start with one, so no caller can forge one.
pub(crate) fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        Err(format!(
            "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, not {}",
            key.len()
        ))
    } else if key.chars().any(char::is_control) {
        Err("an idempotency key must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// The outcome of an idempotent request (an HTTP call with an `Idempotency-Key`, or a keyed
/// send), kept in the `replies` keyspace until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptResult {
    /// A hash of the request (handler and arguments), 0 for a send: the same key with
    /// another request is a conflict, not a replay.
    pub(crate) request: u64,
    /// `false`: the handler returned an error.
    pub(crate) ok: bool,
    /// The encoded result (JSON for the HTTP ingress; empty for a send).
    pub(crate) body: Vec<u8>,
}

impl KeptResult {
    /// What a keyed send keeps: that it was processed.
    pub(crate) fn send() -> KeptResult {
        KeptResult {
            request: 0,
            ok: true,
            body: Vec::new(),
        }
    }
}

/// Separates an actor's state key from what follows it in the `replies` keyspace: a byte
/// that UTF-8 never contains, so one actor's prefix is never a prefix of another's.
const AFTER_STATE_KEY: u8 = 0xFF;

/// The start of every kept result of `idempotency` on the actor `state_key`:
/// `state key · 0xFF · len(idempotency) (u8) · idempotency`. Starts with the actor's shard.
pub(crate) fn kept_prefix(state_key: &[u8], idempotency: &str) -> Vec<u8> {
    debug_assert!(idempotency.len() <= MAX_IDEMPOTENCY_KEY_LEN);
    let mut out = Vec::with_capacity(state_key.len() + 2 + idempotency.len() + 8);
    out.extend_from_slice(state_key);
    out.push(AFTER_STATE_KEY);
    out.push(idempotency.len() as u8);
    out.extend_from_slice(idempotency.as_bytes());
    out
}

/// The key of a kept result: [`kept_prefix`] `· expires (u64 BE ms since the Unix epoch)`.
/// The expiry is part of the key, so a result kept again after the old one expired has a key
/// of its own, and removing an expired one can never remove its successor.
pub(crate) fn kept_key(state_key: &[u8], idempotency: &str, expires_ms: u64) -> Vec<u8> {
    let mut out = kept_prefix(state_key, idempotency);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out
}

/// The expiry time at the end of a kept result's key.
pub(crate) fn kept_expiry(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8)?;
    <[u8; 8]>::try_from(&key[at..]).ok().map(u64::from_be_bytes)
}

/// The key of a kept result in the expiry index: `shard (u16 BE) · expires (u64 BE) · kept
/// key`, so each shard's results are one range ordered by expiry.
pub(crate) fn expiry_key(kept_key: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + kept_key.len());
    out.extend_from_slice(kept_key.get(..2).unwrap_or(&[0, 0]));
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(kept_key);
    out
}

/// The kept key an expiry index key points to.
pub(crate) fn kept_key_of_expiry(expiry_key: &[u8]) -> Option<&[u8]> {
    expiry_key.get(10..).filter(|k| !k.is_empty())
}

/// Encodes a handler's arguments (a tuple) as messages store them.
pub fn encode_arguments<T: Serialize>(arguments: &T) -> Result<Vec<u8>, String> {
    encoded(|out| append(out, arguments).map_err(|e| format!("cannot encode the arguments: {e}")))
}

/// Decodes the arguments of `handler` (a tuple) from a stored message; every byte must be
/// used, so arguments written for another signature are refused when postcard notices.
pub fn decode_arguments<T: DeserializeOwned>(handler: &str, bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((arguments, [])) => Ok(arguments),
        Ok((_, rest)) => Err(format!(
            "the arguments of `{handler}` do not decode: {} bytes left over (were they \
             written for another signature?)",
            rest.len()
        )),
        Err(e) => Err(format!("the arguments of `{handler}` do not decode: {e}")),
    }
}

/// Splits a message of store format 1 into its handler's position and its arguments.
pub fn split_variant(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    postcard::take_from_bytes::<u32>(bytes)
        .map_err(|e| format!("cannot decode the handler's position: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            validate_key(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong { len: 1025, .. })
        ));
    }

    #[test]
    fn timer_keys_name_their_actor_and_timer() {
        let key = timer_key(&state_key("alarm", "a/b"), 42, "wake up");
        assert_eq!(timer_key_parts(&key), Some(("alarm", "a/b", "wake up")));
        assert_eq!(timer_due(&key), Some(42));
        assert_eq!(timer_key_parts(&key[..11]), None);
        assert_eq!(timer_key_parts(&key[..14]), None);
    }

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let bytes = encode_state(3, &(7u32, String::from("x"))).unwrap();
        let (schema, back): (u32, (u32, String)) = decode_state(&bytes).unwrap();
        assert_eq!((schema, back), (3, (7, "x".into())));
        assert!(decode_state::<(u32, String)>(&[]).is_err());
        assert!(decode_state::<(u32, String)>(&[9, 1, 2]).is_err());
        assert!(decode_state::<(u32, String)>(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state::<(u32, String)>(&longer).is_err());
    }

    #[test]
    fn records_encode_whole_through_the_reused_buffer() {
        // A record larger than the buffer a thread keeps, then smaller ones: each is exactly
        // its own bytes (nothing of the one before), the same as encoded in one piece.
        let big = "b".repeat(SCRATCH_KEPT + 1);
        for state in [big.as_str(), "small", ""] {
            let bytes = encode_state(3, &state).unwrap();
            let mut alone = vec![STATE_RECORD_V1];
            alone.extend(postcard::to_allocvec(&3u32).unwrap());
            alone.extend(postcard::to_allocvec(state).unwrap());
            assert_eq!(bytes, alone);
            assert_eq!(
                decode_state::<String>(&bytes).unwrap(),
                (3, state.to_string())
            );
        }
        // A value whose encoding encodes another record meanwhile gets a buffer of its own.
        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner = encode_envelope(&"inner").map_err(serde::ser::Error::custom)?;
                s.serialize_bytes(&inner)
            }
        }
        let outer = encode_envelope(&Nested).unwrap();
        let inner = encode_envelope(&"inner").unwrap();
        let mut expected = vec![ENVELOPE_V1];
        expected.extend(postcard::to_allocvec(&inner[..]).unwrap());
        assert_eq!(&outer[..], &expected[..]);
    }

    #[test]
    fn records_with_meta_round_trip_and_v1_stays_v1() {
        let meta = ActorMeta {
            timers: Arc::new(vec![TimerEntry {
                name: "t".into(),
                due_ms: 5,
                every_ms: Some(7),
                message: None,
            }]),
            dedup: thin_vec::thin_vec!["k".to_string()],
            ..ActorMeta::default()
        };
        let bytes: Vec<u8> = encode_record(1, &meta, &42u32).unwrap();
        assert_eq!(bytes[0], STATE_RECORD_V2);
        let (schema, back, state): (u32, ActorMeta, u32) = decode_record(&bytes).unwrap();
        assert_eq!((schema, &back, state), (1, &meta, 42));
        let plain: Vec<u8> = encode_record(1, &ActorMeta::default(), &42u32).unwrap();
        assert_eq!(plain, [STATE_RECORD_V1, 1, 42]);
        for cut in 0..bytes.len() {
            assert!(decode_record::<u32>(&bytes[..cut]).is_err());
        }
        // A timer kept in the record, or an index entry alone, makes it format 4.
        let kept = ActorMeta {
            timers: Arc::new(vec![TimerEntry {
                message: Some(
                    TimerMessage::encode(&Payload::Message {
                        handler: "ring".into(),
                        args: vec![1],
                    })
                    .unwrap(),
                ),
                ..meta.timers[0].clone()
            }]),
            indexed: Some(3),
            ..meta.clone()
        };
        let index_only = ActorMeta {
            indexed: Some(3),
            ..ActorMeta::default()
        };
        for meta in [kept, index_only] {
            let bytes: Vec<u8> = encode_record(1, &meta, &42u32).unwrap();
            assert_eq!(bytes[0], STATE_RECORD_V4);
            let (schema, back, state): (u32, ActorMeta, u32) = decode_record(&bytes).unwrap();
            assert_eq!((schema, &back, state), (1, &meta, 42));
            for cut in 0..bytes.len() {
                assert!(decode_record::<u32>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn timer_index_keys_sort_with_timers_and_name_their_actor() {
        let state = state_key("alarm", "a/b");
        let index = timer_index_key(&state, 42);
        assert_eq!(timer_due(&index), Some(42));
        assert_eq!(timer_key_state_key(&index), Some(&state[..]));
        assert_eq!(timer_key_parts(&index), Some(("alarm", "a/b", "")));
        // Before every timer of the same actor and due time, after every earlier one.
        assert!(index < timer_key(&state, 42, "a"));
        assert!(timer_key(&state, 41, "z") < index);
        // Its value is no timer record.
        assert!(decode_timer(&TIMER_INDEX).is_err());
    }

    #[test]
    fn envelopes_round_trip_and_reject_garbage() {
        let record = OutboxRecord {
            target: ActorRef {
                actor: "a".into(),
                key: "k".into(),
            },
            payload: Payload::Message {
                handler: "add".into(),
                args: vec![1, 2],
            },
            idempotency: None,
            cause: Default::default(),
            group: None,
        };
        let bytes = encode_envelope(&record).unwrap();
        assert_eq!(decode_envelope::<OutboxRecord>(&bytes).unwrap(), record);
        let timer = TimerRecord {
            target: record.target.clone(),
            name: "t".into(),
            message: record.payload.clone(),
            due_ms: 5,
            every_ms: None,
        };
        let bytes = encode_timer(&timer).unwrap();
        assert_eq!(bytes[0], ENVELOPE_V2);
        assert_eq!(decode_timer(&bytes).unwrap(), timer);
        assert!(decode_timer(&[]).is_err());
        assert!(decode_timer(&[9, 0]).is_err());
        for cut in 0..bytes.len() {
            assert!(decode_timer(&bytes[..cut]).is_err());
        }
        assert!(decode_envelope::<OutboxRecord>(&[]).is_err());
        assert!(decode_envelope::<OutboxRecord>(&[7, 0]).is_err());
        assert!(decode_envelope::<OutboxRecord>(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Golden bytes of every stored format besides the v1 state record (which
    /// `tests/tests/behaviours/stored_format_v1_golden_fixture.rs` pins). `GEARS_WRITE_FIXTURES=1`
    /// writes them once; after that they must never change.
    #[test]
    fn stored_formats_match_golden_fixtures() {
        let meta = ActorMeta {
            timers: Arc::new(vec![TimerEntry {
                name: "expire".into(),
                due_ms: 1_700_000_000_000,
                every_ms: Some(60_000),
                message: None,
            }]),
            subscribers: thin_vec::thin_vec![Subscriber {
                actor: "listener".into(),
                key: "l".into(),
                handler: "on_stock".into(),
            }],
            subscriptions: thin_vec::thin_vec![ActorRef {
                actor: "stock".into(),
                key: "s".into(),
            }],
            dedup: thin_vec::thin_vec!["payment-7".to_string()],
            replies: ThinVec::new(),
            indexed: None,
            processed: ThinVec::new(),
        };
        let with_replies = ActorMeta {
            replies: thin_vec::thin_vec![StoredReply {
                key: "order-42".into(),
                request: 0x1234_5678_9abc_def0,
                ok: false,
                body: br#"{"error":"OutOfStock","detail":{"available":1}}"#.to_vec(),
            }],
            ..meta.clone()
        };
        let outbox = OutboxRecord {
            target: ActorRef {
                actor: "receiver".into(),
                key: "r".into(),
            },
            payload: Payload::Positional(vec![0, 1, b'a', 3]),
            idempotency: Some("payment-7".into()),
            cause: Default::default(),
            group: None,
        };
        // Format 1 wrote timers with their message by handler position.
        let timer_v1 = TimerRecordV1 {
            target: ActorRef {
                actor: "alarm".into(),
                key: "a".into(),
            },
            name: "expire".into(),
            message: vec![3, 1, b'x'],
            due_ms: 1_700_000_000_000,
            every_ms: None,
        };
        let named = OutboxRecord {
            payload: Payload::Message {
                handler: "receive".into(),
                args: vec![3, b'a', b'p', b'p', 10],
            },
            ..outbox.clone()
        };
        let timer = TimerRecord {
            target: timer_v1.target.clone(),
            name: "expire".into(),
            message: Payload::Message {
                handler: "ring".into(),
                args: vec![6, b'e', b'x', b'p', b'i', b'r', b'e'],
            },
            due_ms: 1_700_000_000_000,
            every_ms: Some(60_000),
        };
        // Format 4: the timer's message in the record, and the actor's index entry.
        let with_index = ActorMeta {
            timers: Arc::new(vec![TimerEntry {
                message: Some(TimerMessage::encode(&timer.message).unwrap()),
                ..meta.timers[0].clone()
            }]),
            indexed: Some(1_699_999_990_000),
            ..meta.clone()
        };
        let kept = KeptResult {
            request: 0x1234_5678_9abc_def0,
            ok: true,
            body: br#"{"status":"Shipping"}"#.to_vec(),
        };
        // Format 5: the outbox entries processed that the frontier may not have passed.
        let with_processed = ActorMeta {
            processed: thin_vec::thin_vec![
                OutboxId {
                    shard: 7,
                    seq: 1_764_000_000_000_000_001,
                },
                OutboxId { shard: 255, seq: 3 },
            ],
            ..with_index.clone()
        };
        let fixtures = [
            (
                "state_v2_counter_300_with_meta.bin",
                encode_record(1, &meta, &300u64).unwrap(),
            ),
            ("outbox_v1_message.bin", encode_envelope(&outbox).unwrap()),
            ("timer_v1_one_shot.bin", encode_envelope(&timer_v1).unwrap()),
            (
                "state_v3_counter_300_with_replies.bin",
                encode_record(1, &with_replies, &300u64).unwrap(),
            ),
            ("kept_v1_http_result.bin", encode_envelope(&kept).unwrap()),
            (
                "outbox_v1_named_message.bin",
                encode_envelope(&named).unwrap(),
            ),
            (
                "timer_v2_named_periodic.bin",
                encode_timer(&timer).unwrap().into(),
            ),
            (
                "state_v4_counter_300_with_kept_timer.bin",
                encode_record(1, &with_index, &300u64).unwrap(),
            ),
            ("timer_index_v1.bin", TIMER_INDEX.into()),
            (
                "state_v5_counter_300_with_processed.bin",
                encode_record(1, &with_processed, &300u64).unwrap(),
            ),
            (
                "outbox_v2_group_of_two.bin",
                encode_group(&[outbox.clone(), named.clone()]).unwrap(),
            ),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for (name, bytes) in &fixtures {
            let path = dir.join(name);
            if std::env::var_os("GEARS_WRITE_FIXTURES").is_some() && !path.exists() {
                std::fs::write(&path, bytes).unwrap();
            }
            let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                &golden[..],
                &bytes[..],
                "{name} changed: stored data would be misread"
            );
        }
        let golden = std::fs::read(dir.join(fixtures[0].0)).unwrap();
        assert_eq!(decode_record::<u64>(&golden).unwrap(), (1, meta, 300));
        let golden = std::fs::read(dir.join(fixtures[1].0)).unwrap();
        assert_eq!(decode_envelope::<OutboxRecord>(&golden).unwrap(), outbox);
        let golden = std::fs::read(dir.join(fixtures[2].0)).unwrap();
        let v1 = decode_timer(&golden).unwrap();
        assert_eq!(v1.message, Payload::Positional(timer_v1.message));
        assert_eq!(
            (v1.name, v1.due_ms, v1.every_ms),
            ("expire".into(), timer_v1.due_ms, None)
        );
        let golden = std::fs::read(dir.join(fixtures[3].0)).unwrap();
        assert_eq!(golden[0], STATE_RECORD_V3);
        assert_eq!(
            decode_record::<u64>(&golden).unwrap(),
            (1, with_replies, 300)
        );
        let golden = std::fs::read(dir.join(fixtures[4].0)).unwrap();
        assert_eq!(decode_envelope::<KeptResult>(&golden).unwrap(), kept);
        let golden = std::fs::read(dir.join(fixtures[5].0)).unwrap();
        assert_eq!(decode_envelope::<OutboxRecord>(&golden).unwrap(), named);
        let golden = std::fs::read(dir.join(fixtures[6].0)).unwrap();
        assert_eq!(decode_timer(&golden).unwrap(), timer);
        let golden = std::fs::read(dir.join(fixtures[7].0)).unwrap();
        assert_eq!(golden[0], STATE_RECORD_V4);
        assert_eq!(decode_record::<u64>(&golden).unwrap(), (1, with_index, 300));
        let golden = std::fs::read(dir.join(fixtures[9].0)).unwrap();
        assert_eq!(golden[0], STATE_RECORD_V5);
        assert_eq!(
            decode_record::<u64>(&golden).unwrap(),
            (1, with_processed, 300)
        );
        let golden = std::fs::read(dir.join(fixtures[10].0)).unwrap();
        assert_eq!(group_len(&golden), Some(2));
        assert_eq!(
            decode_outbox(&golden).unwrap(),
            OutboxValue::Group(vec![outbox.clone(), named.clone()])
        );
    }

    #[test]
    fn an_outbox_value_is_one_message_a_group_or_a_processed_mark() {
        let record = |n: u8| OutboxRecord {
            target: ActorRef {
                actor: "tally".into(),
                key: format!("t{n}"),
            },
            payload: Payload::Message {
                handler: "record".into(),
                args: vec![n],
            },
            idempotency: None,
            cause: Default::default(),
            group: None,
        };
        let one = encode_envelope(&record(1)).unwrap();
        assert_eq!(decode_outbox(&one).unwrap(), OutboxValue::One(record(1)));
        assert_eq!(group_len(&one), None);
        assert_eq!(
            decode_outbox(OUTBOX_PROCESSED).unwrap(),
            OutboxValue::Processed
        );
        assert_eq!(group_len(OUTBOX_PROCESSED), None);

        // A group stored under 40 numbers its messages 41, 42, 43, in sending order.
        let three: Vec<_> = (1..=3).map(record).collect();
        let at = OutboxId { shard: 5, seq: 40 };
        let bytes = encode_group(&three).unwrap();
        assert_eq!(group_len(&bytes), Some(3));
        let messages: Vec<_> = outbox_messages(at, decode_outbox(&bytes).unwrap()).collect();
        let ids: Vec<_> = messages.iter().map(|(id, _)| (id.shard, id.seq)).collect();
        assert_eq!(ids, [(5, 41), (5, 42), (5, 43)]);
        for ((id, found), (n, sent)) in messages.iter().zip((1..).zip(&three)) {
            assert_eq!(found.target, sent.target, "message {n}");
            assert_eq!(found.group, Some(40));
            assert_eq!(found.stored_as(*id), at);
        }
        let key = at.key();
        let second = OutboxId { shard: 5, seq: 42 };
        let found = outbox_message(second, &key, &bytes).unwrap().unwrap();
        assert_eq!(found.target.key, "t2");
        assert_eq!(
            outbox_message(OutboxId { shard: 5, seq: 44 }, &key, &bytes),
            Ok(None)
        );
        assert_eq!(outbox_message(second, &key, OUTBOX_PROCESSED), Ok(None));

        // Refused: a group of one (written as one message), of too many, an unknown format.
        assert!(decode_outbox(&encode_group(&three[..1]).unwrap()).is_err());
        let many = vec![record(0); MAX_GROUP + 1];
        assert!(decode_outbox(&encode_group(&many).unwrap()).is_err());
        assert!(decode_outbox(&[3, 0]).is_err());
        assert!(decode_outbox(&[0, 0]).is_err());
        assert!(decode_outbox(&[]).is_err());
    }

    #[test]
    fn results_kept_in_records_by_older_versions_are_found_and_taken() {
        let mut meta = ActorMeta {
            dedup: thin_vec::thin_vec!["payment-7".to_string()],
            replies: thin_vec::thin_vec![StoredReply {
                key: "order-42".into(),
                request: 9,
                ok: false,
                body: b"{}".to_vec(),
            }],
            ..ActorMeta::default()
        };
        let reply = KeptResult {
            request: 9,
            ok: false,
            body: b"{}".to_vec(),
        };
        assert_eq!(meta.legacy_result("order-42"), Some(reply.clone()));
        assert_eq!(meta.legacy_result("payment-7"), Some(KeptResult::send()));
        assert_eq!(meta.legacy_result("other"), None);
        let taken: Vec<_> = meta.take_legacy_results().collect();
        assert_eq!(
            taken,
            [
                ("order-42".to_string(), reply),
                ("payment-7".to_string(), KeptResult::send())
            ]
        );
        assert!(meta.is_empty(), "the record keeps them no more");
    }

    #[test]
    fn kept_keys_are_ranged_by_actor_and_expiry() {
        let a = state_key("counter", "a");
        let ab = state_key("counter", "ab");
        let k = kept_key(&a, "req-1", 500);
        assert!(k.starts_with(&kept_prefix(&a, "req-1")));
        assert_eq!(&k[..2], &a[..2], "starts with the actor's shard");
        assert_eq!(kept_expiry(&k), Some(500));
        // Another actor whose key extends this one's is not under its prefix, nor is a key
        // that extends this idempotency key.
        assert!(!kept_key(&ab, "req-1", 500).starts_with(&kept_prefix(&a, "req-1")));
        assert!(!kept_key(&a, "req-10", 500).starts_with(&kept_prefix(&a, "req-1")));
        let e = expiry_key(&k, 500);
        assert_eq!(&e[..2], &a[..2]);
        assert_eq!(kept_key_of_expiry(&e), Some(k.as_slice()));
        assert!(
            expiry_key(&kept_key(&a, "x", 499), 499) < expiry_key(&kept_key(&a, "a", 500), 500)
        );
        assert_eq!(
            validate_idempotency_key(""),
            Err("an idempotency key must be 1 to 255 bytes, not 0".into())
        );
        assert!(validate_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN)).is_ok());
        assert!(validate_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn timer_keys_sort_by_shard_then_due_time() {
        let a = timer_key(b"\x00\x07zz", 5, "x");
        let b = timer_key(b"\x00\x07aa", 6, "a");
        let other_shard = timer_key(b"\x00\x08aa", 1, "a");
        assert!(a < b && b < other_shard);
        assert_eq!(timer_due(&a), Some(5));
        assert!(a.as_slice() < timer_range_key(7, 6).as_slice());
        assert!(b.as_slice() >= timer_range_key(7, 6).as_slice());
        // A format-1 key: `due · len(state key) · state key · name`.
        let mut v1 = 5u64.to_be_bytes().to_vec();
        v1.extend_from_slice(&4u16.to_be_bytes());
        v1.extend_from_slice(b"\x00\x07zz");
        v1.extend_from_slice(b"x");
        assert_eq!(timer_key_from_v1(&v1), Some(a));
        assert_eq!(timer_key_from_v1(&v1[..9]), None);
    }

    #[test]
    fn outbox_keys_are_ranged_by_shard() {
        let id = OutboxId { shard: 3, seq: 9 };
        let key = id.key();
        assert_eq!(&key[..2], &[0, 3]);
        assert_eq!(OutboxId::of_key(&key), Some(id));
        assert!(OutboxId { shard: 3, seq: 10 }.key() > key);
        assert!(OutboxId { shard: 4, seq: 1 }.key() > OutboxId { shard: 3, seq: 10 }.key());
        assert_eq!(OutboxId::of_key(&key[..9]), None);
        assert_eq!(outbox_seq_v1(&9u64.to_be_bytes()), Some(9));
    }

    #[test]
    fn shard_of_hashes_type_zero_key_on_the_stack_or_not() {
        // Shards are in every stored key: the hash is the same for every length, whether
        // `type · 0 · key` fits the stack buffer or not.
        for len in [0, 1, 150, 182, 183, 184, 185, 400] {
            let key = "k".repeat(len);
            let mut whole = b"counter\0".to_vec();
            whole.extend_from_slice(key.as_bytes());
            let expected = (xxh3_64_with_seed(&whole, SHARD_SEED) % u64::from(SHARDS)) as u16;
            assert_eq!(shard_of("counter", &key), expected, "key of {len} bytes");
        }
        // Pinned: what every store written so far has in its keys.
        assert_eq!(shard_of("counter", "a"), 17);
        assert_eq!(shard_of("InventoryItem", "sku-1"), 218);
    }

    #[test]
    fn state_key_starts_with_its_shard() {
        let k = state_key("counter", "a");
        let shard = u16::from_be_bytes([k[0], k[1]]);
        assert!(shard < SHARDS);
        assert_eq!(shard, shard_of("counter", "a"));
        assert_eq!(&k[2..], b"\x07countera");
    }
}
