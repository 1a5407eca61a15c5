//! Every route of the HTTP ingress, over a real loopback server and client: calls, sends,
//! state, admin (keys, timers, delete), metrics and health, and the status of each error.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use gears_tests::latch::Latch;
use support::{Account, decode, error_name, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_sends_state_and_admin_routes() {
    let s = serve(HttpConfig::default(), |b| b).await;

    // A call: the JSON body's fields are the arguments; the value comes back as JSON.
    let (status, headers, body) = s.post("/account/alice/deposit", r#"{"amount": 70}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, 70);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(!headers.contains_key("idempotency-replayed"));
    // No arguments: an empty body (or `{}`).
    let (status, _, body) = s.post("/account/alice/balance", "").await;
    assert_eq!((status, body), (200, serde_json::json!(70)));
    let (status, _, body) = s.post("/account/alice/balance", "{}").await;
    assert_eq!((status, body), (200, serde_json::json!(70)));
    // A body that is not empty must be a JSON object: blanks are not (schemathesis sent `\r`).
    for blank in ["\r", " ", "\n\t"] {
        let (status, _, body) = s.post("/account/alice/balance", blank).await;
        assert_eq!(status, 400, "{blank:?}: {body}");
        let (status, _, body) = s.post("/account/alice/balance/send", blank).await;
        assert_eq!(status, 400, "{blank:?} sent: {body}");
    }
    // Keys are percent-decoded path segments: `a/b c` is one key.
    let (status, _, body) = s
        .post("/account/a%2Fb%20c/deposit", r#"{"amount": 1}"#)
        .await;
    assert_eq!((status, body), (200, serde_json::json!(1)));
    assert_eq!(s.rt.get::<Account>("a/b c").balance().await.unwrap(), 1);

    // A handler error: 422 named after the variant, its JSON under `detail`, rolled back.
    let (status, _, body) = s
        .post("/account/alice/withdraw", r#"{"amount": 100}"#)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_name(&body), "Insufficient");
    assert_eq!(body["detail"]["Insufficient"]["wanted"], 100);
    let (status, _, body) = s.post("/account/alice/withdraw", r#"{"amount": 30}"#).await;
    assert_eq!((status, body), (200, serde_json::json!(40)));

    // The state, as JSON.
    let (status, _, state) = s.get("/account/alice").await;
    assert_eq!(status, 200);
    assert_eq!(state["balance"], 40);
    assert_eq!(state["deposits"], 1);

    // Fire-and-forget: 202 once durable, then processed.
    let (status, _, body) = s
        .post("/account/bob/deposit/send", r#"{"amount": 5}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    wait_for(|| async { s.rt.get::<Account>("bob").balance().await.unwrap() == 5 }).await;
    // A send is checked before it is queued.
    let (status, _, body) = s
        .post("/account/bob/deposit/send", r#"{"amount": "x"}"#)
        .await;
    assert_eq!((status, error_name(&body)), (400, "bad_request"));
    let (status, _, body) = s.post("/account/bob/nope/send", "{}").await;
    assert_eq!((status, error_name(&body)), (404, "unknown_handler"));

    // Admin: timers of an actor, earliest first.
    s.post(
        "/account/carol/schedule",
        r#"{"name": "late", "ms": 600000}"#,
    )
    .await;
    s.post(
        "/account/carol/schedule",
        r#"{"name": "soon", "ms": 300000}"#,
    )
    .await;
    let (status, _, body) = s.get("/admin/account/carol/timers").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["soon", "late"]);
    assert!(body["timers"][0]["due_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(body["timers"][0]["every_ms"].is_null());

    // Admin: keys, paged.
    for i in 0..5 {
        s.post(&format!("/account/k{i}/deposit"), r#"{"amount": 1}"#)
            .await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/account?limit=3&after={a}"),
            None => "/admin/account?limit=3".to_string(),
        };
        let (status, _, page) = s.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 3);
        seen.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    for key in ["alice", "bob", "carol", "k0", "k4", "a/b c"] {
        assert!(seen.iter().any(|k| k == key), "{key} listed in {seen:?}");
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no key twice across pages");

    // Admin: delete; the actor starts over, its timers are gone.
    let response = s
        .client
        .delete(s.url("/admin/account/carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (_, _, body) = s.get("/admin/account/carol/timers").await;
    assert_eq!(body["timers"], serde_json::json!([]));
    let (_, _, page) = s.get("/admin/account?limit=1000").await;
    assert!(
        !page["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "carol")
    );

    // Health and metrics.
    let (status, _, body) = s.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let response = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = response.text().await.unwrap();
    let turns = metric(&text, "gears_turns_total");
    assert!(turns >= 10.0, "{text}");
    assert!(metric(&text, "gears_live_activations") >= 1.0);
    let batches = metric(&text, "gears_commit_batches_total");
    assert!(batches >= 1.0);
    // `Durability::Sync` (the default): every batch's journal persist was an fsync (a batch
    // still being committed may have synced before it is counted).
    assert!(
        metric(&text, "gears_journal_fsyncs_total") >= batches,
        "{text}"
    );
    assert_eq!(metric(&text, "gears_journal_flushes_total"), 0.0, "{text}");
    assert!(metric(&text, "gears_commit_seconds_total") > 0.0);
    assert!(metric(&text, "gears_http_requests_total") >= 10.0);
    assert!(metric(&text, "gears_http_client_errors_total") >= 3.0);
    for name in [
        "gears_outbox_backlog",
        "gears_mailbox_rejections_total",
        "gears_panics_total",
        "gears_commit_writes_total",
        "gears_commit_max_batch",
    ] {
        metric(&text, name);
    }
    assert!(text.trim_end().ends_with("# EOF"));

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_status() {
    let s = serve(HttpConfig::default().body_limit(1024), |b| {
        b.mailbox_capacity(1)
    })
    .await;
    let long_key = format!("/account/{}/deposit", "k".repeat(gears::MAX_KEY_LEN + 1));
    let cases: Vec<(&str, &str, String, &str, u16, &str)> = vec![
        // (method, path, body, why, status, error)
        (
            "POST",
            "/nope/k/h",
            "{}".into(),
            "unknown type",
            404,
            "unknown_actor_type",
        ),
        (
            "GET",
            "/nope/k",
            String::new(),
            "unknown type",
            404,
            "unknown_actor_type",
        ),
        (
            "POST",
            "/account/k/nope",
            "{}".into(),
            "unknown handler",
            404,
            "unknown_handler",
        ),
        (
            "GET",
            "/a/b/c/d/e",
            String::new(),
            "no route",
            404,
            "not_found",
        ),
        ("GET", "/", String::new(), "no route", 404, "not_found"),
        (
            "POST",
            "/account/k/deposit",
            "{".into(),
            "malformed JSON",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/account/k/deposit",
            r#"{"amount":"x"}"#.into(),
            "wrong type",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/account/k/deposit",
            "{}".into(),
            "missing field",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/account/k/deposit",
            r#"{"amount":1,"x":2}"#.into(),
            "unknown field",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/account/k/deposit",
            "1".into(),
            "not an object",
            400,
            "bad_request",
        ),
        (
            "POST",
            &long_key,
            r#"{"amount":1}"#.into(),
            "long key",
            400,
            "invalid_key",
        ),
        (
            "POST",
            "/account/a%0Ab/deposit",
            r#"{"amount":1}"#.into(),
            "control character",
            400,
            "invalid_key",
        ),
        (
            "POST",
            "/account/%FF/deposit",
            r#"{"amount":1}"#.into(),
            "not UTF-8",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/admin/account?limit=0",
            String::new(),
            "limit 0",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/admin/account?limit=x",
            String::new(),
            "limit not a number",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/admin/nope",
            String::new(),
            "unknown type",
            404,
            "unknown_actor_type",
        ),
        (
            "GET",
            "/account/k/deposit",
            String::new(),
            "GET on a handler",
            405,
            "method_not_allowed",
        ),
        (
            "PUT",
            "/account/k",
            String::new(),
            "PUT",
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/account/k/deposit",
            format!(r#"{{"amount":1,"pad":"{}"}}"#, "x".repeat(2000)),
            "too large",
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/account/k/withdraw",
            r#"{"amount":1}"#.into(),
            "handler error",
            422,
            "Insufficient",
        ),
        (
            "POST",
            "/account/k/explode",
            String::new(),
            "panic",
            500,
            "handler_panicked",
        ),
    ];
    for (method, path, body, why, want_status, want_error) in &cases {
        let response = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, headers, json) = decode(response).await;
        assert_eq!(status, *want_status, "{why}: {method} {path}: {json}");
        assert_eq!(error_name(&json), *want_error, "{why}: {json}");
        match *want_status {
            404 if want_error.starts_with("unknown") => {
                assert!(
                    !json["valid"].as_array().unwrap().is_empty(),
                    "{why}: {json}"
                );
            }
            405 => assert!(headers.contains_key("allow"), "{why}"),
            _ => {}
        }
    }
    // The message of a malformed body names the field.
    let (_, _, json) = s.post("/account/k/deposit", r#"{"amount":"x"}"#).await;
    assert!(
        json["message"].as_str().unwrap().contains("amount"),
        "{json}"
    );
    // An unknown handler lists the valid ones.
    let (_, _, json) = s.post("/account/k/nope", "{}").await;
    let valid = json["valid"].as_array().unwrap();
    assert!(valid.iter().any(|h| h == "deposit") && valid.iter().any(|h| h == "withdraw"));

    // A full mailbox (capacity 1): with the actor held busy, one of 8 concurrent calls is
    // queued and the other 7 are refused with 429.
    let latch = Latch::new();
    let held = {
        let (client, url, body) = (
            s.client.clone(),
            s.url("/account/busy/hold"),
            format!(r#"{{"latch":"{}"}}"#, latch.name()),
        );
        tokio::spawn(async move { client.post(url).body(body).send().await })
    };
    latch.wait_for_waiters(1).await;
    let rejected = s.rt.stats().rejected;
    let calls = (0..8).map(|_| s.post("/account/busy/nap", r#"{"ms":1}"#));
    let open_when_refused = async {
        wait_for(|| async { s.rt.stats().rejected >= rejected + 7 }).await;
        latch.open();
    };
    let (answers, ()) = tokio::join!(futures::future::join_all(calls), open_when_refused);
    assert_eq!(held.await.unwrap().unwrap().status().as_u16(), 200);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 429)
        .collect();
    assert_eq!(refused.len(), 7, "{answers:?}");
    for (_, headers, json) in refused {
        assert_eq!(error_name(json), "overloaded");
        assert_eq!(headers["retry-after"], "1");
    }
    assert!(answers.iter().any(|(status, _, _)| *status == 200));

    // A call past the call timeout: 504 (another runtime, with a short timeout).
    let quick = serve(HttpConfig::default(), |b| {
        b.call_timeout(Duration::from_millis(200))
    })
    .await;
    let (status, _, json) = quick.post("/account/slow/nap", r#"{"ms":3000}"#).await;
    assert_eq!((status, error_name(&json)), (504, "timeout"));
    quick.stop().await;

    // The runtime shutting down: 503, and the server itself stays up.
    s.rt.shutdown().await.unwrap();
    let (status, headers, json) = s.post("/account/k/deposit", r#"{"amount":1}"#).await;
    assert_eq!((status, error_name(&json)), (503, "shutting_down"));
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = s.get("/health").await;
    assert_eq!(status, 200);
    s.server.shutdown().await.unwrap();
}

/// The value of the first sample of `name` in OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("metric {name} missing from\n{text}"))
}

async fn wait_for<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
