//! Sends and timer firings follow one failure policy: a panicking one is parked after the same
//! 5 failed attempts (not retried forever), listed by `Runtime::dead_letters` with its type,
//! key, handler and reason; a retry after the fault is cleared runs it once; a discard deletes
//! it durably (a restart does not bring it back); one neither retried nor discarded comes back
//! at the next start, under the same id. A handler returning `Err` consumes its send or
//! firing once and is counted in `handler_errors`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gears::prelude::*;
use gears::{DeadLetter, DeadLetterId, DeadLetterKind, Runtime};
use gears_tests::{builder, settle, wait_for_stats};

/// Per key: whether its handlers panic now, and how often `take` or `fail` ran.
static KEYS: LazyLock<Mutex<HashMap<String, (bool, u32)>>> = LazyLock::new(Default::default);

fn keys() -> MutexGuard<'static, HashMap<String, (bool, u32)>> {
    KEYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn break_key(key: &str, broken: bool) {
    keys().entry(key.to_string()).or_default().0 = broken;
}

/// How often `take` or `fail` ran on `key` (panicked runs included).
fn runs(key: &str) -> u32 {
    keys().get(key).map_or(0, |k| k.1)
}

/// Counts a run of `key`; whether it must panic.
fn run(key: &str) -> bool {
    let mut keys = keys();
    let entry = keys.entry(key.to_string()).or_default();
    entry.1 += 1;
    entry.0
}

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "flaky")]
struct Flaky {
    got: Vec<u64>,
}

#[handlers]
impl Flaky {
    /// Records `n`, or panics while the key is broken.
    async fn take(&mut self, ctx: &Context, n: u64) {
        if run(ctx.key()) {
            panic!("flaky `{}` is broken", ctx.key());
        }
        self.got.push(n);
    }

    /// Records `n`, then refuses: the turn is rolled back.
    async fn fail(&mut self, ctx: &Context, n: u64) -> Result<(), String> {
        run(ctx.key());
        self.got.push(n);
        Err(format!("{n} refused"))
    }

    /// Arms timer `t` to call `take(n)` now.
    async fn arm_take(&mut self, ctx: &Context, n: u64) {
        ctx.timer::<Self>("t", Timer::after(Duration::ZERO)).take(n);
    }

    /// Arms timer `t` to call `fail(n)` now.
    async fn arm_fail(&mut self, ctx: &Context, n: u64) {
        ctx.timer::<Self>("t", Timer::after(Duration::ZERO)).fail(n);
    }

    /// Cancels timer `t` and arms timer `u` to call `take(n)` now.
    async fn replace_timer(&mut self, ctx: &Context, n: u64) {
        ctx.cancel_timer("t");
        ctx.timer::<Self>("u", Timer::after(Duration::ZERO)).take(n);
    }

    /// What was recorded.
    async fn got(&self) -> Vec<u64> {
        self.got.clone()
    }
}

async fn open(dir: &std::path::Path) -> Runtime {
    builder(dir).register::<Flaky>().open().await.unwrap()
}

/// Every dead letter listed, paging 2 at a time (so paging is exercised too).
fn all_dead_letters(rt: &Runtime) -> Vec<DeadLetter> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = rt.dead_letters(after, 2);
        assert_eq!(page.unlisted, 0);
        all.extend(page.letters);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// Waits until the dead letters of `keys` are all listed; returns them in the order of `keys`.
async fn parked(rt: &Runtime, keys: &[&str]) -> Vec<DeadLetter> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let letters = all_dead_letters(rt);
        let found: Vec<DeadLetter> = keys
            .iter()
            .filter_map(|k| letters.iter().find(|l| l.key == *k).cloned())
            .collect();
        if found.len() == keys.len() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting for {keys:?} to be parked: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `Flaky(key).got()` until it is `want`.
