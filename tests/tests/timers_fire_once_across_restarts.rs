//! Durable timers: a timer due after a restart fires once; one that came due while the
//! runtime was down fires once (not twice) when it starts again; periodic timers repeat;
//! cancelled timers never fire; an actor with only a pending timer may be passivated.

use std::time::Duration;

use gears_tests::{Alarm, builder, eventually, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_due_after_a_restart_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Alarm>("a").arm("wake".into(), 1000).await.unwrap();
    assert_eq!(rt.get::<Alarm>("a").pending().await.unwrap(), ["wake"]);
    // Restart before it is due.
    rt.shutdown().await.unwrap();
    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Alarm>("a").rings("wake".into()).await.unwrap(), 0);
    eventually(1, || {
        let alarm = rt.get::<Alarm>("a");
        async move { alarm.rings("wake".into()).await }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alarm = rt.get::<Alarm>("a");
    assert_eq!(alarm.rings("wake".into()).await.unwrap(), 1);
    assert!(alarm.pending().await.unwrap().is_empty());
    rt.shutdown().await.unwrap();

    // And it does not fire again after another restart.
    let rt = open(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rt.get::<Alarm>("a").rings("wake".into()).await.unwrap(), 1);
    assert_eq!(rt.stats().timers_fired, 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_missed_while_down_fires_once_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Alarm>("a")
        .arm("missed".into(), 1000)
        .await
        .unwrap();
    rt.get::<Alarm>("a")
        .arm_every("tick".into(), 300)
        .await
        .unwrap();
    rt.shutdown().await.unwrap();
    // Down while both come due (the periodic one several times).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let rt = open(dir.path()).await;
    eventually(1, || {
        let alarm = rt.get::<Alarm>("a");
        async move { alarm.rings("missed".into()).await }
    })
    .await;
    // The periodic timer fired once for all the missed periods, then keeps its period.
    eventually(1, || {
        let alarm = rt.get::<Alarm>("a");
        async move { alarm.rings("tick".into()).await }
    })
    .await;
    eventually(2, || {
        let alarm = rt.get::<Alarm>("a");
        async move { alarm.rings("tick".into()).await }
    })
    .await;
    let alarm = rt.get::<Alarm>("a");
    assert_eq!(alarm.rings("missed".into()).await.unwrap(), 1);
    assert_eq!(alarm.pending().await.unwrap(), ["tick"]);
    alarm.disarm("tick".into()).await.unwrap();
    let after_cancel = alarm.rings("tick".into()).await.unwrap();
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
    let alarm = rt.get::<Alarm>("sleepy");
    for (name, ms) in [("c", 900), ("a", 500), ("b", 700)] {
        alarm.arm(name.into(), ms).await.unwrap();
    }
    // Re-arming a name replaces its timer.
    alarm.arm("a".into(), 600).await.unwrap();
    assert_eq!(alarm.pending().await.unwrap(), ["a", "b", "c"]);
    // Only timers pending: the actor is passivated...
    eventually(0, || async { Ok::<_, ()>(rt.stats().live_activations) }).await;
    let activations = rt.stats().activations;
    // ...and the firings activate it again.
    for name in ["a", "b", "c"] {
        eventually(1, || {
            let alarm = rt.get::<Alarm>("sleepy");
            async move { alarm.rings(name.into()).await }
        })
        .await;
    }
    assert!(rt.stats().activations > activations);
    assert_eq!(rt.stats().timers_fired, 3);
    rt.shutdown().await.unwrap();
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

    // Gone from the store too: nothing fires after a restart.
    let rt = open(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alarm = rt.get::<Alarm>("doomed");
    assert_eq!(alarm.rings("once".into()).await.unwrap(), 0);
    assert_eq!(alarm.rings("often".into()).await.unwrap(), 0);
    assert_eq!(rt.stats().timers_fired, 0);
    rt.shutdown().await.unwrap();
}
