//! With the `http` feature on, an actor whose handlers return values (or errors) that are not
//! `Serialize` compiles; over HTTP such a handler answers `501 not_exposed` without running
//! (nothing written, with or without an idempotency key), its `/send` route still queues it,
//! and it works from Rust, while the actor's serializable handlers answer as usual.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use gears::prelude::*;
use support::{error_name, serve};

/// Not `Serialize`: a value for Rust callers only.
#[derive(Debug, PartialEq)]
pub struct Receipt {
    /// The till's total after the ring.
    pub total: u64,
}

/// Not `Serialize` either: an error for Rust callers only.
#[derive(Debug, PartialEq)]
pub struct Jammed;

/// A till whose receipts and jams cannot travel as JSON.
#[derive(Actor, Default, Debug, Serialize, Deserialize)]
#[actor(name = "till")]
pub struct Till {
    total: u64,
    rings: u64,
}

#[handlers]
impl Till {
    /// Adds `amount`; its result is not `Serialize`.
    pub async fn ring_up(&mut self, amount: u64) -> Receipt {
        self.total += amount;
        self.rings += 1;
        Receipt { total: self.total }
    }

    /// Takes `amount` back; its value is, its error is not `Serialize`.
    pub async fn void(&mut self, amount: u64) -> Result<u64, Jammed> {
        self.rings += 1;
        self.total = self.total.checked_sub(amount).ok_or(Jammed)?;
        Ok(self.total)
    }

    /// Adds `amount` and returns the total: an ordinary, serializable handler.
    pub async fn add(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }

    /// The total.
    pub async fn total(&self) -> u64 {
        self.total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserializable_results_are_refused_over_http_before_running() {
    let s = serve(HttpConfig::default(), |b| b.register::<Till>()).await;
    let rings = async || s.rt.read::<Till, _>("t", |t| t.rings).await.unwrap();

    // The handlers whose value or error is not `Serialize`: 501, and they did not run.
    for (path, body) in [
        ("/till/t/ring_up", r#"{"amount": 5}"#),
        ("/till/t/void", r#"{"amount": 1}"#),
    ] {
        let (status, _, reply) = s.post(path, body).await;
        assert_eq!(status, 501, "{path}: {reply}");
        assert_eq!(error_name(&reply), "not_exposed", "{path}: {reply}");
        let handler = path.rsplit('/').next().unwrap();
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(handler), "{message}");
        assert!(message.contains("Serialize"), "{message}");
    }
    let response = s
        .client
        .post(s.url("/till/t/ring_up"))
        .header("idempotency-key", "ring-1")
        .body(r#"{"amount": 5}"#)
        .send()
        .await
        .unwrap();
    let (status, _, reply) = support::decode(response).await;
    assert_eq!(status, 501, "{reply}");
    assert_eq!(error_name(&reply), "not_exposed");
    assert_eq!(rings().await, 0, "a refused handler never ran");

    // They exist: listed among the valid handlers of an unknown one.
    let (status, _, reply) = s.post("/till/t/nope", "").await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(
        reply["valid"],
        serde_json::json!(["ring_up", "void", "add", "total"])
    );

    // The serializable handlers and the state answer as usual.
    let (status, _, reply) = s.post("/till/t/add", r#"{"amount": 3}"#).await;
    assert_eq!((status, reply), (200, serde_json::json!(3)));
    let (status, _, reply) = s.get("/till/t").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["total"], 3, "{reply}");

    // From Rust every handler works, with its typed value and error.
    let till = s.rt.get::<Till>("t");
    assert_eq!(till.ring_up(4).await.unwrap(), Receipt { total: 7 });
    assert!(matches!(
        till.void(100).await,
        Err(CallError::Handler(Jammed))
    ));
    assert_eq!(till.void(2).await.unwrap(), 5);

    // A send needs no reply: queued over HTTP, it runs.
    let (status, _, reply) = s.post("/till/t/ring_up/send", r#"{"amount": 10}"#).await;
    assert_eq!(status, 202, "{reply}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while till.total().await.unwrap() != 15 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 30 s for the sent ring_up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.stop().await;
}
