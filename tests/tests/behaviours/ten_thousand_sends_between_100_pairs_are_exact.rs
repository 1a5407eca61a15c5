//! 10,000 sends between 100 sender/receiver pairs under concurrent load arrive exactly once:
//! every receiver's total equals what its sender committed, and nothing is left over.

use gears_tests::{Receiver, Sender, open, settle};

const PAIRS: usize = 100;
const SENDS_PER_PAIR: u64 = 100;
const CALLERS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sends_between_100_pairs_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let rt = rt.clone();
        tasks.spawn(async move {
            // Each caller owns two pairs and alternates between them.
            for i in 0..(PAIRS as u64 * SENDS_PER_PAIR / CALLERS as u64) {
                let pair = caller * 2 + (i % 2) as usize;
                rt.get::<Sender>(format!("s{pair}"))
                    .send_to(format!("r{pair}"), 1)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    settle(&rt).await;
    for pair in 0..PAIRS {
        let sent = rt.get::<Sender>(format!("s{pair}")).sent().await.unwrap();
        assert_eq!(sent, SENDS_PER_PAIR);
        let totals = rt
            .get::<Receiver>(format!("r{pair}"))
            .totals()
            .await
            .unwrap();
        assert_eq!(totals, (SENDS_PER_PAIR, SENDS_PER_PAIR), "receiver r{pair}");
    }
    let stats = rt.stats();
    assert_eq!(stats.sends, PAIRS as u64 * SENDS_PER_PAIR);
    assert_eq!(stats.delivered, PAIRS as u64 * SENDS_PER_PAIR);
    assert_eq!((stats.outbox_backlog, stats.dead_letters), (0, 0));
    rt.shutdown().await.unwrap();

    // Nothing is delivered again after a restart: the outbox is empty.
    let rt = open(dir.path()).await;
    assert_eq!(rt.stats().outbox_backlog, 0);
    let totals = rt.get::<Receiver>("r7").totals().await.unwrap();
    assert_eq!(totals, (SENDS_PER_PAIR, SENDS_PER_PAIR));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_full_mailbox_are_retried_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // 500 messages wait in the outbox, then arrive at once at a mailbox of 4.
    let rt = gears_tests::builder(dir.path())
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    for i in 0..500u64 {
        rt.send::<Receiver>("busy")
            .receive("app".into(), i)
            .await
            .unwrap();
    }
    rt.shutdown().await.unwrap();
    let rt = gears_tests::builder(dir.path())
        .mailbox_capacity(4)
        .open()
        .await
        .unwrap();
    settle(&rt).await;
    let totals = rt.get::<Receiver>("busy").totals().await.unwrap();
    assert_eq!(totals, ((0..500).sum(), 500));
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.dead_letters), (500, 0));
    assert!(stats.rejected > 0, "the mailbox never filled: {stats:?}");
    rt.shutdown().await.unwrap();
}
