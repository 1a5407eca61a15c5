//! A full mailbox refuses calls with `Overloaded` instead of growing memory; accepted calls
//! all complete.

use gears::CallError;
use gears_tests::{Counter, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_mailbox_capacity_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 4;
    let rt = builder(dir.path())
        .mailbox_capacity(capacity)
        .open()
        .await
        .unwrap();
    let c = rt.get::<Counter>("busy");
    let blocker = tokio::spawn({
        let c = c.clone();
        async move { c.slow_add(1, 500).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let flood: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.add(1).await })
        })
        .collect();
    let (mut ok, mut overloaded) = (0u64, 0u64);
    for call in flood {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CallError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    blocker.await.unwrap().unwrap();
    assert!(ok <= capacity as u64, "accepted {ok} with the key busy");
    assert!(overloaded >= 50 - capacity as u64);
    assert_eq!(rt.stats().rejected, overloaded);
    assert_eq!(
        c.get().await.unwrap(),
        1 + ok,
        "every accepted call was applied"
    );
    rt.shutdown().await.unwrap();
}
