//! On a single node the messages one turn sends (sends, events to subscribers) are stored as
//! one outbox entry: one write instead of one per message. Each message keeps its own number
//! (the entry's number plus its place), which its target records as for a message alone; the
//! frontier passes the entry once every message of it is processed. A target that cannot
//! record a message (its record lists as many as it may, or it was deleted) marks it
//! processed in the outbox instead of deleting the shared entry.

use std::time::Duration;

use gears::prelude::*;
use gears::testing::TestRuntime;
use gears_tests::{
    Alarm, Elsewhere, Sender, Tally, assert_a_deleted_alarm_gets_nothing_again_after_a_crash,
    builder, settle, wait_for_stats,
};

/// Writes the frontier only at a graceful shutdown: what a crash leaves is every message
/// processed since the start still in the outbox.
const NEVER: Duration = Duration::from_secs(3600);

/// Sends several messages from one turn.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "fanout")]
struct Fanout {
    turns: u64,
}

#[handlers]
impl Fanout {
    /// Sends `record(<this key>, tag)` to each `Tally` of `targets`.
    async fn fan(&mut self, ctx: &Context, targets: Vec<String>, tag: u64) {
        self.turns += 1;
        for target in targets {
            ctx.send::<Tally>(target).record(ctx.key().to_string(), tag);
        }
    }

    /// Rings `Alarm(alarm)` and deletes it, in that order.
    async fn ring_then_delete(&mut self, ctx: &Context, alarm: String) {
        ctx.send::<Alarm>(alarm.clone()).ring("x".into());
        ctx.send::<Alarm>(alarm).delete();
    }

    /// Sends `tag` to `Elsewhere(elsewhere)` and to `Tally(tally)`.
    async fn send_to_elsewhere_and_tally(
        &mut self,
        ctx: &Context,
        elsewhere: String,
        tally: String,
        tag: u64,
    ) {
        ctx.send::<Elsewhere>(elsewhere).take(tag);
        ctx.send::<Tally>(tally).record(ctx.key().to_string(), tag);
    }
}

async fn frozen_frontier() -> TestRuntime {
    TestRuntime::new(|b| {
        b.register::<Fanout>()
            .register::<Tally>()
            .register::<Alarm>()
            .__outbox_frontier_every(NEVER)
    })
    .await
    .unwrap()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// What `Tally(tally)` got from `Fanout("f")`.
async fn got(rt: &TestRuntime, tally: &str) -> Vec<u64> {
    let tally = rt.runtime().get::<Tally>(tally);
    tally.received("f".into()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_messages_of_one_turn_are_one_write() {
    let rt = frozen_frontier().await;
    let fanout = rt.runtime().get::<Fanout>("f");
    let targets = names(&["a", "b", "c"]);
    // Every record exists.
    fanout.fan(targets.clone(), 1).await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();

    let before = rt.runtime().stats();
    fanout.fan(targets.clone(), 2).await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();
    let after = rt.runtime().stats();
    for target in &targets {
        assert_eq!(got(&rt, target).await, [1, 2], "{target}");
    }
    // The sender's record and one entry; each target's record (with its message's number).
    assert_eq!(
        after.turn_writes() - before.turn_writes(),
        1 + 1 + 3,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.delivered - before.delivered, 3);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_turn_are_read_again_after_a_crash_and_not_processed_again() {
    let mut rt = frozen_frontier().await;
    let fanout = rt.runtime().get::<Fanout>("f");
    let targets = names(&["a", "b", "c"]);
    for tag in 0..10 {
        fanout.fan(targets.clone(), tag).await.unwrap();
    }
    rt.advance(Duration::ZERO).await.unwrap();
    let all: Vec<u64> = (0..10).collect();

    // The frontier never passed them: each of the 30 messages is read again, and its
    // target, which recorded it, runs no turn for it.
    rt.crash_and_reopen().await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();
    let stats = rt.runtime().stats();
    assert_eq!((stats.delivered, stats.turns), (30, 0), "{stats:?}");
    for target in &targets {
        assert_eq!(got(&rt, target).await, all, "{target}");
    }

    // A graceful shutdown writes the frontier past them: the next start reads none.
    rt.restart().await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();
    assert_eq!(rt.runtime().stats().delivered, 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_record_is_full_marks_its_message_processed() {
    let mut rt = frozen_frontier().await;
    let fanout = rt.runtime().get::<Fanout>("f");
    let targets = names(&["a", "b"]);
    for tag in 0..70 {
        fanout.fan(targets.clone(), tag).await.unwrap();
    }
    rt.advance(Duration::ZERO).await.unwrap();
    let all: Vec<u64> = (0..70).collect();

    // Each target's record lists the first 64 of its messages; it marked the other 6
    // processed in the outbox (their entries hold the other target's message too). The next
    // start reads the 128 it recorded, and none of the 12 marked.
    rt.crash_and_reopen().await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();
    let stats = rt.runtime().stats();
    assert_eq!((stats.delivered, stats.turns), (128, 0), "{stats:?}");
    for target in &targets {
        assert_eq!(got(&rt, target).await, all, "{target}");
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_deleted_by_a_message_of_a_turn_gets_none_of_them_again_after_a_crash() {
    let rt = frozen_frontier().await;
    let fanout = rt.runtime().get::<Fanout>("f");
    fanout.ring_then_delete("a".into()).await.unwrap();
    assert_a_deleted_alarm_gets_nothing_again_after_a_crash(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_of_a_turn_is_delivered_alone_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let with_elsewhere = || {
        builder(dir.path())
            .register::<Fanout>()
            .register::<Elsewhere>()
    };
    let rt = with_elsewhere().__hold_deliveries().open().await.unwrap();
    let fanout = rt.get::<Fanout>("f");
    fanout
        .send_to_elsewhere_and_tally("x".into(), "t".into(), 7)
        .await
        .unwrap();
    rt.shutdown().await.unwrap();

    // Without the type: its message is parked, the other one processed. Messages processed
    // after them move the frontier past their entry, listing the parked one.
    let rt = builder(dir.path())
        .register::<Fanout>()
        .open()
        .await
        .unwrap();
    wait_for_stats(&rt, "one message parked", |s| s.dead_letters == 1).await;
    let sender = rt.get::<Sender>("s");
    for n in 1..=20 {
        sender.send_to("r".into(), n).await.unwrap();
    }
    settle(&rt).await;
    let tally = rt.get::<Tally>("t");
    assert_eq!(tally.received("f".into()).await.unwrap(), [7]);
    rt.shutdown().await.unwrap();

    // With the type again: the parked message is read (from the entry it shares) and
    // delivered; the other one is not delivered again. At the start after that, neither.
    for delivered in [1, 0] {
        let rt = with_elsewhere().open().await.unwrap();
        settle(&rt).await;
        assert_eq!(rt.get::<Elsewhere>("x").got().await.unwrap(), [7]);
        let tally = rt.get::<Tally>("t");
        assert_eq!(tally.received("f".into()).await.unwrap(), [7]);
        assert_eq!(rt.stats().delivered, delivered, "{:?}", rt.stats());
        rt.shutdown().await.unwrap();
    }
}
