//! Panics on a hot key are contained under load: while 8 callers add on 16 other keys, 4
//! callers hammer one hot key whose calls panic 1 time in 100. Every panicking call fails with
//! `Panicked` naming the actor and handler, every other hot call is applied (the hot key's
//! value is their count), `stats().panics` counts exactly the panics, no call on any key
//! hangs or fails, and every call on the other keys is applied.
//!
//! How much throughput the other keys keep meanwhile is a timing, so it is a benchmark:
//! `gears-bench hot-key-panics` (BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gears::CallError;
use gears_tests::{Counter, open};

const OTHER_KEYS: usize = 16;
const OTHER_CALLERS: usize = 8;
const HOT_CALLERS: usize = 4;
const HOT_CALLS_PER_CALLER: u64 = 500;
/// One hot call in `PANIC_EVERY` panics.
const PANIC_EVERY: u64 = 100;
/// Every call has a bound: a hang is a failure, not a stuck test.
const CALL_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_on_a_hot_key_are_contained_and_other_keys_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let hot_done = Arc::new(AtomicBool::new(false));
    let hot_started = Arc::new(AtomicU64::new(0));

    let mut others = tokio::task::JoinSet::new();
    for c in 0..OTHER_CALLERS {
        let (rt, hot_done) = (rt.clone(), hot_done.clone());
        others.spawn(async move {
            // Keeps calling for as long as the hot key is hammered (at least 50 calls).
            let mut calls = 0u64;
            let mut i = c;
            while calls < 50 || !hot_done.load(Ordering::Relaxed) {
                let counter = rt.get::<Counter>(format!("other{}", i % OTHER_KEYS));
                match tokio::time::timeout(CALL_BOUND, counter.add(1)).await {
                    Err(_) => panic!("a call on another key hung for {CALL_BOUND:?}"),
                    Ok(Err(e)) => panic!("a call on another key failed: {e}"),
                    Ok(Ok(_)) => calls += 1,
                }
                i += OTHER_CALLERS;
            }
            calls
        });
    }
    let mut hot = tokio::task::JoinSet::new();
    for _ in 0..HOT_CALLERS {
        let (rt, hot_started) = (rt.clone(), hot_started.clone());
        hot.spawn(async move {
            let counter = rt.get::<Counter>("hot");
            let (mut applied, mut panicked) = (0u64, 0u64);
            for _ in 0..HOT_CALLS_PER_CALLER {
                let panic = hot_started.fetch_add(1, Ordering::Relaxed) % PANIC_EVERY == 0;
                match tokio::time::timeout(CALL_BOUND, counter.add_then_panic(1, panic)).await {
                    Err(_) => panic!("a call on the hot key hung for {CALL_BOUND:?}"),
                    Ok(Ok(_)) if !panic => applied += 1,
                    Ok(Err(CallError::Panicked { actor, handler })) if panic => {
                        assert_eq!((actor, handler), ("counter", "add_then_panic"));
                        panicked += 1;
                    }
                    Ok(other) => panic!("hot call (panic: {panic}) gave {other:?}"),
                }
            }
            (applied, panicked)
        });
    }
    let (mut applied, mut panicked) = (0, 0);
    while let Some(done) = hot.join_next().await {
        let (a, p) = done.expect("a hot caller failed");
        applied += a;
        panicked += p;
    }
    hot_done.store(true, Ordering::Relaxed);
    let mut other_calls = 0;
    while let Some(done) = others.join_next().await {
        other_calls += done.expect("a caller on the other keys failed");
    }

    let hot_calls = HOT_CALLERS as u64 * HOT_CALLS_PER_CALLER;
    eprintln!(
        "hot key: {applied} calls applied, {panicked} panicked; {other_calls} calls on other keys"
    );
    assert_eq!(panicked, hot_calls.div_ceil(PANIC_EVERY));
    assert_eq!(applied + panicked, hot_calls);
    assert_eq!(rt.stats().panics, panicked);
    assert_eq!(
        rt.get::<Counter>("hot").get().await.unwrap(),
        applied,
        "every call that did not panic was applied, and no panicking one"
    );
    let mut on_others = 0;
    for k in 0..OTHER_KEYS {
        on_others += rt.get::<Counter>(format!("other{k}")).get().await.unwrap();
    }
    assert_eq!(
        on_others, other_calls,
        "every call on the other keys was applied"
    );
    rt.shutdown().await.unwrap();
}
