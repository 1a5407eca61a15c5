//! The format of calls between nodes (feature `cluster`): a routed call, what it asks
//! ([`Op`]) and its answer ([`Done`] or a [`WireFailure`]), versioned by a first byte and
//! encoded with postcard. Handlers travel by name; enum variants are only ever added at the
//! end. `handle/route.rs` sends them, `remote.rs` serves them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Payload;
use crate::error::{DecodeError, Failure, Overload, StorageError};

/// The format of a routed call and of its reply: their first byte. Enum variants are only
/// ever added at the end, and handlers travel by name.
pub(crate) const ROUTED_V1: u8 = 1;

/// A call to an actor, as it travels to the node that serves it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RoutedCall {
    pub(crate) actor: String,
    pub(crate) key: String,
    pub(crate) op: Op,
    /// The actors waiting on this call, innermost first (type, key): a cycle across nodes
    /// is refused as one on a node is.
    pub(crate) chain: Vec<(String, String)>,
    /// How long the caller still waits, in milliseconds.
    pub(crate) timeout_ms: u64,
}

/// What to do with the actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Run `handler` with its postcard-encoded arguments.
    Call { handler: String, args: Vec<u8> },
    /// Run `handler` once under the idempotency id `id` (`request`: the hash of the
    /// request, as [`KeyedCall`]), keeping its result encoded as JSON or postcard.
    Keyed {
        handler: String,
        args: Vec<u8>,
        id: String,
        request: u64,
        json: bool,
    },
    /// Answer the actor's state record (its state and metadata).
    Read,
    /// Delete the actor.
    Delete,
    /// Deliver a durable message (an outbox entry of another shard, stored key `entry`):
    /// the target's turn keeps `idempotency`, so a repeat is not processed again.
    Deliver {
        payload: Payload,
        idempotency: String,
        entry: Vec<u8>,
        retry: bool,
    },
    /// Up to `limit` keys of the actor type with stored state in `shard`, after `after`.
    Keys {
        shard: u16,
        after: Option<String>,
        limit: u32,
    },
}

/// The events of one committed turn, as a node publishes them for watchers elsewhere.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Published {
    /// The node whose turn published them (it hands them to its own watchers directly).
    pub(crate) node: String,
    pub(crate) key: String,
    /// The events, postcard-encoded as a sequence of the actor's event type.
    pub(crate) events: Vec<u8>,
}

/// The answer to a [`RoutedCall`].
pub(crate) type RoutedReply = Result<Done, WireFailure>;

/// What a routed call did.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Done {
    /// The handler's result in postcard (`ok: false`: its error).
    Value { ok: bool, bytes: Vec<u8> },
    /// A [`KeyedOutcome`] with a result.
    Keyed {
        replayed: bool,
        ok: bool,
        body: Vec<u8>,
    },
    /// [`KeyedOutcome::Conflict`].
    Conflict,
    /// The actor's state record.
    State(Vec<u8>),
    /// Deleted.
    Deleted,
    /// The message was processed (or had been).
    Delivered,
    /// Keys with stored state.
    Keys(Vec<String>),
}

/// A [`Failure`] as it crosses nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireFailure {
    Timeout { ms: u64 },
    Overloaded(WireOverload),
    Panicked { handler: String },
    Cycle(String),
    Storage(String),
    Decode { key: String, reason: String },
    Invalid(String),
    NotRegistered,
    ShuttingDown,
    NotOwner(u16),
    Fenced(u16),
    Unavailable(u16),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireOverload {
    Mailbox,
    LiveActivations,
    Outbox,
}

