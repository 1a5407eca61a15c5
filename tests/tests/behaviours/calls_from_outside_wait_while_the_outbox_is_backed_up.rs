//! Backpressure: while more than half of the outbox is taken (sends not yet processed),
//! a call from outside waits for the dispatcher to deliver before it runs (up to 100 ms, or
//! its timeout if shorter), instead of adding work until the outbox is full and turns that
//! send are refused. Calls made by turns never wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gears::Runtime;
use gears::prelude::*;

/// Whether the receiver may process its messages.
static OPEN: AtomicBool = AtomicBool::new(false);

/// Processes a message only once the gate is open (until then its turns fail and are
/// retried, so its sends stay in the outbox).
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Receiver {
    got: u32,
}

#[handlers]
impl Receiver {
    /// Counts a message; panics while the gate is closed (the send is retried).
    #[handler(internal)]
    pub async fn take(&mut self) {
        assert!(OPEN.load(Ordering::SeqCst), "gate closed");
        self.got += 1;
    }

    /// How many messages it took.
    pub async fn got(&self) -> u32 {
        self.got
    }
}

/// Sends to the receiver, and is called from outside.
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Sender {
    calls: u32,
}

#[handlers]
impl Sender {
    /// Sends one message to the receiver.
    pub async fn send(&mut self, ctx: &Context) {
        self.calls += 1;
        ctx.send::<Receiver>("r").take();
    }

    /// A call that sends nothing.
    pub async fn ping(&mut self) -> u32 {
        self.calls += 1;
        self.calls
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_call_waits_for_deliveries_while_the_outbox_is_over_half_full() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<Receiver>()
        .register::<Sender>()
        .outbox_capacity(4)
        .call_timeout(Duration::from_secs(30))
        .open()
        .await
        .unwrap();
    let sender = rt.get::<Sender>("s");
    // Half the outbox: calls still go through at once.
    for _ in 0..2 {
        sender.send().await.unwrap();
    }
    assert_eq!(rt.stats().outbox_backlog, 2);
    assert_eq!(sender.ping().await.unwrap(), 3);
    sender.send().await.unwrap();
    assert_eq!(rt.stats().outbox_backlog, 3);
    // Over half: the next call from outside waits for deliveries, up to 100 ms while
    // nothing is delivered, then runs.
    let started = std::time::Instant::now();
    assert_eq!(sender.ping().await.unwrap(), 5);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the call ran at once while the outbox was backed up"
    );
    // A call that waits for a delivery goes on as soon as the backlog is half or less.
    let waiting = tokio::spawn({
        let sender = sender.clone();
        async move {
            let started = std::time::Instant::now();
            sender.ping().await.map(|n| (n, started.elapsed()))
        }
    });
    OPEN.store(true, Ordering::SeqCst);
    let (pinged, _) = waiting.await.unwrap().unwrap();
    assert_eq!(pinged, 6);
    let receiver = rt.get::<Receiver>("r");
    let mut got = 0;
    for _ in 0..2000 {
        got = receiver.got().await.unwrap();
        if got == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, 3);
    rt.shutdown().await.unwrap();
}
