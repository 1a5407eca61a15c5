//! `gears::testing::TestRuntime`'s virtual clock: `advance` fires timers in due order (the
//! clock moved to each one's time, so a turn's sends land before a later timer fires), a
//! periodic timer once per period, never a timer early; idle activations are passivated by
//! virtual time; `crash_and_reopen` keeps what was acknowledged and the pending timers, with
//! the clock where it was; `state` and `timers` read an actor without a handler.

use std::time::Duration;

use gears::prelude::*;
use gears::testing::TestRuntime;

const MINUTE: Duration = Duration::from_secs(60);

/// What the alarms' turns sent, in arrival order.
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Log {
    entries: Vec<String>,
}

#[handlers]
impl Log {
    /// Appends an entry.
    pub async fn append(&mut self, entry: String) {
        self.entries.push(entry);
    }
}

/// Rings when its timer fires, and tells the log.
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Alarm {
    /// How often it rang.
    rang: u32,
    /// When it rang, by the runtime's clock (ms since the Unix epoch).
    rang_at_ms: Vec<u64>,
}

#[handlers]
impl Alarm {
    /// Rings once, `after_s` seconds from now.
    pub async fn set(&mut self, ctx: &Context, after_s: u64) {
        ctx.timer::<Self>("ring", Timer::after(Duration::from_secs(after_s)))
            .ring();
    }

    /// Rings every `every_s` seconds.
    pub async fn repeat(&mut self, ctx: &Context, every_s: u64) {
        ctx.timer::<Self>("ring", Timer::every(Duration::from_secs(every_s)))
            .ring();
    }

    /// The timer's handler.
    pub async fn ring(&mut self, ctx: &Context) {
        self.rang += 1;
        let now = ctx.now().duration_since(std::time::UNIX_EPOCH).unwrap();
        self.rang_at_ms.push(now.as_millis() as u64);
        ctx.send::<Log>("log").append(ctx.key().to_string());
    }

    /// How often it rang.
    pub async fn rang(&self) -> u32 {
        self.rang
    }
}

async fn open() -> TestRuntime {
    TestRuntime::new(|b| {
        b.register::<Log>()
            .register::<Alarm>()
            .idle_timeout(Duration::from_secs(120))
    })
    .await
    .unwrap()
}

fn epoch_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_in_due_order_at_their_due_time_and_never_early() {
    let t = open().await;
    let rt = t.runtime();
    let start = epoch_ms(t.now());
    // Set in the opposite order of their due times, on keys of different shards.
    for (key, after_s) in [("c", 30 * 60), ("b", 20 * 60), ("a", 10 * 60)] {
        rt.get::<Alarm>(key).set(after_s).await.unwrap();
    }
    t.advance(10 * MINUTE - Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(rt.get::<Alarm>("a").rang().await.unwrap(), 0, "early");
    assert!(t.state::<Log>("log").await.unwrap().entries.is_empty());

    t.advance(Duration::from_secs(3600)).await.unwrap();
    // Each alarm's send was delivered before the next alarm rang.
    assert_eq!(
        t.state::<Log>("log").await.unwrap().entries,
        ["a", "b", "c"]
    );
    for (key, after_ms) in [("a", 600_000), ("b", 1_200_000), ("c", 1_800_000)] {
        let alarm = t.state::<Alarm>(key).await.unwrap();
        assert_eq!(
            alarm.rang_at_ms,
            [start + after_ms],
            "{key} rang at its due time"
        );
        assert!(t.timers::<Alarm>(key).await.unwrap().is_empty());
    }
    assert_eq!(epoch_ms(t.now()), start + 10 * 60_000 - 1 + 3_600_000);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_fires_once_per_period() {
    let t = open().await;
    let start = epoch_ms(t.now());
    t.runtime().get::<Alarm>("p").repeat(60).await.unwrap();
    t.advance(5 * MINUTE + Duration::from_secs(30))
        .await
        .unwrap();
    let alarm = t.state::<Alarm>("p").await.unwrap();
    let expected: Vec<u64> = (1..=5).map(|n| start + n * 60_000).collect();
    assert_eq!(alarm.rang_at_ms, expected);
    let timers = t.timers::<Alarm>("p").await.unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!(epoch_ms(timers[0].due), start + 6 * 60_000);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_passivated_by_virtual_time() {
    let t = open().await;
    t.runtime().get::<Alarm>("idle").rang().await.unwrap();
    t.advance(MINUTE).await.unwrap();
    assert_eq!(
        t.runtime().stats().live_activations,
        1,
        "not idle long enough"
    );
    t.advance(MINUTE).await.unwrap();
    let stats = t.runtime().stats();
    assert_eq!(
        (stats.live_activations, stats.passivations),
        (0, 1),
        "{stats:?}"
    );
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_reopen_keeps_what_was_acknowledged_and_the_clock() {
    let mut t = open().await;
    let start = epoch_ms(t.now());
    t.runtime().get::<Alarm>("k").set(3600).await.unwrap();
    t.runtime()
        .get::<Log>("log")
        .append("before".into())
        .await
        .unwrap();
    t.advance(30 * MINUTE).await.unwrap();

    t.crash_and_reopen().await.unwrap();
    assert_eq!(
        epoch_ms(t.now()),
        start + 30 * 60_000,
        "the clock is where it was"
    );
    assert_eq!(t.state::<Log>("log").await.unwrap().entries, ["before"]);
    let timers = t.timers::<Alarm>("k").await.unwrap();
    assert_eq!(timers.len(), 1, "the pending timer survived");
    t.advance(30 * MINUTE).await.unwrap();
    assert_eq!(
        t.state::<Log>("log").await.unwrap().entries,
        ["before", "k"]
    );
    assert_eq!(t.state::<Alarm>("k").await.unwrap().rang, 1, "once");
    t.shutdown().await.unwrap();
}
