//! A turn the runtime refuses for what the handler asked (`CallError::Invalid`), here a
//! timer named after a request argument that no timer name can be, answers
//! `422 invalid_turn`, never a 5xx; the turn is rolled back and the actor keeps serving.

use crate::support;

use gears::http::HttpConfig;
use support::{Account, error_name, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_named_after_a_bad_argument_is_422() {
    let s = serve(HttpConfig::default(), |b| b).await;
    // Empty, and far past any timer-name limit (but within the body limit).
    for name in [String::new(), "n".repeat(10_000)] {
        let body = serde_json::json!({ "name": name, "ms": 60_000 }).to_string();
        let (status, _, json) = s.post("/account/k/schedule", &body).await;
        assert_eq!(status, 422, "{json}");
        assert_eq!(error_name(&json), "invalid_turn");
        assert!(
            json["message"].as_str().unwrap().contains("timer"),
            "the message says what was refused: {json}"
        );
    }
    let (status, _, json) = s.get("/admin/account/k/timers").await;
    assert_eq!((status, &json["timers"]), (200, &serde_json::json!([])));

    // The actor still serves, and a valid name is armed.
    let (status, _, _) = s
        .post("/account/k/schedule", r#"{"name":"soon","ms":60000}"#)
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.rt.get::<Account>("k").balance().await.unwrap(), 0);
    let (_, _, json) = s.get("/admin/account/k/timers").await;
    assert_eq!(json["timers"][0]["name"], "soon");
    s.stop().await;
}
