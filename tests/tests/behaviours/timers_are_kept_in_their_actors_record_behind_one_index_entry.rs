//! An actor's timers are kept in its record, with their messages; the store's timer index
//! holds one entry per actor, at or before its earliest timer. So a turn that arms a timer
//! at or after the entry, or cancels one, writes only the record it writes anyway (before
//! record format 4, each did a write of its own: the timer's key, or its deletion). An
//! entry stays where it is when the timer it was written for is cancelled, the last one
//! too: when it comes due with no timer due behind it, a turn of its actor moves it to the
//! earliest timer or removes it (counted apart as upkeep), nothing fires early, and the next
//! timer fires at its own time, across a crash too. A firing and a delete move or remove
//! the entry at once.

use std::time::Duration;

use gears::prelude::*;
use gears::testing::TestRuntime;

const SECOND: Duration = Duration::from_secs(1);

/// Arms and cancels reminders; counts those that fired.
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Reminders {
    /// The names of the reminders that fired, in order.
    fired: Vec<String>,
    /// How many turns ran (so each test turn writes the record).
    turns: u32,
}

#[handlers]
impl Reminders {
    /// Arms reminder `name` to fire in `after_s` seconds.
    pub async fn arm(&mut self, ctx: &Context, name: String, after_s: u64) {
        self.turns += 1;
        ctx.timer::<Self>(name.clone(), Timer::after(Duration::from_secs(after_s)))
            .fire(name);
    }

    /// Cancels reminder `name`.
    pub async fn cancel(&mut self, ctx: &Context, name: String) {
        self.turns += 1;
        ctx.cancel_timer(name);
    }

    /// Deletes this actor, timers included.
    pub async fn forget(&mut self, ctx: &Context) {
        ctx.delete();
    }

    /// A reminder's handler.
    #[handler(internal)]
    pub async fn fire(&mut self, name: String) {
        self.fired.push(name);
    }

    /// The reminders that fired.
    pub async fn fired(&self) -> Vec<String> {
        self.fired.clone()
    }
}

async fn open() -> TestRuntime {
    TestRuntime::new(|b| b.register::<Reminders>())
        .await
        .unwrap()
}

