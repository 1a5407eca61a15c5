//! `GET /{type}/{key}/events`: committed events arrive as server-sent events in order, a
//! rolled-back turn sends none, a reader that fell behind gets a `lagged` event, and the
//! stream ends when the server shuts down.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::{SseReader, serve};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_events_arrive_in_order_and_lag_is_reported() {
    let s = serve(
        HttpConfig::default().keep_alive(Duration::from_millis(200)),
        |b| b.watch_capacity(4),
    )
    .await;
    let response = s
        .client
        .get(s.url("/account/w/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = SseReader::new(response);
    // The watch is registered once the response headers are out.
    s.post("/account/w/deposit", r#"{"amount":5}"#).await;
    s.post("/account/w/withdraw", r#"{"amount":50}"#).await; // refused: no event
    s.post("/account/w/withdraw", r#"{"amount":2}"#).await;
    let first = events.next(WAIT).await.unwrap();
    assert_eq!(first.event, "event");
    let first: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(first, serde_json::json!({"amount": 5, "balance": 5}));
    let second = events.next(WAIT).await.unwrap();
    let second: serde_json::Value = serde_json::from_str(&second.data).unwrap();
    assert_eq!(second, serde_json::json!({"amount": -2, "balance": 3}));

    // 10,000 events in one turn with a buffer of 4: the reader is told what it missed. (The
    // events are published on another thread than the reader's, so a burst must be long
    // enough that a reader running alongside cannot keep up.)
    s.post("/account/w/burst", r#"{"n":10000}"#).await;
    let mut delivered = 0;
    let mut skipped = 0;
    while delivered + skipped < 10_000 {
        let e = events.next(WAIT).await.unwrap();
        match e.event.as_str() {
            "event" => delivered += 1,
            "lagged" => {
                let lag: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                skipped += lag["skipped"].as_u64().unwrap();
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(delivered + skipped, 10_000);
    assert!(skipped > 0, "a buffer of 4 cannot hold 10,000 events");

    // Another watcher of another key sees only its own.
    let other = s
        .client
        .get(s.url("/account/v/events"))
        .send()
        .await
        .unwrap();
    let mut other = SseReader::new(other);
    s.post("/account/v/deposit", r#"{"amount":1}"#).await;
    let e = other.next(WAIT).await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["balance"],
        1
    );

    // Errors before the stream starts are JSON.
    let (status, _, json) = s.get("/nope/w/events").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (404, Some("unknown_actor_type"))
    );

    // Shutting the server down ends the open streams (it would hang otherwise).
    tokio::time::timeout(WAIT, s.server.shutdown())
        .await
        .expect("shutdown with open streams")
        .unwrap();
    assert_eq!(events.next(WAIT).await, None);
    assert_eq!(other.next(WAIT).await, None);
    s.rt.shutdown().await.unwrap();
}
