//! `Idempotency-Key` over HTTP: a retried call is answered from the stored first result
//! (success or handler error), marked as replayed, and the handler ran once; the same key
//! with another request is a 409; keys are per actor; `/send` deduplicates too.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::{Account, decode, error_name, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_calls_are_answered_from_the_stored_result() {
    let s = serve(HttpConfig::default(), |b| b).await;
    let call = |key: &str, path: &str, body: &str| {
        s.client
            .post(s.url(path))
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
    };

    let (status, headers, first) = decode(
        call("pay-1", "/account/a/deposit", r#"{"amount":10}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, first.clone()), (200, serde_json::json!(10)));
    assert!(!headers.contains_key("idempotency-replayed"));
    // Retries, sequential and concurrent: the same answer, and the handler ran once.
    for _ in 0..3 {
        let (status, headers, again) = decode(
            call("pay-1", "/account/a/deposit", r#"{"amount":10}"#)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &again), (200, &first));
        assert_eq!(headers["idempotency-replayed"], "true");
    }
    let retries = (0..10).map(|_| call("pay-1", "/account/a/deposit", r#"{"amount":10}"#));
    for response in futures::future::join_all(retries).await {
        let (status, _, again) = decode(response.unwrap()).await;
        assert_eq!((status, again), (200, serde_json::json!(10)));
    }
    let state = s.rt.get::<Account>("a");
    assert_eq!(state.balance().await.unwrap(), 10);
    let (_, _, json) = s.get("/account/a").await;
    assert_eq!(json["deposits"], 1, "the handler ran once: {json}");

    // Another key runs again; the same key on another actor is another request.
    let (_, _, v) = decode(
        call("pay-2", "/account/a/deposit", r#"{"amount":10}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v, 20);
    let (_, headers, v) = decode(
        call("pay-1", "/account/b/deposit", r#"{"amount":10}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v, 10);
    assert!(!headers.contains_key("idempotency-replayed"));

    // The same key with another request: 409, and nothing ran.
    let (status, _, json) = decode(
        call("pay-1", "/account/a/deposit", r#"{"amount":99}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_name(&json)), (409, "idempotency_conflict"));
    assert_eq!(state.balance().await.unwrap(), 20);

    // A handler error is stored too: the retry replays it, even after the state changed.
    let (status, _, err) = decode(
        call("take-1", "/account/a/withdraw", r#"{"amount":50}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_name(&err)), (422, "Insufficient"));
    s.post("/account/a/deposit", r#"{"amount":100}"#).await;
    let (status, headers, again) = decode(
        call("take-1", "/account/a/withdraw", r#"{"amount":50}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &again["detail"]), (422, &err["detail"]));
    assert_eq!(headers["idempotency-replayed"], "true");
    assert_eq!(
        state.balance().await.unwrap(),
        120,
        "the replayed withdrawal did not run"
    );

    // An unusable key is a 400.
    for bad in ["", &"k".repeat(300)] {
        let (status, _, json) = decode(
            call(bad, "/account/a/deposit", r#"{"amount":1}"#)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, error_name(&json)), (400, "bad_request"), "{bad:?}");
    }

    // Sends: a resent message is processed once.
    for _ in 0..3 {
        let (status, _, _) = decode(
            call("gift-1", "/account/c/deposit/send", r#"{"amount":7}"#)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202);
    }
    let c = s.rt.get::<Account>("c");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.rt.stats().outbox_backlog > 0 || c.balance().await.unwrap() != 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sends were not processed: balance {:?}, {:?}",
            c.balance().await,
            s.rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give a duplicate the time to be processed too before looking for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.balance().await.unwrap(), 7);

    s.stop().await;
}