impl WireFailure {
    pub(crate) fn of(failure: Failure) -> WireFailure {
        match failure {
            Failure::Timeout(d) => WireFailure::Timeout {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Overloaded(o) => WireFailure::Overloaded(match o {
                Overload::Mailbox => WireOverload::Mailbox,
                Overload::LiveActivations => WireOverload::LiveActivations,
                Overload::Outbox => WireOverload::Outbox,
            }),
            Failure::Panicked { handler, .. } => WireFailure::Panicked {
                handler: handler.into(),
            },
            Failure::Cycle(c) => WireFailure::Cycle(c),
            Failure::Storage(e) => WireFailure::Storage(e.to_string()),
            Failure::Decode(e) => WireFailure::Decode {
                key: e.key,
                reason: e.reason,
            },
            Failure::InvalidKey(e) => WireFailure::Invalid(e.to_string()),
            Failure::NotRegistered(_) => WireFailure::NotRegistered,
            Failure::ShuttingDown => WireFailure::ShuttingDown,
            Failure::Invalid(why) => WireFailure::Invalid(why),
            Failure::NotOwner(s) => WireFailure::NotOwner(s),
            Failure::Fenced(s) => WireFailure::Fenced(s),
            Failure::Unavailable(s) => WireFailure::Unavailable(s),
        }
    }

    /// The failure as a call to the type named `actor` reports it here; `handler` names a
    /// handler by its name as sent.
    pub(crate) fn into_failure_of(
        self,
        actor: &'static str,
        handler: impl FnOnce(&str) -> &'static str,
    ) -> Failure {
        match self {
            WireFailure::Timeout { ms } => Failure::Timeout(Duration::from_millis(ms)),
            WireFailure::Overloaded(o) => Failure::Overloaded(match o {
                WireOverload::Mailbox => Overload::Mailbox,
                WireOverload::LiveActivations => Overload::LiveActivations,
                WireOverload::Outbox => Overload::Outbox,
            }),
            WireFailure::Panicked { handler: name } => Failure::Panicked {
                actor,
                handler: handler(&name),
            },
            WireFailure::Cycle(c) => Failure::Cycle(c),
            WireFailure::Storage(e) => Failure::Storage(StorageError::new(e)),
            WireFailure::Decode { key, reason } => {
                Failure::Decode(DecodeError { actor, key, reason })
            }
            WireFailure::Invalid(why) => Failure::Invalid(why),
            WireFailure::NotRegistered => Failure::NotRegistered(actor),
            WireFailure::ShuttingDown => Failure::ShuttingDown,
            WireFailure::NotOwner(s) => Failure::NotOwner(s),
            WireFailure::Fenced(s) => Failure::Fenced(s),
            WireFailure::Unavailable(s) => Failure::Unavailable(s),
        }
    }

    /// The call did not run where it went (or the node is stopping): another attempt, at the
    /// shard's current owner, may.
    pub(crate) fn not_run(&self) -> bool {
        matches!(
            self,
            WireFailure::NotOwner(_)
                | WireFailure::Unavailable(_)
                | WireFailure::Fenced(_)
                | WireFailure::ShuttingDown
        )
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a vector fails only for types serde cannot describe (none here); the
    // empty message it would leave is refused by `decode`.
    postcard::to_extend(value, vec![ROUTED_V1]).unwrap_or_default()
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&ROUTED_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable routed message: {e}"))
        }
        Some((format, _)) => Err(format!(
            "a routed message of format {format}, which this build does not know"
        )),
        None => Err("an empty routed message".into()),
    }
}

/// A fresh idempotency id for one routed call (its retries share it). It starts with a
/// control character, as the ids of a turn's calls do: no caller-chosen key can.
pub(crate) fn fresh_id() -> String {
    format!("\u{1}routed:{:032x}", crate::codec::unique_id())
}

/// A reply saying the call could not be answered with what it produced (too large for the
/// transport, ...), so the caller is not left waiting.
pub(crate) fn refusal(why: String) -> Vec<u8> {
    encode::<RoutedReply>(&Err(WireFailure::Invalid(why)))
}

/// The reply of a node whose runtime has stopped: the caller tries the shard's next owner.
pub(crate) fn stopped() -> Vec<u8> {
    encode::<RoutedReply>(&Err(WireFailure::ShuttingDown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_calls_and_replies_round_trip_and_refuse_other_formats() {
        let call = RoutedCall {
            actor: "Counter".into(),
            key: "c-1".into(),
            op: Op::Keyed {
                handler: "add".into(),
                args: vec![5],
                id: fresh_id(),
                request: 7,
                json: false,
            },
            chain: vec![("Order".into(), "o-1".into())],
            timeout_ms: 1500,
        };
        let bytes = encode(&call);
        assert_eq!(bytes[0], ROUTED_V1);
        let back: RoutedCall = decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{call:?}"));
        let mut newer = bytes.clone();
        newer[0] = ROUTED_V1 + 1;
        assert!(
            decode::<RoutedCall>(&newer)
                .unwrap_err()
                .contains("format 2")
        );
        assert!(decode::<RoutedCall>(&[]).is_err());
        let reply: RoutedReply = Err(WireFailure::Fenced(3));
        let back: RoutedReply = decode(&encode(&reply)).unwrap();
        assert!(matches!(back, Err(WireFailure::Fenced(3))));
    }

    #[test]
    fn fresh_ids_differ_and_no_caller_key_can_take_one() {
        let (a, b) = (fresh_id(), fresh_id());
        assert_ne!(a, b);
        assert!(crate::codec::validate_idempotency_key(&a).is_err());
    }

    #[test]
    fn only_failures_of_calls_that_did_not_run_are_retried() {
        assert!(WireFailure::NotOwner(1).not_run());
        assert!(WireFailure::Fenced(1).not_run());
        assert!(WireFailure::Unavailable(1).not_run());
        assert!(!WireFailure::Timeout { ms: 5 }.not_run());
        assert!(!WireFailure::Storage("x".into()).not_run());
        assert!(!WireFailure::Overloaded(WireOverload::Mailbox).not_run());
    }
}
