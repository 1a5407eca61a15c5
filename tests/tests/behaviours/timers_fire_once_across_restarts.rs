//! Durable timers: a timer due after a restart fires once; one that came due while the
//! runtime was down fires once (not twice) when it starts again; periodic timers repeat
//! without replaying missed periods; cancelled timers never fire; an actor with only pending
//! timers is passivated, and its timers' firings activate it again.

use std::time::{Duration, Instant};

use gears::Runtime;
use gears_tests::{Alarm, builder, open, wait_for_stats};

/// How often `Alarm(key)`'s timer `name` rang.
async fn rings(rt: &Runtime, key: &str, name: &str) -> u64 {
    rt.get::<Alarm>(key).rings(name.into()).await.unwrap()
}

/// Waits until `Alarm(key)`'s timer `name` rang at least `n` times; returns how often.
async fn rang_at_least(rt: &Runtime, key: &str, name: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rang = rings(rt, key, name).await;
        if rang >= n {
            return rang;
        }
        assert!(
            Instant::now() < deadline,
            "{key}'s timer {name} rang {rang} times in 20 s, waiting for {n}: {:?}",
            rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Delays tried in turn: a longer one only when the restart took longer than the shorter
/// one (a loaded machine), so the timer is sure to come due after the restart.
const DELAYS_MS: [u64; 3] = [1_000, 5_000, 20_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_due_after_a_restart_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    for (attempt, delay) in DELAYS_MS.into_iter().enumerate() {
        let key = format!("a{attempt}");
        let rt = open(dir.path()).await;
        let armed = Instant::now();
        rt.get::<Alarm>(&key)
            .arm("wake".into(), delay)
            .await
            .unwrap();
        assert_eq!(rt.get::<Alarm>(&key).pending().await.unwrap(), ["wake"]);
        // Restart before it is due.
        rt.shutdown().await.unwrap();
        let rt = open(dir.path()).await;
        let rang = rings(&rt, &key, "wake").await;
        // Taken after the read: if the read ended before the due time, it was not due yet.
        let looked = Instant::now();
        if looked.duration_since(armed) >= Duration::from_millis(delay) {
            // The restart took longer than the delay: it may have come due before.
            eprintln!("attempt {attempt}: the restart took over {delay} ms; again, longer");
            rt.shutdown().await.unwrap();
            continue;
        }
        assert_eq!(rang, 0, "the timer fired before it was due");
        assert_eq!(rang_at_least(&rt, &key, "wake", 1).await, 1);
        // Give a second firing the time to happen before looking for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rings(&rt, &key, "wake").await, 1);
        assert!(rt.get::<Alarm>(&key).pending().await.unwrap().is_empty());
        rt.shutdown().await.unwrap();

        // And it does not fire again after another restart.
        let rt = open(dir.path()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rings(&rt, &key, "wake").await, 1);
        assert_eq!(rt.stats().timers_fired, 0);
        rt.shutdown().await.unwrap();
        return;
    }
    panic!("every restart took longer than its timer's delay ({DELAYS_MS:?} ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_missed_while_down_fires_once_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let period = Duration::from_millis(300);
    let rt = open(dir.path()).await;
    rt.get::<Alarm>("a")
        .arm("missed".into(), 1000)
        .await
        .unwrap();
    rt.get::<Alarm>("a")
        .arm_every("tick".into(), period.as_millis() as u64)
        .await
        .unwrap();
    // On a loaded machine the periodic timer may ring before the shutdown: at most once
    // between this read and the shutdown (less than a period).
    let before = rings(&rt, "a", "tick").await;
    rt.shutdown().await.unwrap();
    // Down while both come due (the periodic one several times).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let opened = Instant::now();
    let rt = open(dir.path()).await;
    assert_eq!(rang_at_least(&rt, "a", "missed", 1).await, 1);
    // The periodic timer fired once for all the missed periods, then keeps its period: it
    // never rang more often than one firing per period since the start, plus the catch-up
    // (replaying the 4 missed periods would break that at once), besides the rings before
    // the shutdown.
    let first = rang_at_least(&rt, "a", "tick", 1).await;
    let periods = opened.elapsed().as_millis() as u64 / period.as_millis() as u64;
    assert!(
        first <= before + 2 + periods,
        "{first} firings {:?} after the start: missed periods were replayed",
        opened.elapsed()
    );
    rang_at_least(&rt, "a", "tick", first + 1).await;
    let alarm = rt.get::<Alarm>("a");
    assert_eq!(alarm.rings("missed".into()).await.unwrap(), 1);
    assert_eq!(alarm.pending().await.unwrap(), ["tick"]);
    alarm.disarm("tick".into()).await.unwrap();
    let after_cancel = alarm.rings("tick".into()).await.unwrap();
    // Give a cancelled timer the time to fire before looking for it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(alarm.rings("tick".into()).await.unwrap(), after_cancel);
    assert!(alarm.pending().await.unwrap().is_empty());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_timers_per_actor_and_passivated_actors_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .idle_timeout(Duration::from_millis(50))
        .open()
        .await
        .unwrap();
    // Longer delays only if the actor was not passivated before its timers fired (a loaded
    // machine): the test is about a passivated actor woken by its timers.
    for (attempt, scale) in [1, 5, 20].into_iter().enumerate() {
        let key = format!("sleepy{attempt}");
        let alarm = rt.get::<Alarm>(&key);
        for (name, ms) in [("c", 900), ("a", 500), ("b", 700)] {
            alarm.arm(name.into(), ms * scale).await.unwrap();
        }
        // Re-arming a name replaces its timer.
        alarm.arm("a".into(), 600 * scale).await.unwrap();
        assert_eq!(alarm.pending().await.unwrap(), ["a", "b", "c"]);
        // Only timers pending: the actor is passivated (no call here activates it)...
        let before = rt.stats();
        wait_for_stats(&rt, "the alarm passivated", |s| s.live_activations == 0).await;
        let passivated = rt.stats();
        if passivated.timers_fired > before.timers_fired {
            eprintln!("attempt {attempt}: a timer fired before the actor was passivated");
            wait_for_stats(&rt, "the timers fired", |s| {
                s.timers_fired == before.timers_fired + 3
            })
            .await;
            continue;
        }
        // ...and the firings activate it again: nothing else calls it until they all fired.
        wait_for_stats(&rt, "the timers fired", |s| {
            s.timers_fired == before.timers_fired + 3
        })
        .await;
        assert!(
            rt.stats().activations > passivated.activations,
            "the timers fired without activating the actor: {:?}",
            rt.stats()
        );
        for name in ["a", "b", "c"] {
            assert_eq!(rings(&rt, &key, name).await, 1, "timer {name}");
        }
        rt.shutdown().await.unwrap();
        return;
    }
    panic!("the actor was never passivated before its timers fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_actor_removes_its_timers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let alarm = rt.get::<Alarm>("doomed");
    alarm.arm("once".into(), 300).await.unwrap();
    alarm.arm_every("often".into(), 100).await.unwrap();
    alarm.ring("by hand".into()).await.unwrap();
    alarm.delete().await.unwrap();
    assert!(alarm.pending().await.unwrap().is_empty());
    assert_eq!(alarm.rings("by hand".into()).await.unwrap(), 0);
    rt.shutdown().await.unwrap();

    // Gone from the store too: nothing fires after a restart (given the time to).
    let rt = open(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alarm = rt.get::<Alarm>("doomed");
    assert_eq!(alarm.rings("once".into()).await.unwrap(), 0);
    assert_eq!(alarm.rings("often".into()).await.unwrap(), 0);
    assert_eq!(rt.stats().timers_fired, 0);
    rt.shutdown().await.unwrap();
}
