//! The durability modes do what they promise at the journal, counted where the store picks
//! the persist mode: under `Durability::Sync` every commit batch's journal persist is an
//! fsync and none is a mere flush to the OS; under `Buffered` every one is a flush and none an
//! fsync; shutdown fsyncs once in both. A store that flushed where it should fsync passes the
//! SIGKILL tests (the page cache outlives a killed process) but fails this one.

use gears::{Durability, Runtime};
use gears_tests::{Counter, builder, open};

/// Concurrent writers, then sequential ones: batches of many writes and of one.
const CONCURRENT: u64 = 200;
const SEQUENTIAL: u64 = 20;

async fn write(rt: &Runtime) {
    let calls: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.get::<Counter>(format!("k{i}")).add(1).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    for i in 0..SEQUENTIAL {
        assert_eq!(rt.get::<Counter>("one").add(1).await.unwrap(), i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_fsyncs_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .durability(Durability::Sync)
        .open()
        .await
        .unwrap();
    write(&rt).await;
    let stats = rt.stats();
    assert!(stats.commit_batches > SEQUENTIAL, "{stats:?}");
    assert_eq!(stats.journal_syncs, stats.commit_batches, "{stats:?}");
    assert_eq!(
        (stats.journal_fsyncs, stats.journal_flushes),
        (stats.commit_batches, 0),
        "every batch fsynced, none only flushed: {stats:?}"
    );
    rt.shutdown().await.unwrap();
    let after = rt.stats();
    assert_eq!(
        (after.journal_fsyncs, after.journal_flushes),
        (stats.commit_batches + 1, 0),
        "shutdown fsyncs once more: {after:?}"
    );
    drop(rt);
    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("one").get().await.unwrap(), SEQUENTIAL);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_flushes_every_batch_and_fsyncs_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    write(&rt).await;
    let stats = rt.stats();
    assert!(stats.commit_batches > SEQUENTIAL, "{stats:?}");
    assert_eq!(stats.journal_syncs, stats.commit_batches, "{stats:?}");
    assert_eq!(
        (stats.journal_fsyncs, stats.journal_flushes),
        (0, stats.commit_batches),
        "every batch flushed to the OS, none fsynced: {stats:?}"
    );
    rt.shutdown().await.unwrap();
    let after = rt.stats();
    assert_eq!(
        (after.journal_fsyncs, after.journal_flushes),
        (1, stats.commit_batches),
        "shutdown fsyncs: {after:?}"
    );
    drop(rt);
    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("one").get().await.unwrap(), SEQUENTIAL);
    rt.shutdown().await.unwrap();
}
