//! A handler marked `#[handler(internal)]` is a step for other actors, sends and timers: it
//! runs when called from Rust, by a send or by a timer, but over HTTP it is answered like a
//! handler that does not exist (404, not listed among the valid ones), by call and by send.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use gears::prelude::*;
use support::{error_name, serve};

/// A wallet whose `credit` is public and whose `mint` only other actors may call.
#[derive(Actor, Default, Debug, Serialize, Deserialize)]
#[actor(name = "wallet")]
pub struct Wallet {
    balance: u64,
    minted: u64,
}

#[handlers]
impl Wallet {
    /// Public: adds `amount` by minting it through an internal step, sent to itself.
    pub async fn credit(&mut self, ctx: &Context, amount: u64) -> u64 {
        ctx.send::<Wallet>(ctx.key()).mint(amount);
        self.balance
    }

    /// Public: mints `amount` when a timer fires after `ms`.
    pub async fn credit_later(&mut self, ctx: &Context, amount: u64, ms: u64) {
        ctx.timer::<Self>("later", Timer::after(Duration::from_millis(ms)))
            .mint(amount);
    }

    /// Internal: creates money; never reachable from outside.
    #[handler(internal)]
    pub async fn mint(&mut self, amount: u64) -> u64 {
        self.balance += amount;
        self.minted += amount;
        self.balance
    }

    /// Public: the balance.
    pub async fn balance(&self) -> u64 {
        self.balance
    }
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_handlers_run_from_rust_sends_and_timers_but_not_over_http() {
    let s = serve(HttpConfig::default(), |b| b.register::<Wallet>()).await;

    // Over HTTP: a call and a send of the internal handler are 404, and it is not listed.
    let (status, _, body) = s.post("/wallet/w/mint", r#"{"amount": 1000000}"#).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_name(&body), "unknown_handler");
    let valid: Vec<&str> = body["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(valid, ["credit", "credit_later", "balance"], "{body}");
    let (status, _, body) = s.post("/wallet/w/mint/send", r#"{"amount": 5}"#).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_name(&body), "unknown_handler");
    // Nothing ran: the wallet was never written.
    assert_eq!(s.rt.read::<Wallet, _>("w", |w| w.minted).await.unwrap(), 0);

    // From Rust, by a send and by a timer it runs.
    let w = s.rt.get::<Wallet>("w");
    assert_eq!(w.mint(1).await.unwrap(), 1);
    let (status, _, body) = s.post("/wallet/w/credit", r#"{"amount": 10}"#).await;
    assert_eq!(status, 200, "{body}");
    until("the sent mint", async || w.balance().await.unwrap() == 11).await;
    let (status, _, body) = s
        .post("/wallet/w/credit_later", r#"{"amount": 100, "ms": 1}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    until("the timer's mint", async || {
        w.balance().await.unwrap() == 111
    })
    .await;
    assert_eq!(
        s.rt.read::<Wallet, _>("w", |w| w.minted).await.unwrap(),
        111
    );
    s.stop().await;
}
