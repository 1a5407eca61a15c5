//! The queue of writes waiting for the committer is bounded (`commit_queue`): while the
//! committer is held, an actor's turns go on only until the queue is full, then its next
//! write waits for room instead of piling up; once the committer goes on, every write is
//! committed and every caller answered, in order.

use std::time::Duration;

use gears::__private::CommitStage;
use gears_tests::gate::CommitGate;
use gears_tests::{Counter, builder, wait_for_stats};

const QUEUE: usize = 4;
const CALLS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_commit_queue_holds_writers_back() {
    let dir = tempfile::tempdir().unwrap();
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = builder(dir.path())
        .commit_queue(QUEUE)
        .__fault_hook(gate.hook())
        .open()
        .await
        .unwrap();
    let c = rt.get::<Counter>("c");
    gate.close();
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.add(1).await }
    });
    // The committer took the first write and holds it: the queue is empty.
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.add(1).await })
        })
        .collect();
    // `QUEUE` more writes fit in the queue; the turn after them ran and waits for room, so
    // no later turn of the actor runs.
    let bound = 1 + QUEUE as u64 + 1;
    wait_for_stats(&rt, "the turns that fit", |s| s.turns >= bound).await;
    // Give turns that wrongly go on the time to run before counting them.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(rt.stats().turns, bound, "{:?}", rt.stats());
    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.unwrap().unwrap());
    }
    values.sort_unstable();
    assert_eq!(values, (2..=CALLS + 1).collect::<Vec<_>>());
    assert_eq!(c.get().await.unwrap(), CALLS + 1);
    rt.shutdown().await.unwrap();
}
