//! A call to an idle actor starts its turn in the caller's task (no task switch): the turn
//! still finishes when the caller gives up, it belongs to the runtime's Tokio runtime whatever
//! executor the caller runs on, and deep call chains still complete.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use gears_tests::{Counter, Relay, eventually, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_after_its_first_poll_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let counter = rt.get::<Counter>("k");
    // The turn ran within the first poll; its reply waits for the commit, so the call is
    // still pending when the caller drops it.
    let mut call = Box::pin(counter.add(7));
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(
        first.is_pending(),
        "a durable write answers after its commit"
    );
    drop(call);
    assert_eq!(counter.get().await.unwrap(), 7);
    rt.shutdown().await.unwrap();

    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("k").get().await.unwrap(), 7);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_cancel_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let counter = rt.get::<Counter>("k");
    // The handler sleeps, so its turn moves to a task of its own, which outlives the caller.
    let gave_up = tokio::time::timeout(Duration::from_millis(20), counter.slow_add(5, 200)).await;
    assert!(gave_up.is_err(), "the caller should have timed out");
    eventually(5, || counter.get()).await;
    assert_eq!(counter.add(1).await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}

#[test]
fn calls_work_from_an_executor_that_is_not_the_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio.block_on(open(dir.path()));
    let counter = rt.get::<Counter>("k");
    // A plain executor, with no Tokio runtime, timer or blocking pool of its own: the
    // handler's sleep, the load from the store and the wait for the commit all use the
    // runtime's.
    let (slow, fast, read) = std::thread::spawn(move || {
        futures::executor::block_on(async {
            let slow = counter.slow_add(2, 30).await.unwrap();
            let fast = counter.add(3).await.unwrap();
            (slow, fast, counter.get().await.unwrap())
        })
    })
    .join()
    .unwrap();
    assert_eq!((slow, fast, read), (2, 5, 5));
    tokio.block_on(rt.shutdown()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_calls_deeper_than_runs_in_one_task_completes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    // 40 actors, each calling the next from its handler: the first few turns run in their
    // caller's task, the rest in tasks of their own.
    let route: Vec<String> = (1..40).map(|i| format!("r{i}")).collect();
    assert_eq!(
        rt.get::<Relay>("r0").forward(route.clone()).await.unwrap(),
        1
    );
    // Again, now that every actor is active and holds one hop.
    assert_eq!(rt.get::<Relay>("r0").forward(route).await.unwrap(), 2);
    rt.shutdown().await.unwrap();
}
