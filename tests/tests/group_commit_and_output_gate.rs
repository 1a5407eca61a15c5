//! Group commit and the output gate: writes that arrive while a batch is being synced go into
//! the next single batch (one journal sync), a key written several times in a batch is written
//! once, a turn may run before the previous commit finished, and no reply leaves before its
//! write is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gears::__private::CommitStage;
use gears_tests::{Counter, builder, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_writes_need_few_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let calls = (0..1000).map(|i| {
        let rt = rt.clone();
        tokio::spawn(async move { rt.get::<Counter>(format!("key-{i}")).add(1).await })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap(), 1);
    }
    let stats = rt.stats();
    eprintln!("1,000 writes to 1,000 keys: {stats:?}");
    assert_eq!(stats.writes + stats.coalesced_writes, 1000, "{stats:?}");
    // One sync per write would be 1,000. Typically 15-70 here; the bound leaves room for a
    // loaded CI machine where fast fsyncs and starved callers make batches small.
    assert!(stats.journal_syncs <= 250, "too many syncs: {stats:?}");
    assert!(stats.max_batch > 1, "{stats:?}");
    rt.shutdown().await.unwrap();
}

/// A commit hook that sets `entered` and holds the committer before writing while `hold`
/// is set.
fn holding_hook(hold: Arc<AtomicBool>, entered: Arc<AtomicBool>) -> gears::__private::FaultHook {
    Arc::new(move |stage| {
        if stage == CommitStage::BeforeWrite {
            entered.store(true, Ordering::Release);
            while hold.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_for_durability_and_next_turns_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let hold = Arc::new(AtomicBool::new(true));
    let entered = Arc::new(AtomicBool::new(false));
    let rt = builder(dir.path())
        .__fault_hook(holding_hook(hold.clone(), entered.clone()))
        .open()
        .await
        .unwrap();
    let c = rt.get::<Counter>("gated");

    // The first write reaches the committer, which is held before writing it.
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.add(1).await }
    });
    while !entered.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Later turns of the same key run meanwhile (they do not wait for the commit) and all
    // land in the next batch, where the key is written once.
    let later: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.add(1).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let wait_for_turns = |n: u64| {
        let rt = rt.clone();
        async move {
            while rt.stats().turns < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "turns did not run: {:?}",
                    rt.stats()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    wait_for_turns(6).await;
    // A read after the five writes ran: it sees their state, so it must wait for them too.
    let reader = tokio::spawn({
        let c = c.clone();
        async move { c.get().await }
    });
    wait_for_turns(7).await;
    // Every turn ran, but nothing is durable: no reply may have left, the read included.
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

    hold.store(false, Ordering::Release);
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
