//! A call to an idle actor starts its turn in the caller's task (no task switch): the turn
//! still finishes when the caller gives up, it belongs to the runtime's Tokio runtime whatever
//! executor the caller runs on, other callers' turns never run in it, deep call chains still
//! complete, and a handler's value that panics when dropped after its caller left wedges
//! nothing.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use gears::__private::CommitStage;
use gears::prelude::*;
use gears_tests::gate::CommitGate;
use gears_tests::latch::Latch;
use gears_tests::{Counter, Relay, builder, eventually, open, wait_for_stats};

/// Spins until `flag` is set (at most 10 s); returns whether it was.
fn spin_until(flag: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    flag.load(Ordering::SeqCst)
}

static HOLDING: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);
static FIRST_RETURNED: AtomicBool = AtomicBool::new(false);

/// Handlers that never await: their turns finish in the poll that starts them.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "busy")]
struct Busy;

#[handlers]
impl Busy {
    /// Holds the actor until `RELEASE`.
    async fn hold(&self) -> bool {
        HOLDING.store(true, Ordering::SeqCst);
        spin_until(&RELEASE)
    }

    /// Nothing: activates the actor.
    async fn touch(&self) {}

    /// Whether the caller of `hold` had its reply before this turn ended.
    async fn check(&self) -> bool {
        spin_until(&FIRST_RETURNED)
    }
}

/// A handler value that panics when dropped while `ARMED`.
#[derive(Serialize)]
struct Bomb;

static ARMED: AtomicBool = AtomicBool::new(false);

impl Drop for Bomb {
    fn drop(&mut self) {
        if ARMED.swap(false, Ordering::SeqCst) {
            panic!("a handler's value panicked when dropped");
        }
    }
}

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "bomber")]
struct Bomber {
    writes: u64,
}

#[handlers]
impl Bomber {
    /// A write whose value is a [`Bomb`].
    async fn write(&mut self) -> Bomb {
        self.writes += 1;
        Bomb
    }

    /// The writes so far.
    async fn writes(&self) -> u64 {
        self.writes
    }
}

static DIVERS: OnceLock<Runtime> = OnceLock::new();

/// Calls the next actor through a `Runtime` handle (not its `Context`): such calls carry no
/// call chain.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "diver")]
struct Diver;

#[handlers]
impl Diver {
    /// Calls `d{depth - 1}`'s `dive`; returns how deep the calls went.
    async fn dive(&self, depth: u32) -> u32 {
        if depth == 0 {
            return 0;
        }
        let rt = DIVERS.get().expect("the runtime is set");
        match rt
            .get::<Diver>(format!("d{}", depth - 1))
            .dive(depth - 1)
            .await
        {
            Ok(reached) => reached + 1,
            Err(_) => 0,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_after_its_first_poll_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    // The gate holds the committer before it writes, so the commit cannot finish (and the
    // reply cannot arrive) between the turn's submission and the end of the first poll.
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = gate.open_runtime(dir.path()).await;
    let counter = rt.get::<Counter>("k");
    gate.close();
    // The turn runs within the first poll; its reply waits for the commit, so the call is
    // still pending when the caller drops it.
    let mut call = Box::pin(counter.add(7));
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(
        first.is_pending(),
        "a durable write answers after its commit"
    );
    drop(call);
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    gate.open();
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
    // The handler waits, so its turn moves to a task of its own, which outlives the caller.
    let latch = Latch::new();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        counter.add_when_open(5, latch.name()),
    )
    .await;
    assert!(gave_up.is_err(), "the caller should have timed out");
    latch.open();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_callers_turns_never_run_in_the_first_callers_task() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path()).register::<Busy>().open().await.unwrap();
    let busy = rt.get::<Busy>("b");
    // Loaded, so the next call's turn runs in its caller's task.
    busy.touch().await.unwrap();
    // The first caller runs on a thread of its own: `check` spins on a worker of the
    // runtime, and a caller task woken into that worker's LIFO slot could not be stolen by
    // the other worker (seen once: `check` gave up after 10 s).
    let first = std::thread::spawn({
        let busy = busy.clone();
        move || {
            let executor = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            executor.block_on(async move {
                let held = busy.hold().await;
                FIRST_RETURNED.store(true, Ordering::SeqCst);
                held
            })
        }
    });
    assert!(spin_until(&HOLDING));
    // Queued behind `hold` while it runs in the first caller's task: its first poll queues
    // it.
    let mut second = Box::pin({
        let busy = busy.clone();
        async move { busy.check().await }
    });
    let polled = std::future::poll_fn(|cx| Poll::Ready(second.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "a call ran while its actor was busy");
    let second = tokio::spawn(second);
    RELEASE.store(true, Ordering::SeqCst);
    let first = tokio::task::spawn_blocking(move || first.join().unwrap());
    assert!(first.await.unwrap().unwrap());
    assert!(
        second.await.unwrap().unwrap(),
        "the second caller's turn ran before the first caller had its reply"
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_panics_when_dropped_after_its_caller_left_wedges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Holds the write's commit until the caller has left (its first poll cannot see a reply).
    let gate = CommitGate::at(CommitStage::BeforeWrite);
    let rt = builder(dir.path())
        .__fault_hook(gate.hook())
        .register::<Bomber>()
        .idle_timeout_for::<Bomber>(Duration::ZERO)
        .call_timeout(Duration::from_secs(5))
        .open()
        .await
        .unwrap();
    let bomber = rt.get::<Bomber>("k");
    assert_eq!(bomber.writes().await.unwrap(), 0);
    // Not live, so the call's first poll starts its turn (which waits for the load): a caller
    // that leaves then cannot cancel it. (A live actor may still be finishing the previous
    // turn's task when its reply arrives; a call queued then whose caller leaves before its
    // turn starts is skipped.)
    wait_for_stats(&rt, "the bomber passivated", |s| {
        rt.passivate_idle();
        s.live_activations == 0
    })
    .await;
    ARMED.store(true, Ordering::SeqCst);
    // The caller leaves before the write is durable: the value is dropped when it is.
    gate.close();
    let mut call = Box::pin(bomber.write());
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    drop(call);
    gate.wait_holding(1, || format!("{:?}", rt.stats())).await;
    gate.open();
    // The write settles all the same: the actor answers, and passivates when idle.
    assert_eq!(bomber.writes().await.unwrap(), 1);
    assert!(!ARMED.load(Ordering::SeqCst), "the value was dropped");
    assert_eq!(bomber.write().await.map(|_| ()).ok(), Some(()));
    assert_eq!(bomber.writes().await.unwrap(), 2);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_nested_through_runtime_handles_do_not_overflow_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path())
        .register::<Diver>()
        .open()
        .await
        .unwrap();
    DIVERS.set(rt.clone()).ok().unwrap();
    // 600 nested calls, none through a `Context`, so no call chain bounds them: the first
    // dive loads every actor, the second finds them all in memory.
    assert_eq!(rt.get::<Diver>("d600").dive(600).await.unwrap(), 600);
    assert_eq!(rt.get::<Diver>("d600").dive(600).await.unwrap(), 600);
    rt.shutdown().await.unwrap();
}
