//! State written through handlers is there after `shutdown` and a reopen on the same path;
//! a key never written reads as `Default`.

use gears::Durability;
use gears_tests::{Counter, builder, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_then_reopen_sees_all_state() {
    let dir = tempfile::tempdir().unwrap();
    for durability in [Durability::Sync, Durability::Buffered] {
        let rt = builder(dir.path())
            .durability(durability)
            .open()
            .await
            .unwrap();
        for k in 0..50u64 {
            rt.get::<Counter>(format!("k{k}")).add(k + 1).await.unwrap();
        }
        rt.shutdown().await.unwrap();
    }
    let rt = open(dir.path()).await;
    for k in 0..50u64 {
        assert_eq!(
            rt.get::<Counter>(format!("k{k}")).get().await.unwrap(),
            2 * (k + 1)
        );
    }
    assert_eq!(rt.get::<Counter>("never-written").get().await.unwrap(), 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Counter>("a").add(1).await.unwrap();
    rt.shutdown().await.unwrap();
    assert!(matches!(
        rt.get::<Counter>("a").add(1).await,
        Err(gears::CallError::ShuttingDown)
    ));
}
