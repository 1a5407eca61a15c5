//! The dead-letter admin routes: `GET /admin/~dead-letters` lists parked messages (paged),
//! `POST /admin/~dead-letters/{id}/retry` delivers one again, `DELETE /admin/~dead-letters/{id}`
//! discards it; all need the admin token like the other admin routes; an id that does not
//! parse is a `400`, one that names no parked message a `404`, both with JSON errors; and the
//! routes do not hide `/admin/{type}` of a registered type.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::{Served, decode, error_name, serve};

const TOKEN: &str = "dead-letter-token";

async fn request(
    s: &Served,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = s.client.request(method.parse().unwrap(), s.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, _, json) = decode(request.send().await.unwrap()).await;
    (status, json)
}

/// Polls the list until it holds `n` dead letters; returns the list.
async fn listed(s: &Served, n: usize) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, json) = request(s, "GET", "/admin/~dead-letters", Some(TOKEN)).await;
        assert_eq!(status, 200, "{json}");
        if json["dead_letters"].as_array().map(Vec::len) == Some(n) {
            return json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting for {n} dead letters: {json}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_retried_and_discarded_over_http_with_the_admin_token() {
    let s = serve(HttpConfig::default().bearer_token(TOKEN), |b| b).await;
    // Two sends whose handler always panics: parked after 5 attempts each.
    for key in ["a", "b"] {
        let (status, _, json) = s.post(&format!("/account/{key}/explode/send"), "").await;
        assert_eq!(status, 202, "{json}");
    }
    let list = listed(&s, 2).await;
    assert_eq!(
        (list["listed"].as_u64(), list["unlisted"].as_u64()),
        (Some(2), Some(0))
    );
    let letters = list["dead_letters"].as_array().unwrap().clone();
    for (letter, key) in letters.iter().zip(["a", "b"]) {
        assert_eq!(letter["kind"], "send", "{letter}");
        assert_eq!(letter["actor"], "account", "{letter}");
        assert_eq!(letter["key"], key, "{letter}");
        assert_eq!(letter["handler"], "explode", "{letter}");
        assert_eq!(letter["timer"], serde_json::Value::Null, "{letter}");
        assert_eq!(letter["attempts"], 5, "{letter}");
        assert!(
            letter["reason"].as_str().unwrap().contains("panicked"),
            "{letter}"
        );
        assert!(letter["parked_at_ms"].as_u64().unwrap() > 0, "{letter}");
    }
    let id = |i: usize| letters[i]["id"].as_str().unwrap().to_string();

    // Paged: one at a time, `next` leads to the second, and the second page is the last.
    let (_, first) = request(&s, "GET", "/admin/~dead-letters?limit=1", Some(TOKEN)).await;
    assert_eq!(first["dead_letters"][0]["id"], id(0).as_str());
    assert_eq!(first["next"], id(0).as_str());
    let path = format!("/admin/~dead-letters?limit=1&after={}", id(0));
    let (_, second) = request(&s, "GET", &path, Some(TOKEN)).await;
    assert_eq!(second["dead_letters"][0]["id"], id(1).as_str());
    let path = format!("/admin/~dead-letters?limit=1&after={}", id(1));
    let (_, last) = request(&s, "GET", &path, Some(TOKEN)).await;
    assert_eq!(last["dead_letters"].as_array().map(Vec::len), Some(0));
    assert_eq!(last["next"], serde_json::Value::Null);

    // Every dead-letter route needs the token; without it nothing happens.
    let retry = format!("/admin/~dead-letters/{}/retry", id(0));
    let discard = format!("/admin/~dead-letters/{}", id(1));
    for (method, path) in [
        ("GET", "/admin/~dead-letters"),
        ("POST", retry.as_str()),
        ("DELETE", discard.as_str()),
    ] {
        for token in [None, Some("wrong")] {
            let (status, json) = request(&s, method, path, token).await;
            assert_eq!(status, 401, "{method} {path}: {json}");
            assert_eq!(error_name(&json), "unauthorized");
        }
    }
    assert_eq!(s.rt.dead_letters(None, 10).letters.len(), 2);

    // Discard: 204, durable, and then the id is unknown.
    let (status, json) = request(&s, "DELETE", &discard, Some(TOKEN)).await;
    assert_eq!(status, 204, "{json}");
    let (status, json) = request(&s, "DELETE", &discard, Some(TOKEN)).await;
    assert_eq!(
        (status, error_name(&json)),
        (404, "unknown_dead_letter"),
        "{json}"
    );
    let retry_discarded = format!("/admin/~dead-letters/{}/retry", id(1));
    let (status, json) = request(&s, "POST", &retry_discarded, Some(TOKEN)).await;
    assert_eq!(
        (status, error_name(&json)),
        (404, "unknown_dead_letter"),
        "{json}"
    );

    // Retry: 202; it runs again (and, still panicking, is parked again under its id).
    let panics = s.rt.stats().panics;
    let (status, json) = request(&s, "POST", &retry, Some(TOKEN)).await;
    assert_eq!(
        (status, &json["status"]),
        (202, &serde_json::json!("retrying")),
        "{json}"
    );
    let list = listed(&s, 1).await;
    assert_eq!(list["dead_letters"][0]["id"], id(0).as_str());
    assert_eq!(s.rt.stats().panics, panics + 5);

    // Bad ids: a clear 400, never a 5xx.
    for bad in [
        "nonsense",
        "send-1",
        "send-99999-1",
        "timer-1-2-xyz",
        "send-1-2-3",
    ] {
        for (method, path) in [
            ("POST", format!("/admin/~dead-letters/{bad}/retry")),
            ("DELETE", format!("/admin/~dead-letters/{bad}")),
            ("GET", format!("/admin/~dead-letters?after={bad}")),
        ] {
            let (status, json) = request(&s, method, &path, Some(TOKEN)).await;
            assert_eq!(
                (status, error_name(&json)),
                (400, "bad_request"),
                "{method} {path}: {json}"
            );
        }
    }
    // A well-formed id of nothing parked: 404.
    let (status, json) = request(
        &s,
        "POST",
        "/admin/~dead-letters/send-3-12345/retry",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, error_name(&json)),
        (404, "unknown_dead_letter"),
        "{json}"
    );
    let (status, json) = request(&s, "GET", "/admin/~dead-letters?limit=0", Some(TOKEN)).await;
    assert_eq!((status, error_name(&json)), (400, "bad_request"), "{json}");

    // The type's own admin routes are still reached.
    s.rt.get::<support::Account>("k").deposit(5).await.unwrap();
    let (status, json) = request(&s, "GET", "/admin/account", Some(TOKEN)).await;
    assert_eq!(
        (status, &json["keys"]),
        (200, &serde_json::json!(["k"])),
        "{json}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_dead_letters_and_handler_errors() {
    let s = serve(HttpConfig::default(), |b| b).await;
    let (status, _, json) = s.post("/account/m/withdraw/send", r#"{"amount":1}"#).await;
    assert_eq!(status, 202, "{json}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, text) = s.get("/metrics").await;
        let text = text.as_str().unwrap().to_string();
        if text.contains("gears_handler_errors_total 1") {
            assert!(text.contains("gears_dead_letters_total 0"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}
