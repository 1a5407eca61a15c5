//! A call cycle A → B → A fails at once with `Cycle` (the call chain travels with the call),
//! not by timeout; a handler that runs past the call timeout gives `Timeout` and its actor is
//! reset and usable again.

use std::time::{Duration, Instant};

use gears::CallError;
use gears_tests::latch::Latch;
use gears_tests::{Counter, Relay, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_is_detected_not_deadlocked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .call_timeout(Duration::from_secs(60))
        .open()
        .await
        .unwrap();
    // A non-cyclic chain works: a → b → c.
    let hops = rt
        .get::<Relay>("a")
        .forward(vec!["b".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(hops, 1, "c ran its first hop");

    let started = Instant::now();
    // a → b → a: b's call back into a (which is waiting on b) must fail as a cycle.
    let result = rt
        .get::<Relay>("a")
        .forward(vec!["b".into(), "a".into()])
        .await;
    match result {
        Err(CallError::Handler(message)) => {
            assert!(message.starts_with("call cycle: "), "{message}");
            assert!(
                message.contains("relay(\"a\") → relay(\"b\") → relay(\"a\")"),
                "{message}"
            );
        }
        other => panic!("expected the cycle to surface, got {other:?}"),
    }
    // Far below the 60 s timeout it would otherwise have hit (a deadlock waits for it).
    assert!(started.elapsed() < Duration::from_secs(30));

    // Calling itself is the shortest cycle.
    let result = rt.get::<Relay>("solo").forward(vec!["solo".into()]).await;
    assert!(matches!(result, Err(CallError::Handler(m)) if m.starts_with("call cycle: ")));
    rt.shutdown().await.unwrap();
}

/// Generous: every call here is bounded by it, the quick ones too (on a loaded machine a
/// first call, its load and its commit can take a while).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_times_out_and_actor_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .call_timeout(CALL_TIMEOUT)
        .open()
        .await
        .unwrap();
    let c = rt.get::<Counter>("slowpoke");
    assert_eq!(c.add(1).await.unwrap(), 1);
    // A handler that waits at a latch nobody opens runs past any timeout.
    let never = Latch::new();
    match c.add_when_open(5, never.name()).await {
        Err(CallError::Timeout(d)) => assert_eq!(d, CALL_TIMEOUT),
        other => panic!("expected Timeout, got {other:?}"),
    }
    // The cancelled turn changed nothing, and the key is free again.
    assert_eq!(c.get().await.unwrap(), 1);
    assert_eq!(never.waiting(), 0, "the timed-out handler was cancelled");
    assert_eq!(c.add(1).await.unwrap(), 2);
    rt.shutdown().await.unwrap();
}
