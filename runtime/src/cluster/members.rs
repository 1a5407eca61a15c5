//! Membership: heartbeats in the members bucket, the live members, and which of them should
//! own each shard (rendezvous hashing: when a member joins or leaves, only the shards whose
//! top choice it is or was move).

use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::Error;

use super::nats_error;

/// A heartbeat's format, its first byte; then the node's incarnation (u64, big-endian).
const HEARTBEAT_V1: u8 = 1;

/// Seeds the rendezvous scores (any fixed value: every node must compute the same).
const RENDEZVOUS_SEED: u64 = 0x6765_6172_735f_7276;

/// Puts this node's heartbeat: it stays a member for the bucket's entry lifetime.
pub(super) async fn heartbeat(
    members: &kv::Store,
    node: &str,
    incarnation: u64,
) -> Result<(), Error> {
    let mut value = vec![HEARTBEAT_V1];
    value.extend(incarnation.to_be_bytes());
    members
        .put(node, value.into())
        .await
        .map(drop)
        .map_err(|e| nats_error("put this node's heartbeat", e))
}

/// Removes this node's heartbeat (leaving the cluster).
pub(super) async fn leave(members: &kv::Store, node: &str) -> Result<(), Error> {
    members
        .delete(node)
        .await
        .map_err(|e| nats_error("remove this node's heartbeat", e))
}

/// The live members, sorted (every key of the members bucket: deleted and expired ones are
/// not listed).
pub(super) async fn live(members: &kv::Store) -> Result<Vec<Arc<str>>, Error> {
    let mut keys: Vec<Arc<str>> = members
        .keys()
        .await
        .map_err(|e| nats_error("list the members", e))?
        .map_ok(Arc::from)
        .try_collect()
        .await
        .map_err(|e| nats_error("list the members", e))?;
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The member that should own `shard`: the highest score of (member, shard), ties broken by
/// name so every node picks the same.
pub(super) fn owner(shard: u16, members: &[Arc<str>]) -> Option<&Arc<str>> {
    members
        .iter()
        .max_by_key(|m| (score(m, shard), Arc::clone(m)))
}

fn score(member: &str, shard: u16) -> u64 {
    let mut bytes = Vec::with_capacity(member.len() + 2);
    bytes.extend_from_slice(member.as_bytes());
    bytes.extend_from_slice(&shard.to_be_bytes());
    xxh3_64_with_seed(&bytes, RENDEZVOUS_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SHARDS;

    fn members(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn shards_spread_over_members_and_only_a_leavers_shards_move() {
        let three = members(&["a", "b", "c"]);
        let two = members(&["a", "c"]);
        let mut counts = std::collections::HashMap::new();
        for shard in 0..SHARDS {
            let before = owner(shard, &three).unwrap();
            *counts.entry(before.clone()).or_insert(0) += 1;
            let after = owner(shard, &two).unwrap();
            if &**before != "b" {
                assert_eq!(before, after, "shard {shard} moved though its owner stayed");
            }
        }
        for (member, count) in counts {
            assert!((50..=120).contains(&count), "{member} owns {count} shards");
        }
        assert_eq!(owner(0, &[]), None);
    }
}
