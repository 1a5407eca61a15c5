//! Exactly-once, checked by identity rather than by sums: a child process sends numbered
//! messages (four senders), publishes numbered events to a durable subscriber and arms
//! numbered one-shot timers until it is SIGKILLed, three times on the same store. After each
//! restart every number each sender committed arrived exactly once and in order, every event
//! the publisher committed reached the subscriber exactly once and in order, every timer armed
//! fired exactly once and in order, and everything acknowledged was committed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gears_tests::child::run_until_sigkill;
use gears_tests::{Listener, Numberer, Stock, Tally, open, settle};

/// Senders in the child (`SENDERS` in `src/bin/child/exactly_once_child.rs`).
const SENDERS: usize = 4;
/// Acknowledgements to read before each kill (the cycles kill at different points).
const KILL_AFTER: [usize; 3] = [400, 1500, 900];
/// Give up waiting for acknowledgements after this (then check what was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(120);

/// The highest number the child acknowledged, per kind (`send s0`, `event`, `timer`).
fn highest_acks(lines: &[String]) -> BTreeMap<String, u64> {
    let mut highest = BTreeMap::new();
    for line in lines {
        let (what, n) = line
            .rsplit_once(' ')
            .and_then(|(what, n)| Some((what.to_string(), n.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("unexpected line from the child: {line:?}"));
        let h = highest.entry(what).or_insert(0);
        *h = n.max(*h);
    }
    highest
}

/// `1..=n`.
fn numbers(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// Reopens the store, lets the outbox drain and the timers fire, and checks every number.
async fn check(dir: &Path, cycle: usize, acked: &BTreeMap<String, u64>) {
    let rt = open(dir).await;
    settle(&rt).await;
    let clock = rt.get::<Numberer>("clock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (_, armed, fired) = loop {
        let numbers = clock.numbers().await.unwrap();
        if numbers.2.len() as u64 >= numbers.1 {
            break numbers;
        }
        assert!(
            Instant::now() < deadline,
            "cycle {cycle}: timers still pending after 30 s: {numbers:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    settle(&rt).await;

    for s in 0..SENDERS {
        let sender = format!("s{s}");
        let (sent, _, _) = rt.get::<Numberer>(&sender).numbers().await.unwrap();
        let acked = acked.get(&format!("send {sender}")).copied().unwrap_or(0);
        assert!(
            sent >= acked,
            "cycle {cycle}: {sender} acknowledged send {acked}, but only {sent} committed"
        );
        let received = rt
            .get::<Tally>(format!("t{}", s % 2))
            .received(sender.clone())
            .await
            .unwrap();
        assert_eq!(
            received,
            numbers(sent),
            "cycle {cycle}: {sender} committed {sent} sends; each must arrive once, in order"
        );
    }

    let changes = rt.read::<Stock, _>("p", |s| s.changes).await.unwrap();
    let acked_events = acked.get("event").copied().unwrap_or(0);
    assert!(
        changes >= acked_events,
        "cycle {cycle}: event {acked_events} acknowledged, only {changes} committed"
    );
    let seen = rt.get::<Listener>("l").seen().await.unwrap();
    assert_eq!(
        seen,
        numbers(changes),
        "cycle {cycle}: {changes} events committed; each must reach the subscriber once, in order"
    );

    let acked_timers = acked.get("timer").copied().unwrap_or(0);
    assert!(
        armed >= acked_timers,
        "cycle {cycle}: timer {acked_timers} acknowledged, only {armed} armed"
    );
    assert_eq!(
        fired,
        numbers(armed),
        "cycle {cycle}: {armed} timers armed; each must fire once, in order"
    );
    assert!(
        rt.get::<Numberer>("clock").numbers().await.unwrap().2.len() as u64 == armed,
        "cycle {cycle}: a timer fired again"
    );
    let stats = rt.stats();
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    eprintln!(
        "cycle {cycle}: {} sends, {changes} events, {armed} timers, each exactly once in order",
        acked
            .iter()
            .filter(|(k, _)| k.starts_with("send"))
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_messages_events_and_timers_arrive_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The subscription is in place before the first event.
    let rt = open(dir.path()).await;
    rt.get::<Listener>("l").follow("p".into()).await.unwrap();
    settle(&rt).await;
    rt.shutdown().await.unwrap();
    drop(rt);

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for (cycle, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let lines = run_until_sigkill(
            env!("CARGO_BIN_EXE_child"),
            ["exactly_once_child".as_ref(), dir.path().as_os_str()],
            kill_after,
            READ_BOUND,
        )
        .await;
        assert!(
            !lines.is_empty(),
            "cycle {cycle}: the child acknowledged nothing"
        );
        for (what, n) in highest_acks(&lines) {
            let h = acked.entry(what).or_insert(0);
            *h = n.max(*h);
        }
        check(dir.path(), cycle, &acked).await;
    }
}
