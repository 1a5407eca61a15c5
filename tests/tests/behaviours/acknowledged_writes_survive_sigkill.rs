//! A write acknowledged before the process is SIGKILLed is still there after reopening, in
//! both durability modes (`Buffered` flushes each batch to the OS, which outlives the
//! process): a child process hammering counters is killed and the store reopened and
//! checked, three times on the same directory.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gears_tests::Counter;
use gears_tests::child::run_until_sigkill;

/// Keys the child spreads its calls over.
const KEYS: u64 = 16;
/// Concurrent callers in the child (`TASKS` in `src/bin/child/crash_child.rs`).
const CHILD_TASKS: u64 = 32;
/// Kill/reopen cycles on the same directory.
const CYCLES: usize = 3;
/// Acknowledgements to see before killing the child.
const ACKS_BEFORE_KILL: usize = 2000;
/// Kill the child after this even if it acknowledged fewer writes (a slow disk is not what
/// this test is about; it still checks whatever was acknowledged).
const READ_BOUND: Duration = Duration::from_secs(120);

/// The values a child acknowledged, per key.
#[derive(Default)]
struct Acks {
    lowest: HashMap<String, u64>,
    highest: HashMap<String, u64>,
    count: usize,
}

impl Acks {
    /// Records one `ack <key> <value>` line.
    fn record(&mut self, line: &str) {
        let parsed = line
            .strip_prefix("ack ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(key, value)| Some((key, value.parse::<u64>().ok()?)));
        let Some((key, value)) = parsed else {
            panic!("unexpected line from the child: {line:?}");
        };
        let lowest = self.lowest.entry(key.to_string()).or_insert(value);
        *lowest = (*lowest).min(value);
        let highest = self.highest.entry(key.to_string()).or_insert(value);
        *highest = (*highest).max(value);
        self.count += 1;
    }
}

/// Runs `crash_child` on `dir` with `durability` (`sync` or `buffered`) until it has
/// acknowledged `ACKS_BEFORE_KILL` writes, SIGKILLs it, and returns every write it
/// acknowledged before dying.
async fn run_child_until_sigkill(dir: &Path, durability: &str) -> Acks {
    let lines = run_until_sigkill(
        env!("CARGO_BIN_EXE_child"),
        [
            "crash_child".as_ref(),
            dir.as_os_str(),
            KEYS.to_string().as_ref(),
            durability.as_ref(),
        ],
        ACKS_BEFORE_KILL,
        READ_BOUND,
    )
    .await;
    let mut acks = Acks::default();
    for line in &lines {
        acks.record(line);
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    survive_sigkill("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_buffered_writes_survive_sigkill() {
    survive_sigkill("buffered").await;
}

async fn survive_sigkill(durability: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    // What the previous reopen found, which the next child starts from.
    let mut stored_before: HashMap<String, u64> = HashMap::new();
    for cycle in 1..=CYCLES {
        let acks = run_child_until_sigkill(dir.path(), durability).await;
        assert!(
            acks.count > 0,
            "cycle {cycle}: crash_child acknowledged nothing in {READ_BOUND:?}"
        );

        let rt = gears_tests::open(dir.path()).await;
        for k in 0..KEYS {
            let key = format!("k{k}");
            let stored = rt
                .get::<Counter>(&key)
                .get()
                .await
                .expect("read a counter after reopening");
            let before = stored_before.get(&key).copied().unwrap_or(0);
            if let Some(&lowest) = acks.lowest.get(&key) {
                assert!(
                    lowest > before,
                    "cycle {cycle}, {key}: the child acknowledged {lowest}, but it should have \
                     started from the stored {before}"
                );
            }
            let highest = acks.highest.get(&key).copied().unwrap_or(before);
            assert!(
                stored >= highest,
                "{durability} cycle {cycle}, {key}: {highest} was acknowledged before SIGKILL, but only \
                 {stored} survived"
            );
            // Each child task has at most one write committed but not yet acknowledged.
            assert!(
                stored - highest <= CHILD_TASKS,
                "cycle {cycle}, {key}: {stored} stored, but only {highest} acknowledged and at \
                 most {CHILD_TASKS} writes were in flight"
            );
            stored_before.insert(key, stored);
        }
        rt.shutdown().await.expect("shut down the checking runtime");
        // The next child opens the same store: release it first.
        drop(rt);
    }
}
