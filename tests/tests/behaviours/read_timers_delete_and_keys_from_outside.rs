//! The runtime's outside view of an actor: `read` (a handler-less read-only turn behind the
//! output gate), `timers`, `delete`, and `keys` (paged, storage order, durable keys only).

use std::collections::BTreeSet;

use gears_tests::{Alarm, Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_sees_every_earlier_write_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let c = rt.get::<Counter>("r");
    // Queued behind the writes: the read observes all of them, once they are durable.
    let writes: Vec<_> = (0..50).map(|_| c.add(1)).collect();
    let read = rt.read::<Counter, _>("r", |c| c.value);
    let (_, value) = tokio::join!(futures::future::join_all(writes), read);
    assert_eq!(value.unwrap(), 50);
    let before = rt.stats().writes;
    assert_eq!(rt.read::<Counter, _>("r", |c| c.value).await.unwrap(), 50);
    assert_eq!(rt.stats().writes, before, "a read writes nothing");
    // Never written: the default, and still nothing stored.
    assert_eq!(
        rt.read::<Counter, _>("fresh", |c| c.value).await.unwrap(),
        0
    );
    assert!(rt.read::<Counter, _>("", |c| c.value).await.is_err());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_lists_pending_timers_and_delete_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let a = rt.get::<Alarm>("a");
    a.arm("late".into(), 600_000).await.unwrap();
    a.arm("soon".into(), 300_000).await.unwrap();
    let names: Vec<String> = rt
        .timers::<Alarm>("a")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["soon", "late"], "earliest first");

    rt.delete::<Alarm>("a").await.unwrap();
    assert!(rt.timers::<Alarm>("a").await.unwrap().is_empty());
    assert!(rt.keys::<Alarm>(None, 10).await.unwrap().is_empty());
    rt.shutdown().await.unwrap();

    // Gone on disk too: no timer fires after a restart, no record is left.
    let rt = open(dir.path()).await;
    assert!(rt.timers::<Alarm>("a").await.unwrap().is_empty());
    assert!(rt.keys::<Alarm>(None, 10).await.unwrap().is_empty());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_pages_through_every_stored_key_of_one_type() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let wanted: BTreeSet<String> = (0..300).map(|i| format!("k{i}")).collect();
    for key in &wanted {
        rt.get::<Counter>(key).add(1).await.unwrap();
    }
    // Another type with overlapping keys, and a longer name sharing the prefix bytes.
    rt.get::<Alarm>("k1")
        .arm("x".into(), 600_000)
        .await
        .unwrap();
    // Read-only calls store nothing.
    rt.get::<Counter>("only-read").get().await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = rt.keys::<Counter>(after.as_deref(), 64).await.unwrap();
        assert!(page.len() <= 64);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    assert_eq!(seen.len(), 300, "every key once");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), wanted);
    assert_eq!(rt.keys::<Alarm>(None, 10).await.unwrap(), ["k1"]);

    rt.delete::<Counter>("k7").await.unwrap();
    let all = rt.keys::<Counter>(None, 1000).await.unwrap();
    assert_eq!(all.len(), 299);
    assert!(!all.contains(&"k7".to_string()));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_deleting_an_unwritten_actor_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    // Deleting an actor with no record writes nothing; the next write must still be stored.
    rt.delete::<Counter>("d").await.unwrap();
    rt.delete::<Counter>("d").await.unwrap();
    assert_eq!(rt.get::<Counter>("d").add(5).await.unwrap(), 5);
    // And after deleting one that has a record.
    rt.get::<Counter>("e").add(1).await.unwrap();
    rt.delete::<Counter>("e").await.unwrap();
    assert_eq!(rt.get::<Counter>("e").add(7).await.unwrap(), 7);
    rt.shutdown().await.unwrap();
    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("d").get().await.unwrap(), 5);
    assert_eq!(rt.get::<Counter>("e").get().await.unwrap(), 7);
    assert!(
        rt.keys::<Counter>(None, 0).await.unwrap().is_empty(),
        "a page of 0 keys"
    );
    rt.shutdown().await.unwrap();
}
