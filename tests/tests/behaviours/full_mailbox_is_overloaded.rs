//! A full mailbox refuses calls with `Overloaded` instead of growing memory: with the key
//! busy, exactly as many calls as the mailbox holds are accepted, every other one is refused
//! at once (while the key is still busy), and the accepted calls all complete.

use gears::CallError;
use gears_tests::latch::Latch;
use gears_tests::{Counter, builder, wait_for_stats};

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
    // The key is busy (its turn waits at the latch) until the test opens it.
    let latch = Latch::new();
    let blocker = tokio::spawn({
        let (c, latch) = (c.clone(), latch.name());
        async move { c.add_when_open(1, latch).await }
    });
    latch.wait_for_waiters(1).await;
    let flood: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.add(1).await })
        })
        .collect();
    let refused = 50 - capacity as u64;
    // Refusals do not wait for the busy turn: they all arrive while it still holds the key.
    wait_for_stats(&rt, "the calls beyond the mailbox refused", |s| {
        s.rejected == refused
    })
    .await;
    assert_eq!(latch.waiting(), 1, "the key was busy throughout");
    latch.open();
    let (mut ok, mut overloaded) = (0u64, 0u64);
    for call in flood {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CallError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(blocker.await.unwrap().unwrap(), 1);
    assert_eq!((ok, overloaded), (capacity as u64, refused));
    assert_eq!(rt.stats().rejected, overloaded);
    assert_eq!(
        c.get().await.unwrap(),
        1 + ok,
        "every accepted call was applied"
    );
    rt.shutdown().await.unwrap();
}
