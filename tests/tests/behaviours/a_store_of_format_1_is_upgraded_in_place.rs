//! A whole store written by the previous layout (store format 1: outbox keyed by a global
//! sequence, timers by due time, messages by handler position; `tests/fixtures/
//! store_format_1`) opens and is upgraded in place to shard-ranged keys: its state, pending
//! sends, subscriptions and timers all arrive, each once. A crash in the middle of the
//! upgrade (the process aborts after its first batch) resumes at the next open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gears_tests::{Alarm, Counter, Listener, Receiver, Stock, builder, settle};

/// A fresh copy of the fixture store.
fn copy_fixture(into: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store_format_1");
    let to = into.join("store");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&from)
        .arg(&to)
        .status()
        .expect("cp");
    assert!(status.success());
    to
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the fixture holds, checked after the upgrade: every counter, every pending send
/// delivered once (in order per sender), the subscription in place, the due timer fired
/// once and the others pending; the old keyspaces gone.
async fn check_upgraded(dir: &Path) {
    let rt = builder(dir).open().await.expect("the upgraded store opens");
    for i in 0..20u64 {
        let value = rt.get::<Counter>(format!("c{i}")).get().await.unwrap();
        assert_eq!(value, i + 1, "counter c{i}");
    }
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (115, 6));
    assert_eq!(rt.get::<Receiver>("r2").totals().await.unwrap(), (10, 1));
    // The keyed send was kept: a repeat is not processed.
    rt.send_idempotent::<Receiver>("r", "pay-1")
        .receive("fixture".into(), 100)
        .await
        .unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (115, 6));
    // The subscription request reached the stock: its next event reaches the listener.
    rt.get::<Stock>("st").add(1).await.unwrap();
    settle(&rt).await;
    let listener = rt.get::<Listener>("l");
    until("the event", || async {
        listener.seen().await.unwrap() == [2]
    })
    .await;
    // The timer that came due fired once; the others are pending.
    let alarm = rt.get::<Alarm>("a");
    until("the due timer", || async {
        alarm.rings("soon".into()).await.unwrap() == 1
    })
    .await;
    assert_eq!(alarm.pending().await.unwrap(), ["tick", "later"]);
    assert_eq!(rt.stats().dead_letters, 0);
    rt.shutdown().await.unwrap();

    // Nothing fires or arrives twice after another restart.
    let rt = builder(dir).open().await.unwrap();
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (115, 6));
    assert_eq!(rt.get::<Alarm>("a").rings("soon".into()).await.unwrap(), 1);
    assert_eq!(rt.stats().timers_fired, 0);
    rt.shutdown().await.unwrap();

    let db = fjall::Database::builder(dir).open().unwrap();
    assert!(
        !db.keyspace_exists("outbox"),
        "the format-1 outbox was dropped"
    );
    assert!(
        !db.keyspace_exists("timers"),
        "the format-1 timers were dropped"
    );
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let format = meta.get("store_format").unwrap().unwrap();
    assert_eq!(&*format, 3u32.to_be_bytes().as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_format_1_opens_upgraded_with_everything_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    check_upgraded(&dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_interrupted_by_a_crash_resumes_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(tmp.path());
    // The fixture's outbox is the first batch, its timers the second: die between them.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_child"))
        .arg("upgrade_child")
        .arg(&dir)
        .arg("1")
        .status()
        .await
        .unwrap();
    assert!(
        !status.success(),
        "the child died in the upgrade: {status:?}"
    );
    {
        // Half-way: still format 1, with the outbox copied and the timers not.
        let db = fjall::Database::builder(&dir).open().unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let format = meta.get("store_format").unwrap().unwrap();
        assert_eq!(&*format, 1u32.to_be_bytes().as_slice());
        let copied = db
            .keyspace("outbox_v2", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        assert_eq!(copied.iter().count(), 8);
        let timers = db
            .keyspace("timers_v2", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        assert_eq!(timers.iter().count(), 0);
    }
    check_upgraded(&dir).await;
}
