//! At most one activation per key, even while passivation races with calls: with an idle
//! timeout of 0, a live cap of 2, many callers on 4 keys and a task passivating in a loop,
//! each key's acknowledged adds reply distinct, contiguous values (two activations of one key
//! would hand out the same value twice, or skip one), the stored value is their count, and
//! `activations − passivations == live` with `live <= 2` at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gears::CallError;
use gears_tests::{Counter, builder, wait_for_stats};

const KEYS: usize = 4;
const CALLERS: usize = 16;
const CALLS_PER_CALLER: usize = 150;
const CAP: usize = 2;
/// Every call has a bound: a hang is a failure, not a stuck test.
const CALL_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_activation_holds_while_passivation_races_with_calls() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .idle_timeout(Duration::ZERO)
        .max_live_activations(CAP)
        .open()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let passivator = tokio::spawn({
        let (rt, stop) = (rt.clone(), stop.clone());
        async move {
            let mut passivated = 0;
            while !stop.load(Ordering::Relaxed) {
                passivated += rt.passivate_idle();
                tokio::task::yield_now().await;
            }
            passivated
        }
    });
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        let rt = rt.clone();
        callers.spawn(async move {
            let mut replies: Vec<(usize, u64)> = Vec::new();
            let mut refused = 0u64;
            for i in 0..CALLS_PER_CALLER {
                let k = (c + i * 3) % KEYS;
                let counter = rt.get::<Counter>(format!("k{k}"));
                match tokio::time::timeout(CALL_BOUND, counter.add(1)).await {
                    Err(_) => panic!("a call on k{k} hung"),
                    Ok(Ok(v)) => replies.push((k, v)),
                    // Every live activation busy: refused before anything ran.
                    Ok(Err(CallError::Overloaded(_))) => refused += 1,
                    Ok(Err(e)) => panic!("a call on k{k} failed: {e}"),
                }
            }
            (replies, refused)
        });
    }
    let mut per_key: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut refused = 0;
    while let Some(done) = callers.join_next().await {
        let (replies, r) = done.unwrap();
        refused += r;
        for (k, v) in replies {
            per_key.entry(k).or_default().push(v);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swept = passivator.await.unwrap();

    let mut applied = 0;
    for k in 0..KEYS {
        let mut values = per_key.remove(&k).unwrap_or_default();
        values.sort_unstable();
        let n = values.len() as u64;
        assert_eq!(
            values,
            (1..=n).collect::<Vec<_>>(),
            "k{k}: acknowledged values are not distinct and contiguous"
        );
        assert_eq!(rt.get::<Counter>(format!("k{k}")).get().await.unwrap(), n);
        applied += n;
    }
    let stats = rt.stats();
    eprintln!(
        "{applied} adds applied, {refused} refused at the cap, {swept} passivated by the loop: {stats:?}"
    );
    assert!(applied > 0, "nothing was applied");
    assert!(stats.passivations > 0, "nothing was passivated: {stats:?}");
    // The background sweep (idle timeout 0) may passivate between the reads of one
    // snapshot's counters: read until one snapshot is whole.
    wait_for_stats(
        &rt,
        "activations - passivations == live, live <= CAP",
        |s| {
            s.activations.checked_sub(s.passivations) == Some(s.live_activations)
                && s.live_activations <= CAP as u64
        },
    )
    .await;
    rt.shutdown().await.unwrap();
}
