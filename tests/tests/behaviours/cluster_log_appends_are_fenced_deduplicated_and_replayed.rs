//! The per-shard changelog (`gears::cluster::ShardLog`) on real nats-server processes, on
//! one server (R1) and on three (R3): appends expecting the shard's last sequence land; a
//! retry of a landed append (same msg id, now stale expected sequence) returns the original
//! sequence instead of landing again; after another node's epoch entry a zombie's append is
//! fenced; an oversized entry is refused without landing; replays yield exactly the entries of
//! a range, in order and decoded, each naming its predecessor, and an empty range returns at
//! once; a purge removes exactly the entries before the one named and keeps the fence; on R3,
//! with the
//! stream's leader SIGKILLed amid appends, no acknowledged append is lost and none is
//! duplicated, before and after the killed server is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gears::cluster::{AppendError, ClusterConfig, LogEntry, LogWrite, ShardLog};
use gears_tests::nats::NatsCluster;

/// The shard the scenarios write; another one interleaves; a third stays empty.
const SHARD: u16 = 7;
const OTHER: u16 = 8;
const EMPTY: u16 = 9;

/// Each append's deadline: above the write stall of a leader change (5–10 s measured here).
const APPEND_WITHIN: Duration = Duration::from_secs(15);

fn deadline() -> Instant {
    Instant::now() + APPEND_WITHIN
}

/// The entry of group commit `i`: a state write and an outbox delete.
fn writes(i: u64) -> LogEntry {
    let state = LogWrite::new(
        1,
        format!("actor-{i}").into_bytes(),
        Some(i.to_be_bytes().into()),
    );
    let outbox = LogWrite::new(2, i.to_be_bytes().into(), None);
    LogEntry::Writes(vec![state.unwrap(), outbox.unwrap()])
}

async fn open(urls: &[String], name: &str, replicas: usize) -> ShardLog {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|url| url.parse().expect("a NATS URL"))
        .collect();
    let client = async_nats::connect(addrs).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let config = ClusterConfig::new(urls, "tester")
        .name(name)
        .replicas(replicas);
    ShardLog::open(&js, &config).await.expect("open the log")
}

async fn append(
    log: &ShardLog,
    shard: u16,
    expected: u64,
    msg_id: &str,
    entry: &LogEntry,
) -> Result<u64, AppendError> {
    let payload = entry.encode().into();
    log.append(shard, expected, msg_id, payload, deadline())
        .await
}

/// The entries of `shard` in `from..=to`, checking that each names the one before it as its
/// predecessor (the first one: `previous`, when given).
async fn replayed_after(
    log: &ShardLog,
    shard: u16,
    from: u64,
    to: u64,
    mut previous: Option<u64>,
) -> Vec<(u64, LogEntry)> {
    let mut entries = Vec::new();
    let replay = log.replay(shard, from, to, |replayed| {
        if let Some(previous) = previous {
            assert_eq!(replayed.previous, Some(previous), "before {}", replayed.seq);
        }
        previous = Some(replayed.seq);
        entries.push((replayed.seq, replayed.entry));
        Ok(())
    });
    // An empty range returns at once; a full one within a few ms here.
    tokio::time::timeout(Duration::from_secs(30), replay)
        .await
        .expect("the replay returns")
        .expect("the replay succeeds");
    entries
}

async fn replayed(log: &ShardLog, shard: u16, from: u64, to: u64) -> Vec<(u64, LogEntry)> {
    replayed_after(log, shard, from, to, None).await
}

