//! A `#[handler(commit_errors)]` handler's `Err` is committed like an `Ok`: the state it
//! changed and the message it sent survive (a restart too) and the caller gets the error, in
//! Rust as `CallError::Handler` and over HTTP as 422; a plain handler's `Err` still rolls
//! back.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use gears::prelude::*;
use gears::testing::TestRuntime;

/// Why a [`Vault`] refused to open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrongPin {
    /// Failed attempts so far, committed with the error.
    pub attempts: u32,
}

/// Counts failed attempts, which must be recorded even though the call fails.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "vault")]
pub struct Vault {
    attempts: u32,
    uncommitted: u32,
}

#[handlers]
impl Vault {
    /// Records a failed attempt and tells the alarm, then answers the error.
    #[handler(commit_errors)]
    pub async fn open(&mut self, ctx: &Context, pin: u32) -> Result<String, WrongPin> {
        if pin == 1234 {
            return Ok("open".into());
        }
        self.attempts += 1;
        ctx.send::<Alarm>("a").ring(self.attempts);
        Err(WrongPin {
            attempts: self.attempts,
        })
    }

    /// The same, without `commit_errors`: its error rolls everything back.
    pub async fn open_plain(&mut self, ctx: &Context, pin: u32) -> Result<String, WrongPin> {
        if pin == 1234 {
            return Ok("open".into());
        }
        self.uncommitted += 1;
        ctx.send::<Alarm>("a").ring(100);
        Err(WrongPin {
            attempts: self.uncommitted,
        })
    }

    /// Failed attempts committed, and the plain handler's (always 0).
    pub async fn counts(&self) -> (u32, u32) {
        (self.attempts, self.uncommitted)
    }
}

/// Receives the vault's sends.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "alarm")]
pub struct Alarm {
    rings: Vec<u32>,
}

#[handlers]
impl Alarm {
    /// Keeps a ring.
    pub async fn ring(&mut self, attempts: u32) {
        self.rings.push(attempts);
    }

    /// The rings so far.
    pub async fn rings(&self) -> Vec<u32> {
        self.rings.clone()
    }
}

async fn rings_become(rt: &Runtime, want: &[u32]) {
    for _ in 0..400 {
        if rt.get::<Alarm>("a").rings().await.unwrap() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the alarm rang {:?}, expected {want:?}",
        rt.get::<Alarm>("a").rings().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_error_keeps_its_state_and_sends_and_still_answers_the_error() {
    let mut t = TestRuntime::new(|b| b.register::<Vault>().register::<Alarm>())
        .await
        .unwrap();
    let vault = t.runtime().get::<Vault>("v");
    for attempts in 1..=2 {
        match vault.open(1).await {
            Err(CallError::Handler(e)) => assert_eq!(e, WrongPin { attempts }),
            other => panic!("expected the handler's error, got {other:?}"),
        }
    }
    assert_eq!(
        vault.counts().await.unwrap(),
        (2, 0),
        "both errors committed"
    );
    rings_become(t.runtime(), &[1, 2]).await;

    // A plain handler's error rolls back its state and its send.
    match vault.open_plain(1).await {
        Err(CallError::Handler(e)) => assert_eq!(e, WrongPin { attempts: 1 }),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert_eq!(vault.counts().await.unwrap(), (2, 0), "rolled back");
    assert_eq!(vault.open(1234).await.unwrap(), "open");

    // Durable: after a restart the attempts are there and the alarm rang twice, no more.
    t.restart().await.unwrap();
    let rt = t.runtime();
    assert_eq!(rt.get::<Vault>("v").counts().await.unwrap(), (2, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rt.get::<Alarm>("a").rings().await.unwrap(), [1, 2]);
    assert_eq!(rt.stats().outbox_backlog, 0);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_committed_error_is_a_422_and_the_write_stays() {
    let served = support::serve(HttpConfig::default(), |b| {
        b.register::<Vault>().register::<Alarm>()
    })
    .await;
    let (status, _, body) = served.post("/vault/v/open", r#"{"pin": 7}"#).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(support::error_name(&body), "WrongPin", "{body}");
    assert_eq!(body["detail"]["attempts"], 1, "{body}");
    let (status, _, body) = served.post("/vault/v/open_plain", r#"{"pin": 7}"#).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        served.rt.get::<Vault>("v").counts().await.unwrap(),
        (1, 0),
        "the commit_errors handler's write stays, the plain one's is rolled back"
    );
    rings_become(&served.rt, &[1]).await;
    served.stop().await;
}
