//! A turn that runs again (a send or a timer firing retried after a panic, an HTTP request
//! retried with its `Idempotency-Key`, also after a restart) makes each of its calls to other
//! actors once: the callee answers the repeat from the result it kept, and
//! the accounts, which keep no bookkeeping of applied steps, are debited and credited once.
//! A plain call's turn has nothing that identifies it, and its calls run again (the
//! documented boundary, and proof that the checks here can fail). Calls awaited together
//! (`tokio::join!`) are made once too: each takes its id at its first poll, in order.

use std::time::Duration;

use gears::Runtime;
use gears_tests::bank::{Account, Transfer, panic_after_calls, panics_left};
use gears_tests::open;

/// Waits until `Transfer(key)` is done (panics after 30 s).
async fn done(rt: &Runtime, key: &str) -> Vec<i64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (done, answers) = rt.get::<Transfer>(key).outcome().await.unwrap();
        if done {
            return answers;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Transfer({key}) is not done: {:?}",
            rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn account(rt: &Runtime, key: &str) -> Account {
    rt.get::<Account>(key).show().await.unwrap()
}

/// 30 moved from `a` (which had 100) to `b` by one debit and one credit, and the transfer's
/// `answers` are the first ones, whatever ran again.
async fn assert_moved_once(rt: &Runtime, answers: &[i64]) {
    assert_eq!(answers, [70, 30], "the repeats got the first answers");
    let (a, b) = (account(rt, "a").await, account(rt, "b").await);
    assert_eq!((a.balance, a.debits), (70, 1), "{a:?}");
    assert_eq!((b.balance, b.credits), (30, 1), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_a_panic_debits_and_credits_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Account>("a").credit(100).await.unwrap();
    panic_after_calls("t-send", 2);
    rt.send::<Transfer>("t-send")
        .run("a".into(), "b".into(), 30)
        .await
        .unwrap();
    let answers = done(&rt, "t-send").await;
    assert_eq!(panics_left("t-send"), 0, "the turn ran three times");
    assert_moved_once(&rt, &answers).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_awaited_together_are_made_once_when_their_turn_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Account>("a").credit(100).await.unwrap();
    panic_after_calls("t-join", 2);
    rt.send::<Transfer>("t-join")
        .run_together("a".into(), "b".into(), 30)
        .await
        .unwrap();
    let answers = done(&rt, "t-join").await;
    assert_eq!(panics_left("t-join"), 0, "the turn ran three times");
    assert_moved_once(&rt, &answers).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_firing_retried_after_a_panic_debits_and_credits_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Account>("a").credit(100).await.unwrap();
    panic_after_calls("t-timer", 2);
    rt.get::<Transfer>("t-timer")
        .run_later("a".into(), "c".into(), 40, 10)
        .await
        .unwrap();
    let answers = done(&rt, "t-timer").await;
    assert_eq!(panics_left("t-timer"), 0, "the firing ran three times");
    assert_eq!(answers, vec![60, 40]);
    let (a, c) = (account(&rt, "a").await, account(&rt, "c").await);
    assert_eq!((a.balance, a.debits), (60, 1), "{a:?}");
    assert_eq!((c.balance, c.credits), (40, 1), "{c:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_call_results_answer_a_turn_that_runs_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Account>("a").credit(100).await.unwrap();
    // Panics until the runtime is closed: the send stays in the outbox, its calls applied.
    panic_after_calls("t-restart", u32::MAX);
    rt.send::<Transfer>("t-restart")
        .run("a".into(), "d".into(), 25)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while account(&rt, "d").await.credits == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", rt.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rt.shutdown().await.unwrap();
    panic_after_calls("t-restart", 0);
    let rt = open(dir.path()).await;
    assert_eq!(done(&rt, "t-restart").await, vec![75, 25]);
    let (a, d) = (account(&rt, "a").await, account(&rt, "d").await);
    assert_eq!((a.balance, a.debits), (75, 1), "{a:?}");
    assert_eq!((d.balance, d.credits), (25, 1), "{d:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_call_retried_by_its_caller_runs_its_calls_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Account>("a").credit(100).await.unwrap();
    panic_after_calls("t-plain", 1);
    let transfer = rt.get::<Transfer>("t-plain");
    let first = transfer.run("a".into(), "e".into(), 10).await;
    assert!(first.is_err(), "the first attempt panics: {first:?}");
    transfer.run("a".into(), "e".into(), 10).await.unwrap();
    let (a, e) = (account(&rt, "a").await, account(&rt, "e").await);
    assert_eq!((a.balance, a.debits), (80, 2), "{a:?}");
    assert_eq!((e.balance, e.credits), (20, 2), "{e:?}");
    rt.shutdown().await.unwrap();
}

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_retried_with_its_idempotency_key_debits_and_credits_once() {
    let s = support::serve(gears::http::HttpConfig::default(), |b| {
        b.register::<Account>().register::<Transfer>()
    })
    .await;
    s.rt.get::<Account>("a").credit(100).await.unwrap();
    panic_after_calls("t-http", 1);
    let call = || {
        s.client
            .post(s.url("/transfer/t-http/run"))
            .header("Idempotency-Key", "transfer-1")
            .body(r#"{"from":"a","to":"f","amount":15}"#)
            .send()
    };
    let first = call().await.unwrap().status().as_u16();
    assert_eq!(first, 500, "the first attempt panics");
    assert_eq!(panics_left("t-http"), 0);
    let second = call().await.unwrap().status().as_u16();
    assert_eq!(second, 200);
    assert_eq!(done(&s.rt, "t-http").await, vec![85, 15]);
    let (a, f) = (account(&s.rt, "a").await, account(&s.rt, "f").await);
    assert_eq!((a.balance, a.debits), (85, 1), "{a:?}");
    assert_eq!((f.balance, f.credits), (15, 1), "{f:?}");
}
