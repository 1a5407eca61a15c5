//! Byte layouts of everything Gears stores: storage keys and versioned state records.
//!
//! postcard is not self-describing, so every stored value starts with a format byte; a
//! change of layout gets a new byte and the old one stays readable (golden fixtures in
//! `tests/fixtures` pin each version).

use serde::{Serialize, de::DeserializeOwned};
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
pub(crate) const STATE_RECORD_V1: u8 = 1;

/// Version of the store layout as a whole, kept in the `meta` keyspace.
pub(crate) const STORE_FORMAT: u32 = 1;

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
pub fn shard_of(actor: &str, key: &str) -> u16 {
    let mut buf = Vec::with_capacity(actor.len() + 1 + key.len());
    buf.extend_from_slice(actor.as_bytes());
    buf.push(0);
    buf.extend_from_slice(key.as_bytes());
    (xxh3_64_with_seed(&buf, SHARD_SEED) % u64::from(SHARDS)) as u16
}

/// The storage key of an actor's state: `shard (u16 BE) · len(type) (u8) · type · key`.
///
/// Shard first, so a shard is one contiguous range that scale-out can move.
pub fn state_key(actor: &str, key: &str) -> Vec<u8> {
    debug_assert!(actor.len() <= usize::from(u8::MAX));
    let mut out = Vec::with_capacity(3 + actor.len() + key.len());
    out.extend_from_slice(&shard_of(actor, key).to_be_bytes());
    out.push(actor.len() as u8);
    out.extend_from_slice(actor.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Encodes a state record (version 1).
pub(crate) fn encode_state<A: Serialize>(schema: u32, state: &A) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.push(STATE_RECORD_V1);
    out = postcard::to_extend(&schema, out).map_err(|e| e.to_string())?;
    postcard::to_extend(state, out).map_err(|e| format!("cannot encode state: {e}"))
}

/// Decodes a state record of any supported version, returning its schema version and state.
pub(crate) fn decode_state<A: DeserializeOwned>(bytes: &[u8]) -> Result<(u32, A), String> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err("empty record".into());
    };
    if format != STATE_RECORD_V1 {
        return Err(format!(
            "unknown record format {format} (this build reads format {STATE_RECORD_V1})"
        ));
    }
    let (schema, rest) =
        postcard::take_from_bytes::<u32>(rest).map_err(|e| format!("bad schema version: {e}"))?;
    let (state, rest) =
        postcard::take_from_bytes::<A>(rest).map_err(|e| format!("bad state bytes: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the state", rest.len()));
    }
    Ok((schema, state))
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
    fn state_key_starts_with_its_shard() {
        let k = state_key("counter", "a");
        let shard = u16::from_be_bytes([k[0], k[1]]);
        assert!(shard < SHARDS);
        assert_eq!(shard, shard_of("counter", "a"));
        assert_eq!(&k[2..], b"\x07countera");
    }
}
