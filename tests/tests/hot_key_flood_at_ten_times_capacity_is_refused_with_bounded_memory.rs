//! A flood of concurrent calls on one key at 10× what its mailbox holds, and of new keys at
//! 10× the live-activation cap, is refused with `Overloaded` without the call waiting in a
//! queue: memory does not grow with the number of refused calls, every accepted call
//! completes and is applied, and the runtime is healthy afterwards (the hot key and others
//! take calls, the state survives a restart).

use std::time::{Duration, Instant};

use gears::CallError;
use gears_tests::{Counter, builder, open};

const CAPACITY: usize = 64;
/// Concurrent callers of the hot key: 10× its mailbox.
const CALLERS: usize = 10 * CAPACITY;
/// Flood rounds; memory is compared between the end of the first and of the last.
const ROUNDS: usize = 16;
const CALLS_PER_CALLER: usize = 8;
/// Every call has a bound: a hang is a failure, not a stuck test.
const CALL_BOUND: Duration = Duration::from_secs(30);
/// Growth of the resident set allowed from the first round to the last: ~2 KiB per refused
/// call; keeping each refused call's envelope, reply channel and future would pass it.
const RSS_GROWTH_BOUND: u64 = 16 << 20;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm");
    pages * 4096
}

#[derive(Default)]
struct Round {
    accepted: u64,
    overloaded: u64,
    accepted_micros: Vec<u64>,
    overloaded_micros: Vec<u64>,
}

