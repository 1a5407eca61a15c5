//! A watcher that never reads does not block the actor it watches and holds a bounded
//! number of events: when it reads at last it is told how many it missed, then gets the
//! latest ones. A watcher that keeps up sees every event in order.

use std::time::Duration;

use futures::StreamExt;
use gears::Watched;
use gears_tests::{Stock, builder};

const CAPACITY: usize = 16;
/// Events the reading watcher reads, published one at a time before the flood.
const FIRST: u64 = 10;
/// Events published in all.
const EVENTS: u64 = FIRST + 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_bounded_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .watch_capacity(CAPACITY)
        .open()
        .await
        .unwrap();
    let mut stuck = rt.watch::<Stock>("hot").unwrap();
    let mut keeping_up = rt.watch::<Stock>("hot").unwrap();
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(item) = keeping_up.next().await {
            match item {
                Watched::Event(e) => seqs.push(e.seq),
                Watched::Lagged(n) => panic!("a reading watcher lagged by {n}"),
            }
            if seqs.len() as u64 == FIRST {
                return seqs;
            }
        }
        seqs
    });

    // Fewer events than the buffer holds, so the reading watcher cannot fall behind.
    let stock = rt.get::<Stock>("hot");
    for _ in 0..FIRST {
        stock.add(1).await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), (1..=FIRST).collect::<Vec<u64>>());

    // Many concurrent publishers: the stuck watcher must not hold any of them up.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let stock = rt.get::<Stock>("hot");
        tasks.spawn(async move {
            for _ in 0..(EVENTS - FIRST) / 10 {
                stock.add(1).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    // The stuck watcher kept only the last CAPACITY events.
    let first = stuck.next().await.unwrap();
    assert_eq!(first, Watched::Lagged(EVENTS - CAPACITY as u64));
    let mut rest = Vec::new();
    while let Ok(Some(Watched::Event(e))) =
        tokio::time::timeout(Duration::from_millis(200), stuck.next()).await
    {
        rest.push(e.seq);
    }
    let expected: Vec<u64> = (EVENTS - CAPACITY as u64 + 1..=EVENTS).collect();
    assert_eq!(rest, expected);
    rt.shutdown().await.unwrap();
}
