//! `Server::shutdown` answers the requests in flight before it returns; and a process that
//! waits on `gears::shutdown_signal()` stops that way on SIGTERM or SIGINT: the request
//! in flight is answered, its write is durable, and the process exits 0.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::serve;

const BOUND: Duration = Duration::from_secs(20);

/// Polls `probe` until it is true; panics after [`BOUND`].
async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !probe().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_requests_in_flight() {
    let s = serve(HttpConfig::default(), |b| b).await;
    let call = {
        let request = s
            .client
            .post(s.url("/account/slow/nap"))
            .body(r#"{"ms":1000}"#);
        tokio::spawn(async move { request.send().await })
    };
    // The call has reached its actor (activated for it) before the shutdown starts.
    until("the call is in flight", || async {
        s.rt.stats().live_activations >= 1
    })
    .await;
    tokio::time::timeout(BOUND, s.server.shutdown())
        .await
        .expect("shutdown ends")
        .unwrap();
    let response = call.await.unwrap().expect("the call in flight is answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "1000");
    s.rt.shutdown().await.unwrap();
}

#[cfg(unix)]
mod signals {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;

    async fn stop_with(signal: &str, name: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_child"))
            .arg("http_signal_child")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next_line = async || {
            tokio::time::timeout(BOUND, lines.next_line())
                .await
                .expect("the child prints within the bound")
                .unwrap()
        };
        let listening = next_line().await.expect("the child serves");
        let addr = listening
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{listening}"))
            .to_string();
        let client = reqwest::Client::builder().timeout(BOUND).build().unwrap();

        let call = {
            let request = client
                .post(format!("http://{addr}/counter/c/slow_add"))
                .body(r#"{"n":5,"ms":1000}"#);
            tokio::spawn(async move { request.send().await })
        };
        until("the call is in flight", || async {
            let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            text.lines().any(|line| {
                line.strip_prefix("gears_live_activations ")
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .is_some_and(|n| n >= 1.0)
            })
        })
        .await;

        gears_tests::child::signal(child.id().unwrap(), signal);

        let answer = call.await.unwrap();
        let said = [next_line().await, next_line().await];
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .expect("the child exits")
            .unwrap();
        assert_eq!(
            said,
            [Some(format!("signal {name}")), Some("stopped".to_string())],
            "{status:?}"
        );
        assert!(status.success(), "{status:?}");
        let response = answer.expect("the call in flight is answered");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().await.unwrap(), "5");

        // The acknowledged write is in the store.
        let rt = gears_tests::open(dir.path()).await;
        assert_eq!(rt.get::<gears_tests::Counter>("c").get().await.unwrap(), 5);
        rt.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_drains_and_exits_zero() {
        stop_with("-TERM", "SIGTERM").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigint_drains_and_exits_zero() {
        stop_with("-INT", "SIGINT").await;
    }
}
