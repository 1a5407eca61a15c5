//! Every call asks the placement where its actor's shard is served: a shard placed on
//! another node is refused with `NotOwner`, a shard placed nowhere with `Unavailable`, and
//! nothing reaches the directory. A turn that ran while this node held the shard, but whose
//! commit comes after the shard was taken away, is rejected with `Fenced` and nothing of it
//! is written; when the shard comes back (a new epoch) the actor reloads what is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use gears::__private::{CommitStage, shard_of};
use gears::{CallError, Place, Placement, SHARDS};
use gears_tests::{Counter, builder};

/// Per shard: 0 = elsewhere, u64::MAX = nowhere, else here under that epoch.
struct TestPlacement {
    epochs: Vec<AtomicU64>,
}

const ELSEWHERE: u64 = 0;
const NOWHERE: u64 = u64::MAX;

impl TestPlacement {
    fn new() -> Arc<TestPlacement> {
        Arc::new(TestPlacement {
            epochs: (0..SHARDS).map(|_| AtomicU64::new(1)).collect(),
        })
    }

    fn set(&self, shard: u16, epoch: u64) {
        self.epochs[usize::from(shard)].store(epoch, Ordering::SeqCst);
    }
}

impl Placement for TestPlacement {
    fn place(&self, shard: u16) -> Place {
        match self.epochs[usize::from(shard)].load(Ordering::SeqCst) {
            ELSEWHERE => Place::Remote("node-b".into()),
            NOWHERE => Place::Unavailable,
            epoch => Place::Local { epoch },
        }
    }
}

/// Holds the committer before its next write, once armed, until released.
#[derive(Default)]
struct Hold {
    state: Mutex<(bool, bool)>, // (armed, holding)
    changed: Condvar,
}

impl Hold {
    fn arm(&self) {
        self.state.lock().unwrap().0 = true;
    }

    /// Blocks the committer while armed (called by the fault hook).
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        if !state.0 {
            return;
        }
        state.1 = true;
        self.changed.notify_all();
        while state.0 {
            state = self.changed.wait(state).unwrap();
        }
        state.1 = false;
    }

    fn wait_holding(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn release(&self) {
        self.state.lock().unwrap().0 = false;
        self.changed.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_where_the_placement_says_and_lost_shards_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let placement = TestPlacement::new();
    let hold = Arc::new(Hold::default());
    let hook_hold = hold.clone();
    let rt = builder(dir.path())
        .placement(placement.clone())
        .__fault_hook(Arc::new(move |stage| {
            if stage == CommitStage::BeforeWrite {
                hook_hold.pass();
            }
            Ok(())
        }))
        .open()
        .await
        .unwrap();
    let shard = shard_of("counter", "k");
    let k = rt.get::<Counter>("k");
    assert_eq!(k.add(5).await.unwrap(), 5);

    // Elsewhere, then nowhere: refused before anything runs.
    let turns = rt.stats().turns;
    placement.set(shard, ELSEWHERE);
    assert!(matches!(k.add(1).await, Err(CallError::NotOwner(s)) if s == shard));
    placement.set(shard, NOWHERE);
    assert!(matches!(k.get().await, Err(CallError::Unavailable(s)) if s == shard));
    assert_eq!(rt.stats().turns, turns, "no turn ran");
    // Other shards are unaffected.
    let other = (0..100)
        .map(|i| format!("o{i}"))
        .find(|key| shard_of("counter", key) != shard)
        .unwrap();
    assert_eq!(rt.get::<Counter>(&other).add(1).await.unwrap(), 1);

    // Back here under a new epoch; a turn runs, and the shard is lost before its commit.
    placement.set(shard, 2);
    hold.arm();
    let pending = tokio::spawn({
        let k = k.clone();
        async move { k.add(100).await }
    });
    tokio::task::spawn_blocking({
        let hold = hold.clone();
        move || hold.wait_holding()
    })
    .await
    .unwrap();
    placement.set(shard, ELSEWHERE);
    hold.release();
    let fenced = pending.await.unwrap();
    assert!(
        matches!(fenced, Err(CallError::Fenced(s)) if s == shard),
        "{fenced:?}"
    );

    // Regained under another epoch: the actor reads what is stored, without the fenced 100.
    placement.set(shard, 3);
    assert_eq!(k.get().await.unwrap(), 5);
    assert_eq!(k.add(1).await.unwrap(), 6);
    rt.shutdown().await.unwrap();
    let rt = builder(dir.path()).open().await.unwrap();
    assert_eq!(rt.get::<Counter>("k").get().await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}
