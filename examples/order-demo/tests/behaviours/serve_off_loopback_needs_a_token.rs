//! Exposed, the demo is guarded: bound off loopback with a token, the live page, its
//! snapshot and its stream answer 401 without the token and 200 with it (as a bearer header,
//! or as `?access_token=` for a browser); `order-demo serve` off loopback without a token
//! refuses to start with a message saying what to pass, before it touches the store, unless
//! `--insecure` says so.

use std::process::Stdio;
use std::time::Duration;

use gears::http::HttpConfig;
use order_demo::StoreOptions;
use order_demo::serve::ServeOptions;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_token_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let live = order_demo::serve::start(
        &rt,
        ServeOptions {
            http: HttpConfig::default().bind(([0, 0, 0, 0], 0).into()),
            token: Some("s3cret".into()),
            simulation: None,
            tick: Duration::from_millis(50),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", live.local_addr().port());
    let client = reqwest::Client::new();
    for path in ["/", "/demo/snapshot", "/demo/live", "/inventory_item/sku-1"] {
        let bare = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(bare.status().as_u16(), 401, "{path} without the token");
        let body: serde_json::Value = bare.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{path}: {body}");
        let wrong = client
            .get(format!("{base}{path}"))
            .bearer_auth("s3cre")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        let header = client
            .get(format!("{base}{path}"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(header.status().as_u16(), 200, "{path} with the header");
    }
    for path in ["/", "/demo/snapshot", "/demo/live"] {
        let query = client
            .get(format!("{base}{path}?access_token=s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(query.status().as_u16(), 200, "{path} with the query");
    }
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_off_loopback_without_a_token_refuses_to_start_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let refused = tokio::process::Command::new(DEMO)
        .args(["serve", "--addr", "0.0.0.0:0", "--no-simulation", "--data"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--token") && stderr.contains("--insecure"),
        "the message says what to pass: {stderr}"
    );
    assert!(!data.exists(), "no store was made");

    // With --insecure it serves, and stops on SIGTERM with status 0.
    let mut child = tokio::process::Command::new(DEMO)
        .args([
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--no-simulation",
            "--insecure",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve prints its address");
            if let Some(url) = line.strip_prefix("live page: http://") {
                break url
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string();
            }
        }
    })
    .await
    .expect("serve started");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/demo/snapshot"))
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("serve exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}
