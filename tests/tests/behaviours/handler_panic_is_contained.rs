//! A panicking handler fails only its own call with `Panicked`; the actor resets to its last
//! committed state, its next call works, and other actors are not affected.

use gears::CallError;
use gears_tests::{Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_fails_the_call_and_resets_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let victim = rt.get::<Counter>("victim");
    assert_eq!(victim.add(3).await.unwrap(), 3);

    let bystanders = tokio::spawn({
        let rt = rt.clone();
        async move {
            for i in 1..=200 {
                assert_eq!(rt.get::<Counter>("bystander").add(1).await.unwrap(), i);
            }
        }
    });
    for _ in 0..20 {
        match victim.add_then_panic(100, true).await {
            Err(CallError::Panicked {
                actor: "counter",
                handler: "add_then_panic",
            }) => {}
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(
            victim.get().await.unwrap(),
            3,
            "reset to the last committed state"
        );
    }
    assert_eq!(victim.add_then_panic(1, false).await.unwrap(), 4);
    bystanders.await.unwrap();
    assert_eq!(rt.stats().panics, 20);
    rt.shutdown().await.unwrap();
}
