//! What goes wrong around a turn neither loses nor duplicates messages, nor leaks capacity:
//! a state that fails to encode releases none of the turn's sends; a panic outside the
//! handler on a delivered message retries it; a send whose caller stops waiting still
//! completes and does not hang shutdown; undeliverable timers are parked at once, as dead
//! letters, and do not hide later ones.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use gears::__private::CommitStage;
use gears::CallError;
use gears::prelude::*;
use gears_tests::gate::CommitGate;
use gears_tests::{
    Alarm, EncodingFault, Fragile, Receiver, arm_encoding_fault, builder, eventually, open, settle,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_encoding_releases_no_sends() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let fragile = rt.get::<Fragile>("fails-once");
    arm_encoding_fault("fails-once", EncodingFault::Fail, 1);
    let failed = fragile.add_and_send(1, "r".into()).await;
    assert!(matches!(failed, Err(CallError::Storage(_))), "{failed:?}");
    settle(&rt).await;
    // Give a wrongly released send the time to arrive before looking for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (0, 0));
    assert_eq!(rt.stats().outbox_backlog, 0);
    assert_eq!(rt.stats().sends, 0);
    // The actor and the outbox still work.
    assert_eq!(fragile.add_and_send(2, "r".into()).await.unwrap(), 2);
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (2, 1));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_outside_the_handler_on_a_delivery_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    arm_encoding_fault("panics-once", EncodingFault::Panic, 1);
    rt.send::<Fragile>("panics-once").add(5).await.unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Fragile>("panics-once").total().await.unwrap(), 5);
    let stats = rt.stats();
    assert_eq!((stats.delivered, stats.dead_letters), (1, 0));
    assert_eq!(stats.panics, 1, "the first delivery panicked: {stats:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sends_complete_and_shutdown_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = gate.open_runtime(dir.path()).await;
    // With the committer held, no send can be durable: each caller gives up after its
    // send's first poll, with the send admitted and nothing acknowledged.
    gate.close();
    for _ in 0..20 {
        let mut send = Box::pin(rt.send::<Receiver>("r").receive("impatient".into(), 1));
        let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
        assert!(
            first.is_pending(),
            "a send was acknowledged while nothing is durable"
        );
    }
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    gate.open();
    settle(&rt).await;
    assert_eq!(
        rt.get::<Receiver>("r").totals().await.unwrap(),
        (20, 20),
        "every abandoned send was processed, once"
    );
    assert_eq!(rt.stats().sends, 20);
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown hung")
        .unwrap();
}

/// An actor type that is registered only in the first run.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "orphan")]
struct Orphan;

#[handlers]
impl Orphan {
    /// Schedules `n` timers, all due at once, `after_ms` from now.
    async fn schedule(&mut self, ctx: &Context, n: u32, after_ms: u64) {
        for i in 0..n {
            let due = gears::Timer::after(Duration::from_millis(after_ms));
            ctx.timer::<Self>(format!("t{i}"), due).ring();
        }
    }

    /// Does nothing: only the timers matter.
    async fn ring(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_timers_do_not_hide_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .register::<Orphan>()
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    // Due only after this runtime is gone: timers fire even while deliveries are held, and a
    // firing here would consume one (its type is registered here).
    rt.get::<Orphan>("o").schedule(1100, 3_000).await.unwrap();
    rt.shutdown().await.unwrap();

    // Without `Orphan` registered, its 1,100 due timers cannot be delivered: each is parked
    // once due (listed as a dead letter, left in the store), and a timer armed after them fires.
    let rt = open(dir.path()).await;
    gears_tests::wait_for_stats(&rt, "1,100 parked timers", |s| s.dead_letters == 1100).await;
    let alarm = rt.get::<Alarm>("a");
    alarm.arm("later".into(), 50).await.unwrap();
    eventually(1, || {
        let alarm = alarm.clone();
        async move { alarm.rings("later".into()).await }
    })
    .await;
    let mut after = None;
    let mut listed = 0;
    loop {
        let page = rt.dead_letters(after, 1000);
        for letter in &page.letters {
            assert_eq!(letter.kind, gears::DeadLetterKind::Timer, "{letter:?}");
            assert_eq!(
                (letter.actor.as_str(), letter.key.as_str()),
                ("orphan", "o")
            );
            assert_eq!(
                (letter.handler.as_deref(), letter.attempts),
                (Some("ring"), 1)
            );
            assert!(letter.reason.contains("orphan"), "{letter:?}");
        }
        listed += page.letters.len();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, 1100);
    rt.shutdown().await.unwrap();

    // Still stored: the next start that registers `Orphan` fires them.
    let rt = builder(dir.path())
        .register::<Orphan>()
        .open()
        .await
        .unwrap();
    gears_tests::wait_for_stats(&rt, "the timers fired", |s| s.timers_fired == 1100).await;
    assert!(rt.timers::<Orphan>("o").await.unwrap().is_empty());
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();
}
