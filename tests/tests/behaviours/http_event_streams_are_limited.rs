//! `GET /{type}/{key}/events` holds a connection and a broadcast buffer per stream, so the
//! ingress caps how many are open at once: one past `max_event_streams` gets a JSON
//! `503 overloaded` with `Retry-After`, and closing a stream frees its place.

use crate::support;

use std::time::{Duration, Instant};

use gears::http::HttpConfig;
use support::{SseReader, decode, error_name, serve};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_stream_past_the_limit_is_refused_until_one_closes() {
    let config = HttpConfig::default()
        .max_event_streams(2)
        // A closed client is noticed at the next keep-alive at the latest.
        .keep_alive(Duration::from_millis(100));
    let s = serve(config, |b| b).await;
    let open = |key: &'static str| {
        let request = s.client.get(s.url(&format!("/account/{key}/events")));
        async move { request.send().await.unwrap() }
    };

    let first = open("a").await;
    assert_eq!(first.status().as_u16(), 200);
    let second = open("b").await;
    assert_eq!(second.status().as_u16(), 200);

    // A third, on a key nobody watches yet: refused before any buffer is made for it.
    let (status, headers, json) = decode(open("c").await).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(error_name(&json), "overloaded");
    assert_eq!(json["limit"], 2);
    assert_eq!(headers["retry-after"], "1");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    // The open streams still work.
    let mut second = SseReader::new(second);
    s.post("/account/b/deposit", r#"{"amount":7}"#).await;
    let event = second.next(WAIT).await.unwrap();
    assert_eq!(event.event, "event");

    // Closing one frees its place (once the server notices the closed connection).
    drop(first);
    let started = Instant::now();
    let third = loop {
        let response = open("c").await;
        match response.status().as_u16() {
            200 => break response,
            503 => {
                assert!(
                    started.elapsed() < WAIT,
                    "a closed stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected status {other}"),
        }
    };
    let mut third = SseReader::new(third);
    s.post("/account/c/deposit", r#"{"amount":3}"#).await;
    assert_eq!(third.next(WAIT).await.unwrap().event, "event");

    // Full again.
    let (status, _, json) = decode(open("d").await).await;
    assert_eq!((status, error_name(&json)), (503, "overloaded"));

    // Other routes are not limited by it.
    let (status, _, _) = s.get("/account/d").await;
    assert_eq!(status, 200);

    tokio::time::timeout(WAIT, s.server.shutdown())
        .await
        .expect("shutdown with open streams")
        .unwrap();
    assert_eq!(second.next(WAIT).await, None);
    assert_eq!(third.next(WAIT).await, None);
    s.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_is_1024() {
    assert_eq!(gears::http::DEFAULT_MAX_EVENT_STREAMS, 1024);
    assert!(format!("{:?}", HttpConfig::default()).contains("max_event_streams: 1024"));
}
