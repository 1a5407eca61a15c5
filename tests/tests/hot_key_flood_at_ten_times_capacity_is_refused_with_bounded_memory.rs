//! A flood of concurrent calls on one key at 10× what its mailbox holds, and of new keys at
//! 10× the live-activation cap, is refused with `Overloaded` without the call waiting in a
//! queue (every refusal arrives while the key is still held busy): memory does not grow with
//! the number of refused calls, every accepted call completes and is applied, and the runtime
//! is healthy afterwards (the hot key and others take calls, the state survives a restart).

use std::time::{Duration, Instant};

use gears::CallError;
use gears_tests::latch::Latch;
use gears_tests::{Counter, builder, open, wait_for_stats};

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
}

/// Calls refused in each round while the hot key is held: every caller whose first call
/// found the mailbox full has all its calls refused.
const REFUSED_WHILE_HELD: u64 = ((CALLERS - CAPACITY) * CALLS_PER_CALLER) as u64;

/// `CALLERS` tasks each make `CALLS_PER_CALLER` calls on the hot key, as fast as replies
/// come; a refused caller yields and tries its next call.
///
/// Each round starts with the key held busy (its turn waits at a latch), so the callers' first
/// calls, all at once, find it busy: exactly `CAPACITY` of them queue, and every call of the
/// other callers is refused. Those refusals all arrive while the key is still held: a refused
/// call does not wait in the queue. Then the key is let go.
async fn flood(rt: &gears::Runtime) -> Round {
    let latch = Latch::new();
    let blocker = rt.get::<Counter>("hot");
    let blocker = tokio::spawn({
        let latch = latch.name();
        async move { blocker.add_when_open(1, latch).await }
    });
    latch.wait_for_waiters(1).await;
    let rejected_before = rt.stats().rejected;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let hot = rt.get::<Counter>("hot");
        tasks.spawn(async move {
            let mut round = Round::default();
            for _ in 0..CALLS_PER_CALLER {
                let reply = tokio::time::timeout(CALL_BOUND, hot.add(1))
                    .await
                    .unwrap_or_else(|_| panic!("a call on the hot key hung for {CALL_BOUND:?}"));
                match reply {
                    Ok(_) => round.accepted += 1,
                    Err(CallError::Overloaded(_)) => {
                        round.overloaded += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("unexpected failure under the flood: {e}"),
                }
            }
            round
        });
    }
    wait_for_stats(rt, "the calls refused while the key is held", |s| {
        s.rejected - rejected_before >= REFUSED_WHILE_HELD
    })
    .await;
    assert_eq!(
        rt.stats().rejected - rejected_before,
        REFUSED_WHILE_HELD,
        "only the callers whose first call was queued are still waiting"
    );
    assert_eq!(latch.waiting(), 1, "the key was held throughout");
    latch.open();
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
    }
    all
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
    eprintln!(
        "{calls} calls from {CALLERS} callers on one key (mailbox {CAPACITY}) in {:.1} s: {} accepted, {} overloaded; \
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
    // Each round refused exactly `REFUSED_WHILE_HELD` calls while the key was held, and
    // maybe more afterwards.
    let floor = ROUNDS as u64 * REFUSED_WHILE_HELD;
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
    let latch = Latch::new();
    let busy: Vec<_> = (0..cap)
        .map(|k| {
            let c = rt.get::<Counter>(format!("busy{k}"));
            let latch = latch.name();
            tokio::spawn(async move { c.add_when_open(1, latch).await })
        })
        .collect();
    latch.wait_for_waiters(cap).await;
    assert_eq!(rt.stats().live_activations, cap as u64);
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
    assert_eq!(latch.waiting(), cap, "the activations were busy throughout");
    latch.open();
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
