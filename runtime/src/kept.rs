//! Expiry of the outcomes of idempotent requests.
//!
//! An HTTP call with an `Idempotency-Key` and a keyed send keep their outcome under a key
//! of their own in the `replies` keyspace (see [`crate::codec::kept_key`]), written in the
//! batch of the turn that produced it, with an entry in the `reply_expiry` index. A lookup
//! ignores an outcome past its expiry, so the retention is exact whether or not it has been
//! removed yet; the host removes expired ones in the background, a bounded batch at a time.
//! The expiry is part of the key: a removal can never take an outcome kept again later for
//! the same idempotency key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::codec::kept_key_of_expiry;
use crate::commit::KeyWrite;
use crate::error::Failure;
use crate::shared::Shared;
use crate::store::Space;

/// Expired outcomes removed per commit.
const BATCH: usize = 1024;

/// How often the host looks for expired outcomes: often enough that they do not pile up
/// long past their retention, rarely enough to cost nothing when there are none.
pub(crate) fn check_every(retention: Duration) -> Duration {
    (retention / 8).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Removes up to one batch of expired outcomes (and their index entries) in one commit, and
/// waits until it is durable. Returns whether a full batch was removed (there may be more).
pub(crate) async fn remove_expired(shared: &Arc<Shared>) -> Result<bool, Failure> {
    let now = shared.clock.epoch_ms();
    // Only the shards served here: a cluster node writes nothing to another node's shards.
    let served: Vec<u16> = crate::shared::ALL_SHARDS
        .filter(|&s| {
            matches!(
                shared.placement.place(s),
                crate::placement::Place::Local { .. }
            )
        })
        .collect();
    let expired = shared
        .with_store("expiry scan", move |store| {
            if served.len() == crate::shared::ALL_SHARDS.len() {
                return store.expired_results(crate::shared::ALL_SHARDS, now, BATCH);
            }
            let mut expired = Vec::new();
            for shard in served {
                let left = BATCH - expired.len();
                if left == 0 {
                    break;
                }
                expired.extend(store.expired_results(shard..shard + 1, now, left)?);
            }
            Ok(expired)
        })
        .await?;
    if expired.is_empty() {
        return Ok(false);
    }
    let mut writes = Vec::with_capacity(expired.len() * 2);
    for index in &expired {
        if let Some(kept) = kept_key_of_expiry(index) {
            writes.push(KeyWrite {
                space: Space::Kept,
                key: kept.into(),
                value: None,
            });
        }
        writes.push(KeyWrite {
            space: Space::Expiry,
            key: index.as_slice().into(),
            value: None,
        });
    }
    shared
        .committer
        .submit(writes, None, None)
        .await
        .wait()
        .await?;
    shared
        .metrics
        .kept_expired
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    Ok(expired.len() == BATCH)
}
