//! A node that dies between writing a shard's snapshot and purging the log below it leaves a
//! snapshot nobody knows of: the next owner replays the whole log (nothing was purged) and
//! cannot tell from the log that a snapshot exists. Its first snapshot of the shard deletes
//! every older one all the same, so each shard keeps one snapshot (found by a full local run
//! under load: `cluster_takeovers_start_from_snapshots_of_a_purged_log` saw two of one shard
//! after its first node was SIGKILLed).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use gears::cluster::ClusterConfig;
use gears::{CallError, Runtime};
use gears_tests::Counter;
use gears_tests::nats::NatsCluster;

const CLUSTER: &str = "orphans";
const KEY: &str = "k";

/// A node on a fresh store in `dir`, snapshotting every `snapshot_after` entries.
async fn node(urls: &[String], dir: &std::path::Path, id: &str, snapshot_after: u64) -> Runtime {
    let config = ClusterConfig::new(urls, id)
        .name(CLUSTER)
        .replicas(1)
        .lease_ttl(Duration::from_secs(2))
        .snapshot_after(snapshot_after);
    gears_tests::builder(dir)
        .cluster(config)
        .open()
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

/// Adds 1 to the counter, retrying while the node does not serve its shard yet.
async fn add(rt: &Runtime) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.get::<Counter>(KEY).add(1).await {
            Ok(value) => return value,
            Err(e @ (CallError::NotOwner(_) | CallError::Unavailable(_))) => {
                assert!(
                    Instant::now() < deadline,
                    "the node never served {KEY}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("add failed: {e}"),
        }
    }
}

/// The names of the snapshots of `shard` in the cluster's bucket.
async fn snapshots_of(js: &async_nats::jetstream::Context, shard: u16) -> Vec<String> {
    let objects = js
        .get_object_store(format!("gears_{CLUSTER}_snapshots"))
        .await
        .expect("the snapshots' bucket");
    let prefix = format!("s{shard:03}.");
    objects
        .list()
        .await
        .expect("list the snapshots")
        .try_filter(|info| futures::future::ready(!info.deleted && info.name.starts_with(&prefix)))
        .map_ok(|info| info.name)
        .try_collect()
        .await
        .expect("list the snapshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_log_was_never_purged_is_deleted_by_the_next_one() {
    let nats = NatsCluster::start(1);
    let urls = nats.urls();
    let shard = gears::__private::shard_of("counter", KEY);

    // A first node writes a few entries to the shard's log (too few for a snapshot) and
    // leaves.
    let dir_a = tempfile::tempdir().unwrap();
    let a = node(&urls, dir_a.path(), "a", 1_000).await;
    for _ in 0..3 {
        add(&a).await;
    }
    a.shutdown().await.expect("node a stops");

    // What a node killed between its snapshot and its purge leaves: a snapshot of the shard,
    // and the log whole.
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let js = async_nats::jetstream::new(async_nats::connect(addrs).await.expect("connect"));
    let orphan = format!("s{shard:03}.2");
    let objects = js
        .get_object_store(format!("gears_{CLUSTER}_snapshots"))
        .await
        .expect("the snapshots' bucket");
    objects
        .put(
            orphan.as_str(),
            &mut &b"a snapshot nobody purged the log for"[..],
        )
        .await
        .expect("put the orphan");
    assert_eq!(
        snapshots_of(&js, shard).await,
        std::slice::from_ref(&orphan)
    );

    // The next owner replays the log, goes on, and snapshots the shard.
    let dir_b = tempfile::tempdir().unwrap();
    let b = node(&urls, dir_b.path(), "b", 4).await;
    let mut value = 0;
    for _ in 0..8 {
        value = add(&b).await;
    }
    assert_eq!(value, 11, "node b replays node a's three adds");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = snapshots_of(&js, shard).await;
        if b.stats().snapshots_written > 0 && !names.contains(&orphan) {
            assert_eq!(names.len(), 1, "one snapshot of shard {shard}: {names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} still has the snapshot its log never lost after node b's \
             snapshots ({} written): {names:?}",
            b.stats().snapshots_written
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.shutdown().await.expect("node b stops");
}
