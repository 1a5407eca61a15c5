//! At most one live activation per (type, key), even when 1,000 calls race to activate it.

use gears_tests::{Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_first_calls_make_one_activation() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let calls = (0..1000).map(|_| {
        let rt = rt.clone();
        tokio::spawn(async move { rt.get::<Counter>("fresh").add(1).await })
    });
    let mut returned: Vec<u64> = Vec::new();
    for call in futures::future::join_all(calls).await {
        returned.push(call.unwrap().unwrap());
    }
    returned.sort_unstable();
    // Serial turns on one state: every call saw a distinct count, 1..=1000.
    assert_eq!(returned, (1..=1000).collect::<Vec<u64>>());
    assert_eq!(rt.get::<Counter>("fresh").get().await.unwrap(), 1000);
    let stats = rt.stats();
    assert_eq!(stats.activations, 1, "{stats:?}");
    assert_eq!(stats.live_activations, 1, "{stats:?}");
    rt.shutdown().await.unwrap();

    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("fresh").get().await.unwrap(), 1000);
    rt.shutdown().await.unwrap();
}