/// The store writes one call made (keys put or deleted).
async fn writes_of<F: std::future::Future>(rt: &TestRuntime, call: F) -> u64 {
    let before = rt.runtime().stats().writes;
    call.await;
    rt.runtime().stats().writes - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_and_cancelling_behind_the_earliest_timer_writes_only_the_record() {
    let rt = open().await;
    let r = rt.runtime().get::<Reminders>("r");
    let arm = |name: &str, after_s| r.arm(name.to_string(), after_s);
    let cancel = |name: &str| r.cancel(name.to_string());

    // The first timer: the record and the actor's index entry.
    assert_eq!(writes_of(&rt, arm("a", 10)).await, 2);
    // Later than the entry: the record alone; so is a cancel.
    assert_eq!(writes_of(&rt, arm("b", 20)).await, 1);
    assert_eq!(writes_of(&rt, arm("c", 30)).await, 1);
    assert_eq!(writes_of(&rt, cancel("c")).await, 1);
    assert_eq!(writes_of(&rt, cancel("a")).await, 1);
    // Earlier than the entry: the entry moves (deleted and put) with the record.
    assert_eq!(writes_of(&rt, arm("d", 5)).await, 3);
    // The last cancel leaves the entry too, and a timer armed behind it needs no write.
    assert_eq!(writes_of(&rt, cancel("b")).await, 1);
    assert_eq!(writes_of(&rt, cancel("d")).await, 1);
    assert_eq!(writes_of(&rt, arm("e", 7)).await, 1);
    assert_eq!(writes_of(&rt, cancel("e")).await, 1);
    assert!(rt.timers::<Reminders>("r").await.unwrap().is_empty());

    // When the entry comes due, a turn of the actor removes it (the record says so too):
    // two writes of upkeep, no turn's, and nothing fires.
    let before = rt.runtime().stats();
    rt.advance(60 * SECOND).await.unwrap();
    let after = rt.runtime().stats();
    assert_eq!(after.timer_index_writes - before.timer_index_writes, 2);
    assert_eq!(after.writes - before.writes, 2);
    assert!(r.fired().await.unwrap().is_empty());
    // Then nothing is left to do.
    rt.advance(60 * SECOND).await.unwrap();
    assert_eq!(rt.runtime().stats().writes, after.writes);
    // Armed again: a new entry.
    assert_eq!(writes_of(&rt, arm("f", 10)).await, 2);
    rt.advance(10 * SECOND).await.unwrap();
    assert_eq!(r.fired().await.unwrap(), ["f"]);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_earliest_timer_fires_nothing_and_the_next_fires_at_its_time_across_a_crash() {
    let mut rt = open().await;
    let start = rt.now();
    let r = rt.runtime().get::<Reminders>("r");
    r.arm("early".into(), 10).await.unwrap();
    r.arm("late".into(), 20).await.unwrap();
    // The index entry stays at 10 s.
    r.cancel("early".into()).await.unwrap();

    // At 15 s the entry is due, but no timer is: nothing fires, and a turn of upkeep moves
    // the entry to 20 s (the record, the old entry and the new: no write of a turn).
    let before = rt.runtime().stats();
    rt.advance(15 * SECOND).await.unwrap();
    assert!(r.fired().await.unwrap().is_empty());
    let after = rt.runtime().stats();
    assert_eq!(after.timer_index_writes - before.timer_index_writes, 3);
    assert_eq!(after.turn_writes(), before.turn_writes());

    // A crash forgets when "late" is due; the stored entry (due since 10 s) brings it back.
    rt.crash_and_reopen().await.unwrap();
    let r = rt.runtime().get::<Reminders>("r");
    rt.advance(4 * SECOND).await.unwrap();
    assert!(r.fired().await.unwrap().is_empty(), "fired early");
    rt.advance(SECOND).await.unwrap();
    assert_eq!(r.fired().await.unwrap(), ["late"]);
    assert_eq!(rt.now().duration_since(start).unwrap(), 20 * SECOND);

    // The firing removed the entry: nothing more fires or is written, after a restart too.
    assert!(rt.timers::<Reminders>("r").await.unwrap().is_empty());
    rt.crash_and_reopen().await.unwrap();
    let quiet = rt.runtime().stats().writes;
    rt.advance(60 * SECOND).await.unwrap();
    assert_eq!(rt.runtime().stats().writes, quiet);
    assert_eq!(
        rt.runtime().get::<Reminders>("r").fired().await.unwrap(),
        ["late"]
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_of_one_actor_fire_in_due_order_each_once_and_a_delete_removes_the_entry() {
    let mut rt = open().await;
    let r = rt.runtime().get::<Reminders>("r");
    for (name, after_s) in [("third", 30), ("first", 10), ("second", 20), ("same", 20)] {
        r.arm(name.into(), after_s).await.unwrap();
    }
    rt.advance(25 * SECOND).await.unwrap();
    let mut fired = r.fired().await.unwrap();
    // Two timers due at the same time fire in either order.
    fired[1..].sort();
    assert_eq!(fired, ["first", "same", "second"]);
    rt.crash_and_reopen().await.unwrap();
    let r = rt.runtime().get::<Reminders>("r");
    rt.advance(10 * SECOND).await.unwrap();
    assert_eq!(r.fired().await.unwrap().len(), 4);
    assert_eq!(r.fired().await.unwrap()[3], "third");

    // A deleted actor's entry goes with it: its timers never fire.
    let gone = rt.runtime().get::<Reminders>("gone");
    gone.arm("never".into(), 10).await.unwrap();
    assert_eq!(writes_of(&rt, gone.forget()).await, 2);
    rt.advance(60 * SECOND).await.unwrap();
    assert!(gone.fired().await.unwrap().is_empty());
    rt.shutdown().await.unwrap();
}

/// More entries come due at once than one scan reads (a page of 1024, as after downtime):
/// an actor whose entry is on the first page fires its due timer, and its entry moves to
/// its next timer, which still fires at its time, as do the timers of the entries on the
/// later pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_timer_fires_after_a_page_full_of_due_entries() {
    const NAME: &str = <Reminders as gears::Actor>::NAME;
    let t = open().await;
    // Keys of one shard: "a…" sorts before every "b…", so its entry is on the first page.
    let shard_of = |key: &str| gears::__private::shard_of(NAME, key);
    let first = (0..)
        .map(|n| format!("a-{n}"))
        .find(|k| shard_of(k) == 0)
        .unwrap();
    let others: Vec<String> = (0..)
        .map(|n| format!("b-{n}"))
        .filter(|k| shard_of(k) == 0)
        .take(1100)
        .collect();
    let rt = t.runtime();
    let r = rt.get::<Reminders>(&first);
    r.arm("now".into(), 10).await.unwrap();
    r.arm("later".into(), 60).await.unwrap();
    for key in &others {
        rt.get::<Reminders>(key)
            .arm("now".into(), 10)
            .await
            .unwrap();
    }

    t.advance(10 * SECOND).await.unwrap();
    assert_eq!(r.fired().await.unwrap(), ["now"]);
    for key in others.iter().step_by(100) {
        assert_eq!(
            rt.get::<Reminders>(key).fired().await.unwrap(),
            ["now"],
            "{key}"
        );
    }
    t.advance(50 * SECOND).await.unwrap();
    assert_eq!(r.fired().await.unwrap(), ["now", "later"]);
    t.shutdown().await.unwrap();
}