/// `CALLERS` tasks each make `CALLS_PER_CALLER` calls on the hot key, as fast as replies
/// come; a refused caller yields and tries its next call.
///
/// Each round starts with the key held busy (`slow_add`), so the callers' first calls, all
/// at once, find a full mailbox: at most `CAPACITY` of them queue, the rest are refused.
async fn flood(rt: &gears::Runtime) -> Round {
    let blocker = rt.get::<Counter>("hot");
    let blocker = tokio::spawn(async move { blocker.slow_add(1, 200).await });
    let deadline = Instant::now() + CALL_BOUND;
    while rt.stats().live_activations == 0 {
        assert!(Instant::now() < deadline, "the blocker never started");
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let hot = rt.get::<Counter>("hot");
        tasks.spawn(async move {
            let mut round = Round::default();
            for _ in 0..CALLS_PER_CALLER {
                let started = Instant::now();
                let reply = tokio::time::timeout(CALL_BOUND, hot.add(1))
                    .await
                    .unwrap_or_else(|_| panic!("a call on the hot key hung for {CALL_BOUND:?}"));
                let micros = started.elapsed().as_micros() as u64;
                match reply {
                    Ok(_) => {
                        round.accepted += 1;
                        round.accepted_micros.push(micros);
                    }
                    Err(CallError::Overloaded(_)) => {
                        round.overloaded += 1;
                        round.overloaded_micros.push(micros);
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("unexpected failure under the flood: {e}"),
                }
            }
            round
        });
    }
    let mut all = Round::default();
    let reply = tokio::time::timeout(CALL_BOUND, blocker).await;
    reply
        .expect("the blocking call hung")
        .expect("the blocking call panicked")
        .expect("the blocking call failed");
    all.accepted += 1;
    while let Some(done) = tasks.join_next().await {
        let done = done.expect("a flood task panicked");
        all.accepted += done.accepted;
        all.overloaded += done.overloaded;
        all.accepted_micros.extend(done.accepted_micros);
        all.overloaded_micros.extend(done.overloaded_micros);
    }
    all
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_flood_is_refused_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .mailbox_capacity(CAPACITY)
        .open()
        .await
        .unwrap();
    let mut total = Round::default();
    let mut rss_after_first = 0;
    let mut peak_rss = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let r = flood(&rt).await;
        total.accepted += r.accepted;
        total.overloaded += r.overloaded;
        total.accepted_micros.extend(r.accepted_micros);
        total.overloaded_micros.extend(r.overloaded_micros);
        let now = rss();
        peak_rss = peak_rss.max(now);
        if round == 0 {
            rss_after_first = now;
        }
    }
    let rss_after_last = rss();
    let elapsed = started.elapsed();
    let stats = rt.stats();
    let calls = (ROUNDS * CALLERS * CALLS_PER_CALLER) as u64;
    let growth = rss_after_last.saturating_sub(rss_after_first);
    let accepted_p50 = median(&mut total.accepted_micros);
    let overloaded_p50 = median(&mut total.overloaded_micros);
    let overloaded_max = total.overloaded_micros.last().copied().unwrap_or(0);
    eprintln!(
        "{calls} calls from {CALLERS} callers on one key (mailbox {CAPACITY}) in {:.1} s: {} accepted, {} overloaded; \
         median latency accepted {accepted_p50} µs, overloaded {overloaded_p50} µs (max {overloaded_max} µs); \
         RSS after round 1 {} MiB, after round {ROUNDS} {} MiB, peak {} MiB ({} bytes per refused call)",
        elapsed.as_secs_f64(),
        total.accepted,
        total.overloaded,
        rss_after_first >> 20,
        rss_after_last >> 20,
        peak_rss >> 20,
        growth / total.overloaded.max(1),
    );

    assert_eq!(total.accepted + total.overloaded, calls + ROUNDS as u64);
    // Of each round's first wave (`CALLERS` calls on a busy key), at most `CAPACITY` fit;
    // half of the rest is a tolerant floor for a machine slow to start the callers.
    let floor = (ROUNDS * (CALLERS - CAPACITY) / 2) as u64;
    assert!(
        total.overloaded >= floor,
        "with 10x the mailbox calling a busy key, at least {floor} calls should be refused, not {}",
        total.overloaded
    );
    assert!(total.accepted > 0, "nothing was accepted");
    assert_eq!(
        stats.rejected, total.overloaded,
        "every refusal is counted once: {stats:?}"
    );
    assert!(
        overloaded_p50 < accepted_p50,
        "a refusal must not wait in the queue: median {overloaded_p50} µs refused vs {accepted_p50} µs accepted"
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "memory grew with the refused calls: {} MiB after round 1, {} MiB after round {ROUNDS}",
        rss_after_first >> 20,
        rss_after_last >> 20
    );

    // Every accepted call was applied, once; the key and others still work.
    let hot = rt.get::<Counter>("hot");
    assert_eq!(hot.get().await.unwrap(), total.accepted);
    assert_eq!(hot.add(1).await.unwrap(), total.accepted + 1);
    assert_eq!(rt.get::<Counter>("cold").add(5).await.unwrap(), 5);
    rt.shutdown().await.unwrap();
    drop(rt);
    let rt = open(dir.path()).await;
    assert_eq!(
        rt.get::<Counter>("hot").get().await.unwrap(),
        total.accepted + 1
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_beyond_the_live_cap_are_refused_while_all_are_busy() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 8;
    let rt = builder(dir.path())
        .max_live_activations(cap)
        .open()
        .await
        .unwrap();
    // Hold every allowed activation busy, so none can be passivated to make room.
    let busy: Vec<_> = (0..cap)
        .map(|k| {
            let c = rt.get::<Counter>(format!("busy{k}"));
            tokio::spawn(async move { c.slow_add(1, 1500).await })
        })
        .collect();
    let deadline = Instant::now() + CALL_BOUND;
    while rt.stats().live_activations < cap as u64 {
        assert!(Instant::now() < deadline, "{:?}", rt.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let flood: Vec<_> = (0..10 * cap)
        .map(|k| {
            let c = rt.get::<Counter>(format!("new{k}"));
            tokio::spawn(async move { tokio::time::timeout(CALL_BOUND, c.add(1)).await })
        })
        .collect();
    let mut refused = 0;
    for call in flood {
        match call.await.unwrap().expect("a call on a new key hung") {
            Err(CallError::Overloaded(_)) => refused += 1,
            other => panic!("expected Overloaded with every activation busy, got {other:?}"),
        }
    }
    let refusing = started.elapsed();
    eprintln!("{refused} calls on new keys refused in {refusing:?} with {cap} busy activations");
    assert_eq!(refused, 10 * cap);
    assert!(rt.stats().live_activations <= cap as u64);
    assert_eq!(rt.stats().rejected, refused as u64);
    for call in busy {
        assert_eq!(call.await.unwrap().unwrap(), 1, "the busy calls complete");
    }
    // Healthy: the refused keys can now be activated, evicting idle ones.
    for k in 0..10 * cap {
        let c = rt.get::<Counter>(format!("new{k}"));
        let reply = tokio::time::timeout(CALL_BOUND, c.add(1)).await.unwrap();
        assert_eq!(reply.unwrap(), 1, "new{k} was never applied while refused");
    }
    assert!(rt.stats().live_activations <= cap as u64);
    rt.shutdown().await.unwrap();
}