/// Node A appends, a retry of its landed append is answered with the original sequence, node
/// B takes the shard with an epoch entry, A is fenced, B goes on; replays see exactly that.
/// Returns every entry of `SHARD`.
async fn appends_are_fenced_deduplicated_and_replayed(
    urls: &[String],
    name: &str,
    replicas: usize,
) -> Vec<(u64, LogEntry)> {
    let log = open(urls, name, replicas).await;
    assert_eq!(log.last_seq(SHARD).await.unwrap(), 0);

    let (e1, e2, e3) = (writes(1), writes(2), writes(3));
    let s1 = append(&log, SHARD, 0, "a-1", &e1).await.unwrap();
    // Another shard's entry between: a shard's sequences are the stream's, with gaps.
    let o1 = append(&log, OTHER, 0, "o-1", &writes(100)).await.unwrap();
    let s2 = append(&log, SHARD, s1, "a-2", &e2).await.unwrap();
    assert!(s1 < o1 && o1 < s2, "{s1} {o1} {s2}");
    // A retry of a landed append: same msg id, an expected sequence now stale. R3 answers it
    // as a duplicate; R1 refuses it with 10071 naming it, and the log reads it back as ours.
    assert_eq!(append(&log, SHARD, s1, "a-2", &e2).await, Ok(s2));
    let s3 = append(&log, SHARD, s2, "a-3", &e3).await.unwrap();
    assert_eq!(log.last_seq(SHARD).await.unwrap(), s3);
    assert_eq!(log.last_seq(OTHER).await.unwrap(), o1);
    assert_eq!(log.last_seq(EMPTY).await.unwrap(), 0);

    // Node B opens the same log (same config: fine) and takes the shard.
    let b = open(urls, name, replicas).await;
    let taken_at = b.last_seq(SHARD).await.unwrap();
    assert_eq!(taken_at, s3);
    let epoch = LogEntry::Epoch {
        node: "node-b".into(),
        incarnation: 2,
    };
    let s4 = append(&b, SHARD, taken_at, "b-epoch", &epoch)
        .await
        .unwrap();
    // Node A, a zombie, goes on from what it saw last: fenced, and nothing lands.
    let zombie = append(&log, SHARD, s3, "a-4", &writes(4)).await;
    assert_eq!(zombie, Err(AppendError::Fenced { last: Some(s4) }));
    // A zombie's retry of its landed append: R3 still answers the duplicate (the msg id is
    // checked first); R1 checks the expected sequence first and finds B's epoch last.
    let retried = append(&log, SHARD, s2, "a-3", &e3).await;
    if replicas > 1 {
        assert_eq!(retried, Ok(s3));
    } else {
        assert_eq!(retried, Err(AppendError::Fenced { last: Some(s4) }));
    }
    let e5 = writes(5);
    let s5 = append(&b, SHARD, s4, "b-1", &e5).await.unwrap();
    // An entry over NATS' max payload (1 MiB) is refused for good, and does not land.
    let huge = bytes::Bytes::from(vec![0u8; 2 << 20]);
    let refused = b.append(SHARD, s5, "b-huge", huge, deadline()).await;
    assert!(
        matches!(refused, Err(AppendError::Failed(_))),
        "{refused:?}"
    );
    assert_eq!(b.last_seq(SHARD).await.unwrap(), s5);

    let all = vec![
        (s1, e1),
        (s2, e2),
        (s3, e3.clone()),
        (s4, epoch.clone()),
        (s5, e5),
    ];
    // Each entry names its predecessor on the subject (the sequence its append expected).
    assert_eq!(replayed_after(&b, SHARD, 0, s5, Some(0)).await, all);
    assert_eq!(replayed(&log, SHARD, s2 + 1, s4).await, all[2..4]);
    assert_eq!(replayed(&b, SHARD, s4, s4).await, [(s4, epoch)]);
    assert_eq!(replayed(&b, OTHER, 1, o1).await, [(o1, writes(100))]);
    // Empty ranges return at once (a consumer there would only idle).
    assert!(replayed(&b, SHARD, s5 + 1, s5).await.is_empty());
    assert!(replayed(&b, EMPTY, 1, 0).await.is_empty());
    // A failure of `apply` ends the replay with it.
    let stop = b.replay(SHARD, 1, s5, |_| Err(gears::Error::Cluster("stop".into())));
    assert!(stop.await.is_err());
    all
}

/// Purging a shard below one of its entries removes exactly the entries before it; the
/// first one left still names its (gone) predecessor, which is how a catch-up knows a
/// snapshot holds what is missing; purging below the last entry keeps the fence.
async fn purges_keep_the_fence(
    urls: &[String],
    name: &str,
    replicas: usize,
    all: &[(u64, LogEntry)],
) {
    let log = open(urls, name, replicas).await;
    let seqs: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(log.entries(SHARD).await.unwrap(), seqs.len() as u64);
    log.purge_below(SHARD, seqs[3]).await.unwrap();
    assert_eq!(log.entries(SHARD).await.unwrap(), 2);
    assert_eq!(
        log.entries(OTHER).await.unwrap(),
        1,
        "other shards keep theirs"
    );
    assert_eq!(
        replayed_after(&log, SHARD, 1, seqs[4], Some(seqs[2])).await,
        all[3..]
    );
    let last = seqs[4];
    log.purge_below(SHARD, last).await.unwrap();
    assert_eq!(log.entries(SHARD).await.unwrap(), 1);
    assert_eq!(log.last_seq(SHARD).await.unwrap(), last);
    // An append expecting an empty subject (or any but the last) is still fenced.
    let stale = append(&log, SHARD, 0, "z-0", &writes(9)).await;
    assert_eq!(stale, Err(AppendError::Fenced { last: Some(last) }));
    let next = append(&log, SHARD, last, "b-2", &writes(6)).await.unwrap();
    assert_eq!(
        replayed_after(&log, SHARD, 1, next, Some(seqs[3])).await,
        [all[4].clone(), (next, writes(6))]
    );
}

