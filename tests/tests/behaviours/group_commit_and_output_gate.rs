//! Group commit and the output gate: writes that arrive while a batch is being synced go into
//! the next single batch (one journal sync), a key written several times in a batch is written
//! once, a turn may run before the previous commit finished, and no reply leaves before its
//! write is durable.

use std::time::Duration;

use gears::__private::CommitStage;
use gears_tests::gate::CommitGate;
use gears_tests::{Counter, open, wait_for_stats};

/// Writes queued behind a held batch.
const QUEUED: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_a_held_batch_take_a_few_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = gate.open_runtime(dir.path()).await;
    // One write reaches the committer, which is held before writing it...
    gate.close();
    let first = tokio::spawn({
        let rt = rt.clone();
        async move { rt.get::<Counter>("first").add(1).await }
    });
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    // ...while 1,000 more turns run and queue their writes behind it.
    let calls: Vec<_> = (0..QUEUED)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.get::<Counter>(format!("key-{i}")).add(1).await })
        })
        .collect();
    wait_for_stats(&rt, "every turn ran", |s| s.turns == QUEUED + 1).await;
    assert_eq!(rt.stats().commit_batches, 0);
    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    let stats = rt.stats();
    eprintln!("1,000 writes to 1,000 keys queued behind a held batch: {stats:?}");
    assert_eq!(
        stats.writes + stats.coalesced_writes,
        QUEUED + 1,
        "{stats:?}"
    );
    // The held batch, then one for everything queued behind it (a turn counted a moment
    // before it handed its write over may miss it and take another): a cap on the batch
    // size (250 syncs with batches of 4) or one sync per write would show here.
    assert!(stats.journal_syncs <= 4, "too many syncs: {stats:?}");
    assert_eq!(stats.journal_syncs, stats.commit_batches, "{stats:?}");
    assert!(stats.max_batch >= QUEUED - 2, "{stats:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_for_durability_and_next_turns_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = gate.open_runtime(dir.path()).await;
    gate.close();
    let c = rt.get::<Counter>("gated");

    // The first write reaches the committer, which is held before writing it.
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.add(1).await }
    });
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    // Later turns of the same key run meanwhile (they do not wait for the commit) and all
    // land in the next batch, where the key is written once.
    let later: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.add(1).await })
        })
        .collect();
    wait_for_stats(&rt, "6 turns", |s| s.turns >= 6).await;
    // A read after the five writes ran: it sees their state, so it must wait for them too.
    let reader = tokio::spawn({
        let c = c.clone();
        async move { c.get().await }
    });
    wait_for_stats(&rt, "7 turns", |s| s.turns >= 7).await;
    // Every turn ran, but nothing is durable: no reply may have left, the read included
    // (given the time to, if it wrongly would).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !first.is_finished(),
        "a reply left before its write was durable"
    );
    assert!(later.iter().all(|t| !t.is_finished()));
    assert!(
        !reader.is_finished(),
        "a read saw a state that was not durable"
    );
    assert_eq!(rt.stats().commit_batches, 0);

    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let mut values: Vec<u64> = Vec::new();
    for t in later {
        values.push(t.await.unwrap().unwrap());
    }
    values.sort_unstable();
    assert_eq!(values, vec![2, 3, 4, 5, 6]);
    assert_eq!(reader.await.unwrap().unwrap(), 6);
    let stats = rt.stats();
    assert_eq!(stats.commit_batches, 2, "{stats:?}");
    assert_eq!(stats.journal_syncs, 2, "{stats:?}");
    assert_eq!(stats.writes, 2, "{stats:?}");
    assert_eq!(stats.coalesced_writes, 4, "{stats:?}");
    rt.shutdown().await.unwrap();

    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("gated").get().await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}
