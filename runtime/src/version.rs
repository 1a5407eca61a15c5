//! Versions of an actor's state shape: the [`StateVersion`] chain a stored record is read
//! through, oldest to current, and the refusal of records newer than the code.

use serde::de::DeserializeOwned;

use crate::codec::{ActorMeta, decode_state_bytes};

/// One version of the shape of an actor's state, as stored: the actor's type itself
/// (`#[derive(Actor)]`, `#[actor(version = N, previous = Older)]`), or an older shape kept
/// to read old records (`#[derive(StateVersion)]`, `#[state(version = N, previous = ..)]`).
///
/// postcard, the stored encoding, is not self-describing: a struct that gains, loses or
/// renames a field cannot read records of its old shape (`#[serde(default)]` does not help).
/// So each shape is a type of its own, the record says which version wrote it, and an old
/// record is read as its version's type and converted with `From`, one version at a time,
/// to the current one. It is written back in the current version with the actor's next
/// write. A record of a version newer than the code is refused, never overwritten.
pub trait StateVersion: DeserializeOwned + Send + 'static {
    /// This shape's version number, stored with every record written from it.
    const VERSION: u32;

    /// Decodes state bytes that version `version` of this chain wrote (at most
    /// [`Self::VERSION`]) and converts them up to this version.
    #[doc(hidden)]
    fn __decode_version(version: u32, bytes: &[u8]) -> Result<Self, String>;
}

/// Decodes a state record of any supported format as an actor's current state: a record
/// of an older state version is read as that version and migrated ([`StateVersion`]); one of
/// a newer version is refused.
pub(crate) fn decode_versioned<A: StateVersion>(bytes: &[u8]) -> Result<(ActorMeta, A), String> {
    let (version, meta, state) = crate::codec::split_record(bytes)?;
    if version > A::VERSION {
        return Err(format!(
            "the record was written by version {version} of the state, newer than this code's \
             version {}: it is not read (nor overwritten) until code that knows version \
             {version} runs",
            A::VERSION
        ));
    }
    Ok((meta, A::__decode_version(version, state)?))
}

/// Reads a record of `S`'s own version (what a state without an older version does).
pub fn decode_version<S: StateVersion>(version: u32, bytes: &[u8]) -> Result<S, String> {
    if version == S::VERSION {
        decode_state_bytes(bytes)
    } else {
        Err(format!(
            "no state version {version} is known (the oldest kept is {}: name it with \
             `previous = ...` to read older records)",
            S::VERSION
        ))
    }
}

/// Reads a record of `S`'s version, or of an older one through `P` and `From`.
pub fn decode_or_migrate<S: StateVersion + From<P>, P: StateVersion>(
    version: u32,
    bytes: &[u8],
) -> Result<S, String> {
    if version == S::VERSION {
        decode_state_bytes(bytes)
    } else {
        P::__decode_version(version, bytes).map(S::from)
    }
}
