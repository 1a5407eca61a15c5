//! Three cluster members (child processes) on a real NATS server share the 256 shards by
//! lease: every shard is served by exactly one of them; a member paused (SIGSTOP) past its
//! lease stops serving and its shards are served by the others within a lease time + 5 s,
//! and it serves nothing it lost when it resumes (SIGCONT), then gets its share back; a
//! killed member's shards move within a lease time + 5 s; a member that leaves (SIGTERM)
//! hands its shards over. Throughout, no shard is ever served by two members at once: a
//! member that reports a shard at two consecutive samples served it in between, and no other
//! member reported it then.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gears::SHARDS;
use gears_tests::nats::NatsCluster;

/// Short leases keep the test short; production uses 20 s.
const LEASE: Duration = Duration::from_secs(3);
/// What the issue allows for a dead member's shards to move.
const TAKEOVER: Duration = Duration::from_secs(3 + 5);

/// One sample of a member: when, and the shards it would serve then.
#[derive(Clone)]
struct Sample {
    at_ms: u64,
    shards: [u8; 32],
}

impl Sample {
    fn serves(&self, shard: u16) -> bool {
        self.shards[usize::from(shard / 8)] & (0x80 >> (shard % 8)) != 0
    }

    fn count(&self) -> usize {
        self.shards.iter().map(|b| b.count_ones() as usize).sum()
    }
}

struct Member {
    child: Child,
    samples: Arc<Mutex<Vec<Sample>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(nats: &NatsCluster, id: &str) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_child"))
            .args([
                "cluster_node".into(),
                nats.urls().join(","),
                id.to_string(),
                LEASE.as_millis().to_string(),
                "1".into(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a cluster member");
        let stdout = child.stdout.take().expect("piped");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (samples.clone(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("serves ") {
                    let (at, hex) = rest.split_once(' ').expect("serves <ms> <hex>");
                    let mut shards = [0u8; 32];
                    for (i, byte) in shards.iter_mut().enumerate() {
                        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
                    }
                    s.lock().unwrap().push(Sample {
                        at_ms: at.parse().expect("ms"),
                        shards,
                    });
                } else {
                    l.lock().unwrap().push(line);
                }
            }
        });
        Member {
            child,
            samples,
            lines,
        }
    }

    fn latest(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().cloned()
    }

    fn signal(&self, signal: &str) {
        gears_tests::child::signal(self.child.id(), signal);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Waits until `members` (the running ones) together serve every shard, each at least one,
/// by samples taken after the wait began; returns how long that took.
fn wait_until_covered(members: &[&Member], within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let since = unix_ms();
    loop {
        let mut union = [0u8; 32];
        let mut each = true;
        for m in members {
            match m.latest() {
                Some(s) if s.at_ms >= since && s.count() > 0 => {
                    for (u, b) in union.iter_mut().zip(s.shards) {
                        *u |= b;
                    }
                }
                _ => each = false,
            }
        }
        let covered: usize = union.iter().map(|b| b.count_ones() as usize).sum();
        if each && covered == usize::from(SHARDS) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: after {within:?} the members serve {covered} of {SHARDS} shards"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// No shard served by two members at once: between two consecutive samples of one member
/// that both serve a shard, no other member's sample serves it.
fn assert_never_served_twice(members: &[&Member]) {
    let all: Vec<Vec<Sample>> = members
        .iter()
        .map(|m| m.samples.lock().unwrap().clone())
        .collect();
    let mut checked = 0u64;
    for shard in 0..SHARDS {
        for (i, own) in all.iter().enumerate() {
            for pair in own.windows(2) {
                if !(pair[0].serves(shard) && pair[1].serves(shard)) {
                    continue;
                }
                let (from, to) = (pair[0].at_ms, pair[1].at_ms);
                for (j, other) in all.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let clash = other
                        .iter()
                        .find(|s| s.at_ms >= from && s.at_ms <= to && s.serves(shard));
                    assert!(
                        clash.is_none(),
                        "shard {shard} served by member {i} at {from}..{to} ms and by member {j} at {} ms",
                        clash.map(|s| s.at_ms).unwrap_or_default()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "too few samples to check ({checked})");
}

#[test]
fn shards_are_owned_by_one_node_at_a_time_and_move_when_a_node_dies() {
    let nats = NatsCluster::start(1);
    let a = Member::start(&nats, "node-a");
    let b = Member::start(&nats, "node-b");
    let c = Member::start(&nats, "node-c");
    let joined = wait_until_covered(&[&a, &b, &c], Duration::from_secs(60), "three joined");
    eprintln!("three members serve every shard {joined:?} after starting");

    // A paused member's shards are served by the others once its lease lapses.
    a.signal("-STOP");
    let moved = wait_until_covered(&[&b, &c], TAKEOVER, "a paused");
    eprintln!("a paused member's shards moved within {moved:?}");
    let paused_until = a.latest().expect("a sampled").at_ms;
    // Paused past its lease, it resumes serving nothing it lost, and gets its share back.
    std::thread::sleep(Duration::from_millis(500));
    a.signal("-CONT");
    let back = wait_until_covered(&[&a, &b, &c], Duration::from_secs(60), "a resumed");
    eprintln!("the resumed member got its share back within {back:?}");
    let resumed = a.samples.lock().unwrap().clone();
    let first_after = resumed
        .iter()
        .find(|s| s.at_ms > paused_until)
        .expect("samples after the pause");
    assert_eq!(
        first_after.count(),
        0,
        "right after its pause the member still served shards it had lost"
    );

    // A killed member's shards move within a lease time + 5 s.
    let mut b = b;
    b.child.kill().expect("SIGKILL b");
    let moved = wait_until_covered(&[&a, &c], TAKEOVER, "b killed");
    eprintln!("a killed member's shards moved within {moved:?}");

    // A member that leaves hands its shards over.
    c.signal("-TERM");
    let moved = wait_until_covered(&[&a], TAKEOVER, "c left");
    eprintln!("a leaving member's shards moved within {moved:?}");
    let mut c = c;
    let status = c.child.wait().expect("wait for c");
    assert!(status.success(), "the leaving member exited with {status}");
    assert!(
        c.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("left ")),
        "the leaving member did not report leaving: {:?}",
        c.lines.lock().unwrap()
    );

    assert_never_served_twice(&[&a, &b, &c]);
}
