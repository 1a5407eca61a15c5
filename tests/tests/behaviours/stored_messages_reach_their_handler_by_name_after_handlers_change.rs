//! Sends and timers name their handler in the store: a store written by code with handlers
//! in one order is opened by code with them reordered, one added and one renamed (keeping its
//! name with `#[handler(name = ...)]`), and every pending send and timer reaches the handler
//! it was meant for. A stored message whose handler is gone, or whose arguments no longer
//! decode, is parked with an error naming its handler — never run by another handler.

#![allow(unreachable_pub, missing_docs)]

use std::time::Duration;

use gears::Runtime;

/// The code as it was when the messages were stored.
mod before {
    use std::time::Duration;

    use gears::prelude::*;

    #[derive(Actor, Default, Serialize, Deserialize)]
    #[actor(name = "mailbox")]
    pub struct Mailbox {
        pub log: Vec<String>,
    }

    #[handlers]
    impl Mailbox {
        pub async fn first(&mut self, n: u64) {
            self.log.push(format!("first {n}"));
        }

        pub async fn second(&mut self, n: u64) {
            self.log.push(format!("second {n}"));
        }

        pub async fn third(&mut self, text: String) {
            self.log.push(format!("third {text}"));
        }

        pub async fn retired(&mut self, n: u64) {
            self.log.push(format!("retired {n}"));
        }

        pub async fn reshaped(&mut self, text: String) {
            self.log.push(format!("reshaped {text}"));
        }

        /// Arms a timer calling `second(n)` after `ms`.
        pub async fn later(&mut self, ctx: &Context, n: u64, ms: u64) {
            ctx.timer::<Self>("later", Timer::after(Duration::from_millis(ms)))
                .second(n);
        }
    }
}

/// The code after a change: reordered, `first` renamed in Rust (its stored name kept), a
/// handler added, `retired` removed, `reshaped` taking another argument type. (postcard is
/// not self-describing: a change of arguments is noticed when the stored bytes do not fit
/// the new types, as here, not always. Add a handler rather than change one that has stored
/// messages pending.)
mod after {
    use gears::prelude::*;

    #[derive(Actor, Default, Serialize, Deserialize)]
    #[actor(name = "mailbox")]
    pub struct Mailbox {
        pub log: Vec<String>,
    }

    #[handlers]
    impl Mailbox {
        pub async fn added(&mut self, n: u64) {
            self.log.push(format!("added {n}"));
        }

        pub async fn reshaped(&mut self, n: u64) {
            self.log.push(format!("reshaped {n}"));
        }

        pub async fn third(&mut self, text: String) {
            self.log.push(format!("third {text}"));
        }

        pub async fn second(&mut self, n: u64) {
            self.log.push(format!("second {n}"));
        }

        #[handler(name = "first")]
        pub async fn renamed_first(&mut self, n: u64) {
            self.log.push(format!("first {n}"));
        }

        pub async fn log(&self) -> Vec<String> {
            self.log.clone()
        }
    }
}

async fn until(rt: &Runtime, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 20 s for {what}: {:?}",
            rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sends_and_timers_reach_the_handler_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<before::Mailbox>()
        .__hold_deliveries()
        .open()
        .await
        .unwrap();
    let send = || rt.send::<before::Mailbox>("m");
    send().first(1).await.unwrap();
    send().second(2).await.unwrap();
    send().third("x".into()).await.unwrap();
    send().retired(4).await.unwrap();
    send().reshaped("y".into()).await.unwrap();
    send().first(6).await.unwrap();
    // Due soon after the new code runs; fires there. (Not sooner: held deliveries do not
    // hold timers, and one due before this runtime shuts down would fire here.)
    rt.get::<before::Mailbox>("m")
        .later(7, 2_000)
        .await
        .unwrap();
    assert_eq!(rt.stats().outbox_backlog, 6);
    rt.shutdown().await.unwrap();

    let rt = Runtime::builder()
        .path(dir.path())
        .register::<after::Mailbox>()
        .open()
        .await
        .unwrap();
    let mailbox = rt.get::<after::Mailbox>("m");
    // Four sends and the timer are processed; two sends are parked.
    until(&rt, "the deliveries", || {
        let s = rt.stats();
        s.delivered == 4 && s.dead_letters == 2 && s.timers_fired == 1
    })
    .await;
    let mut log = mailbox.log().await.unwrap();
    // Sends from one sender arrive in order; the timer may fire before or after them.
    let timer = log
        .iter()
        .position(|l| l == "second 7")
        .expect("the timer fired");
    log.remove(timer);
    assert_eq!(log, ["first 1", "second 2", "third x", "first 6"]);
    rt.shutdown().await.unwrap();

    // The parked ones stayed in the outbox (nothing unprocessed is deleted): parked again.
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<after::Mailbox>()
        .open()
        .await
        .unwrap();
    until(&rt, "the parked messages", || rt.stats().dead_letters == 2).await;
    assert_eq!(rt.stats().delivered, 0);
    let log = rt.get::<after::Mailbox>("m").log().await.unwrap();
    assert_eq!(log.len(), 5, "{log:?}");
    rt.shutdown().await.unwrap();
}
