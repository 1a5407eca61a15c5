//! The outcome of an idempotent request (an HTTP call with an `Idempotency-Key`, a keyed
//! send) is kept for a retention time, not a count: a retry after any number of newer keyed
//! requests is still answered from it; after the retention it runs again, and the runtime
//! removes what expired. Outcomes kept in records by the previous format are honoured and
//! moved to their own keys.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use gears_tests::{Counter, Receiver, builder, settle};
use support::{Account, serve};

/// Polls `done` every 10 ms until it holds; fails after 20 s with `what`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// POSTs `body` to `path` of `base` with an `Idempotency-Key`: status, whether it was
/// replayed, and the body.
async fn keyed(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
) -> (u16, bool, serde_json::Value) {
    let response = client
        .post(url)
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let replayed = response.headers().contains_key("idempotency-replayed");
    let (status, _, body) = support::decode(response).await;
    (status, replayed, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_many_newer_keyed_calls_is_still_answered_from_its_result() {
    let s = serve(HttpConfig::default(), |b| b).await;
    let url = s.url("/account/a/deposit");
    let (status, replayed, body) = keyed(&s.client, &url, "first", r#"{"amount": 5}"#).await;
    assert_eq!((status, replayed, body), (200, false, serde_json::json!(5)));
    // Far more newer keyed calls than the old per-actor window of 32 results held.
    for i in 0..100 {
        let (status, _, _) = keyed(&s.client, &url, &format!("k{i}"), r#"{"amount": 1}"#).await;
        assert_eq!(status, 200);
    }
    let (status, replayed, body) = keyed(&s.client, &url, "first", r#"{"amount": 5}"#).await;
    assert_eq!((status, replayed, body), (200, true, serde_json::json!(5)));
    let deposits = s.rt.read::<Account, _>("a", |a| a.deposits).await.unwrap();
    assert_eq!(deposits, 101, "the retry did not run again");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_send_is_processed_once_however_many_keyed_sends_come_after() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(dir.path()).open().await.unwrap();
    let send = |key: String, n: u64| {
        let rt = rt.clone();
        async move {
            rt.send_idempotent::<Receiver>("r", key)
                .receive("app".into(), n)
                .await
                .unwrap();
        }
    };
    send("s0".into(), 1000).await;
    // Far more than the old per-actor window of 128 keys.
    for i in 1..=300 {
        send(format!("s{i}"), 1).await;
    }
    settle(&rt).await;
    send("s0".into(), 1000).await;
    settle(&rt).await;
    assert_eq!(rt.get::<Receiver>("r").totals().await.unwrap(), (1300, 301));
    // Keys outside the accepted length are refused, not stored.
    let long = rt
        .send_idempotent::<Receiver>("r", "k".repeat(gears::MAX_IDEMPOTENCY_KEY_LEN + 1))
        .receive("app".into(), 1)
        .await;
    assert!(
        matches!(long, Err(gears::CallError::Invalid(_))),
        "{long:?}"
    );
    let empty = rt
        .send_idempotent::<Receiver>("r", "")
        .receive("app".into(), 1)
        .await;
    assert!(
        matches!(empty, Err(gears::CallError::Invalid(_))),
        "{empty:?}"
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_retention_a_retry_runs_again_and_expired_results_are_removed() {
    let retention = Duration::from_millis(300);
    let s = serve(HttpConfig::default(), |b| {
        b.idempotency_retention(retention)
    })
    .await;
    let url = s.url("/account/a/deposit");
    let started = tokio::time::Instant::now();
    let (status, replayed, _) = keyed(&s.client, &url, "once", r#"{"amount": 5}"#).await;
    assert_eq!((status, replayed), (200, false));
    let (status, replayed, body) = keyed(&s.client, &url, "once", r#"{"amount": 5}"#).await;
    if started.elapsed() < retention {
        assert_eq!((status, replayed, body), (200, true, serde_json::json!(5)));
    }
    // Once the retention has passed, the same key runs as a new request.
    let mut deposits = 1;
    until("the kept result to expire", async || {
        let (status, replayed, _) = keyed(&s.client, &url, "once", r#"{"amount": 5}"#).await;
        assert_eq!(status, 200);
        if !replayed {
            deposits += 1;
        }
        !replayed
    })
    .await;
    assert!(started.elapsed() >= retention, "replayed until it expired");
    let stored = s.rt.read::<Account, _>("a", |a| a.deposits).await.unwrap();
    assert_eq!(stored, deposits);
    // The runtime removes expired results (the first one at least; the second expires too).
    until("expired results to be removed", async || {
        s.rt.stats().idempotency_expired >= 2
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_kept_in_records_by_the_previous_format_are_honoured_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    // A counter of 300 as the previous format stored it: a format-3 record keeping the
    // result of the idempotent call "order-42" and the keyed send "payment-7".
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let state = db
            .keyspace("state", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let record = include_bytes!("../../fixtures/state_v3_counter_300_with_replies.bin");
        state
            .insert(gears::__private::state_key("counter", "c"), record)
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    for restart in 0..2 {
        let rt = builder(dir.path()).open().await.unwrap();
        let config = HttpConfig::default().bind(([127, 0, 0, 1], 0).into());
        let server = gears::http::serve(rt.clone(), config).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("http://{}/counter/c/add", server.local_addr());
        // The kept call result is for another request: the same key is a conflict.
        let (status, _, body) = keyed(&client, &url, "order-42", r#"{"n": 1}"#).await;
        assert_eq!(status, 409, "restart {restart}: {body}");
        // The kept send key: a repeat is not processed.
        rt.send_idempotent::<Counter>("c", "payment-7")
            .add(1_000)
            .await
            .unwrap();
        settle(&rt).await;
        if restart == 0 {
            assert_eq!(rt.get::<Counter>("c").get().await.unwrap(), 300);
            // A write moves them out of the record, to their own keys.
            assert_eq!(rt.get::<Counter>("c").add(1).await.unwrap(), 301);
        } else {
            assert_eq!(rt.get::<Counter>("c").get().await.unwrap(), 301);
        }
        server.shutdown().await.unwrap();
        rt.shutdown().await.unwrap();
    }
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let state = db
        .keyspace("state", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let record = state
        .get(gears::__private::state_key("counter", "c"))
        .unwrap()
        .unwrap();
    // Format 2: the state and its timers and subscriptions, without the kept results (or 5:
    // the same, and the messages it processed that no frontier had passed when it was
    // written).
    assert!(matches!(record[0], 2 | 5), "{record:?}");
    let previous = include_bytes!("../../fixtures/state_v3_counter_300_with_replies.bin");
    assert!(record.len() < previous.len(), "{record:?}");
    let kept = db
        .keyspace("replies", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(
        kept.iter().count(),
        2,
        "both results are kept under their own keys"
    );
}