async fn got(rt: &Runtime, key: &str, want: &[u64]) {
    let flaky = rt.get::<Flaky>(key);
    gears_tests::eventually(want.to_vec(), || flaky.got()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_send_and_timer_are_parked_after_five_attempts_and_a_retry_runs_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    break_key("send-1", true);
    break_key("timer-1", true);
    rt.send::<Flaky>("send-1").take(1).await.unwrap();
    rt.get::<Flaky>("timer-1").arm_take(2).await.unwrap();

    let [send, timer] =
        <[DeadLetter; 2]>::try_from(parked(&rt, &["send-1", "timer-1"]).await).unwrap();
    assert_eq!(
        (send.kind, timer.kind),
        (DeadLetterKind::Send, DeadLetterKind::Timer)
    );
    for (letter, key) in [(&send, "send-1"), (&timer, "timer-1")] {
        assert_eq!(letter.actor, "flaky");
        assert_eq!(letter.key, key);
        assert_eq!(letter.handler.as_deref(), Some("take"));
        assert_eq!(letter.attempts, 5, "{letter:?}");
        assert!(letter.reason.contains("panicked"), "{letter:?}");
        assert_eq!(letter.id.kind(), letter.kind);
        assert_eq!(letter.id.to_string().parse::<DeadLetterId>(), Ok(letter.id));
    }
    assert_eq!(timer.timer.as_deref(), Some("t"));
    assert_eq!(send.timer, None);
    assert_eq!((runs("send-1"), runs("timer-1")), (5, 5));
    let stats = rt.stats();
    assert_eq!((stats.dead_letters, stats.panics), (2, 10), "{stats:?}");

    // Parked means not retried: a timer used to be fired again every 200 ms, a send's next
    // backoff would be 3.2 s; over 4 s neither runs again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((runs("send-1"), runs("timer-1")), (5, 5));
    assert_eq!(rt.stats().panics, 10);
    // The timer is still pending in its actor's record, and still in the store.
    assert_eq!(rt.timers::<Flaky>("timer-1").await.unwrap().len(), 1);

    // The fault is fixed: a retry runs each once, with its attempts reset.
    break_key("send-1", false);
    break_key("timer-1", false);
    assert!(rt.retry_dead_letter(send.id).await.unwrap());
    assert!(rt.retry_dead_letter(timer.id).await.unwrap());
    got(&rt, "send-1", &[1]).await;
    got(&rt, "timer-1", &[2]).await;
    settle(&rt).await;
    assert_eq!((runs("send-1"), runs("timer-1")), (6, 6));
    assert!(rt.timers::<Flaky>("timer-1").await.unwrap().is_empty());
    assert!(all_dead_letters(&rt).is_empty());
    // Gone from the list: a second retry or a discard finds nothing.
    assert!(!rt.retry_dead_letter(send.id).await.unwrap());
    assert!(!rt.discard_dead_letter(timer.id).await.unwrap());
    rt.shutdown().await.unwrap();

    // Processed once: nothing comes back after a restart.
    let rt = open(dir.path()).await;
    got(&rt, "send-1", &[1]).await;
    got(&rt, "timer-1", &[2]).await;
    assert_eq!(rt.stats().outbox_backlog, 0);
    assert_eq!((runs("send-1"), runs("timer-1")), (6, 6));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_dead_letter_is_gone_for_good_and_a_kept_one_comes_back_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    for key in ["drop-send", "drop-timer", "keep-send", "keep-timer"] {
        break_key(key, true);
    }
    rt.send::<Flaky>("drop-send").take(1).await.unwrap();
    rt.send::<Flaky>("keep-send").take(3).await.unwrap();
    rt.get::<Flaky>("drop-timer").arm_take(2).await.unwrap();
    rt.get::<Flaky>("keep-timer").arm_take(4).await.unwrap();
    let letters = parked(&rt, &["drop-send", "drop-timer", "keep-send", "keep-timer"]).await;
    let kept_ids: Vec<DeadLetterId> = letters[2..].iter().map(|l| l.id).collect();

    for letter in &letters[..2] {
        assert!(
            rt.discard_dead_letter(letter.id).await.unwrap(),
            "{letter:?}"
        );
        assert!(
            !rt.discard_dead_letter(letter.id).await.unwrap(),
            "{letter:?}"
        );
    }
    // The discarded timer is no longer one of its actor's timers.
    assert!(rt.timers::<Flaky>("drop-timer").await.unwrap().is_empty());
    assert_eq!(rt.timers::<Flaky>("keep-timer").await.unwrap().len(), 1);
    let listed: Vec<DeadLetterId> = all_dead_letters(&rt).iter().map(|l| l.id).collect();
    assert_eq!(listed, kept_ids);
    rt.shutdown().await.unwrap();

    // The discarded ones would now run (their keys work again); the kept ones still fail.
    break_key("drop-send", false);
    break_key("drop-timer", false);
    let rt = open(dir.path()).await;
    let again = parked(&rt, &["keep-send", "keep-timer"]).await;
    assert_eq!(
        again.iter().map(|l| l.id).collect::<Vec<_>>(),
        kept_ids,
        "the same messages, under the same ids"
    );
    assert_eq!(all_dead_letters(&rt).len(), 2);
    // Both were parked after their startup deliveries failed 5 times (about 3 s); the
    // discarded ones, if they were still stored, were due at that same startup.
    assert_eq!((runs("drop-send"), runs("drop-timer")), (5, 5));
    assert!(rt.get::<Flaky>("drop-send").got().await.unwrap().is_empty());
    assert!(
        rt.get::<Flaky>("drop-timer")
            .got()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!((runs("keep-send"), runs("keep-timer")), (10, 10));
    rt.shutdown().await.unwrap();

    // Fixed and restarted: the kept ones run, once.
    break_key("keep-send", false);
    break_key("keep-timer", false);
    let rt = open(dir.path()).await;
    got(&rt, "keep-send", &[3]).await;
    got(&rt, "keep-timer", &[4]).await;
    settle(&rt).await;
    assert!(all_dead_letters(&rt).is_empty());
    assert_eq!((runs("keep-send"), runs("keep-timer")), (11, 11));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_and_a_timer_whose_handler_returns_err_are_consumed_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.send::<Flaky>("err-send").fail(1).await.unwrap();
    rt.get::<Flaky>("err-timer").arm_fail(2).await.unwrap();
    wait_for_stats(&rt, "both handler errors", |s| s.handler_errors == 2).await;
    settle(&rt).await;
    let stats = rt.stats();
    assert_eq!(
        (stats.handler_errors, stats.dead_letters, stats.panics),
        (2, 0, 0),
        "{stats:?}"
    );
    assert_eq!((runs("err-send"), runs("err-timer")), (1, 1));
    // Rolled back, and consumed: no timer left, no outbox entry left.
    assert!(rt.get::<Flaky>("err-send").got().await.unwrap().is_empty());
    assert!(rt.get::<Flaky>("err-timer").got().await.unwrap().is_empty());
    assert!(rt.timers::<Flaky>("err-timer").await.unwrap().is_empty());
    assert!(all_dead_letters(&rt).is_empty());
    rt.shutdown().await.unwrap();

    let rt = open(dir.path()).await;
    assert_eq!(rt.stats().outbox_backlog, 0, "nothing left to deliver");
    assert!(rt.timers::<Flaky>("err-timer").await.unwrap().is_empty());
    assert_eq!((runs("err-send"), runs("err-timer")), (1, 1));
    assert_eq!(rt.stats().handler_errors, 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_timer_its_actor_cancels_drops_off_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    break_key("cancelled", true);
    rt.get::<Flaky>("cancelled").arm_take(1).await.unwrap();
    let [letter] = <[DeadLetter; 1]>::try_from(parked(&rt, &["cancelled"]).await).unwrap();
    break_key("cancelled", false);
    // The actor cancels it and arms another timer in the same shard, whose firing scans it.
    rt.get::<Flaky>("cancelled").replace_timer(2).await.unwrap();
    got(&rt, "cancelled", &[2]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while all_dead_letters(&rt).iter().any(|l| l.id == letter.id) {
        assert!(
            std::time::Instant::now() < deadline,
            "{letter:?} still listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!rt.retry_dead_letter(letter.id).await.unwrap());
    assert_eq!(runs("cancelled"), 6, "5 failed firings of `t`, one of `u`");
    rt.shutdown().await.unwrap();
}