#[test]
fn on_one_server() {
    let nats = NatsCluster::start(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let all = rt.block_on(appends_are_fenced_deduplicated_and_replayed(
        &nats.urls(),
        "log1",
        1,
    ));
    rt.block_on(purges_keep_the_fence(&nats.urls(), "log1", 1, &all));
}

/// Appends entries `writes(1000 + i)` to `SHARD` one at a time, each expecting the last one
/// acknowledged, until `stop`; records each acknowledged (sequence, i).
async fn append_until(
    log: Arc<ShardLog>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
) {
    let mut expected = log.last_seq(SHARD).await.unwrap();
    let mut longest = Duration::ZERO;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let msg_id = format!("k-{i}");
        match append(&log, SHARD, expected, &msg_id, &writes(1000 + i)).await {
            Ok(seq) => {
                assert!(
                    seq > expected,
                    "append {i} landed at {seq}, after {expected}"
                );
                acked.lock().unwrap().push((seq, i));
                expected = seq;
            }
            Err(e) => panic!("append {i} (expecting {expected}) failed: {e}"),
        }
        longest = longest.max(started.elapsed());
    }
    eprintln!("longest append while the leader was killed: {longest:?}");
}

/// Waits until `acked` holds `count` entries; panics after `within`, or at once when the
/// `writer` ended (its append failed).
fn wait_acked(
    acked: &Mutex<Vec<(u64, u64)>>,
    writer: &tokio::task::JoinHandle<()>,
    count: usize,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while acked.lock().unwrap().len() < count {
        assert!(
            !writer.is_finished(),
            "the writer stopped: an append failed"
        );
        assert!(
            Instant::now() < deadline,
            "only {} appends acknowledged after {within:?}, waiting for {count}",
            acked.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_three_servers_with_the_stream_leader_killed() {
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut expected_log = rt.block_on(appends_are_fenced_deduplicated_and_replayed(
        &urls, "log3", 3,
    ));

    let log = Arc::new(rt.block_on(open(&urls, "log3", 3)));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = rt.spawn(append_until(log.clone(), stop.clone(), acked.clone()));
    wait_acked(&acked, &writer, 20, Duration::from_secs(15));
    let leader = nats
        .stream_leader("GEARS_log3_LOG")
        .expect("the stream has one leader");
    let before_kill = acked.lock().unwrap().len();
    nats.kill(leader);
    // Appends go on once the others elect a leader.
    wait_acked(&acked, &writer, before_kill + 50, Duration::from_secs(40));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).expect("every append succeeded");
    // A replay's consumer is created through the meta leader, which the killed server may
    // have been: the caller of a replay retries it; here, wait for the election.
    nats.wait_meta_leader(Duration::from_secs(30));

    let acked: Vec<(u64, u64)> = acked.lock().unwrap().clone();
    let (first, last) = (acked[0].0, acked[acked.len() - 1].0);
    let expected: Vec<(u64, LogEntry)> = acked
        .iter()
        .map(|&(seq, i)| (seq, writes(1000 + i)))
        .collect();
    let verify = |what: &str| {
        rt.block_on(async {
            assert_eq!(log.last_seq(SHARD).await.unwrap(), last, "{what}");
            let got = replayed(&log, SHARD, first, last).await;
            assert_eq!(got.len(), expected.len(), "{what}");
            assert!(
                got == expected,
                "{what}: the log differs from what was acknowledged"
            );
        })
    };
    verify("with the old leader down");

    nats.restart(leader);
    nats.wait_healthy(leader, Duration::from_secs(30));
    verify("with the old leader back");
    // The whole subject: the first scenario's entries, then the acknowledged ones.
    expected_log.extend(expected);
    let whole = rt.block_on(replayed(&log, SHARD, 1, last));
    assert!(
        whole == expected_log,
        "the whole log differs from what was acknowledged"
    );
}
