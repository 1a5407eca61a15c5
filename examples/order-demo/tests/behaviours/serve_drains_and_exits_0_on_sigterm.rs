//! `order-demo serve` stopped with SIGTERM (as containers and service managers stop it)
//! while clients place orders over HTTP and its simulation runs: it drains and exits 0
//! within a bound, and afterwards `order-demo audit` finds every order acknowledged over
//! HTTP before (or while) it stopped, from the log the driver wrote, and the simulation's.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use order_demo::Status;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
const CLIENTS: usize = 16;
/// Acknowledgements over HTTP before the signal.
const ACKS_BEFORE_SIGNAL: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let mut child = tokio::process::Command::new(DEMO)
        .args(["serve", "--addr", "127.0.0.1:0", "--rate", "50", "--fresh"])
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve prints its address");
            if let Some(url) = line.strip_prefix("live page: ") {
                break url.trim_end_matches('/').to_string();
            }
        }
    })
    .await
    .expect("serve started");

    // Clients placing orders until the server stops answering.
    let acked: Arc<Mutex<Vec<(String, Status)>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        tasks.spawn(async move {
            for n in 0u32.. {
                let id = format!("o-http-{c}-{n}");
                let order = serde_json::json!({
                    "customer": format!("c-{:05}", n % 50),
                    "lines": [{"sku": format!("sku-{:04}", n % 24), "qty": 1}],
                    "policy": {"hold_ms": 10_000, "wait_ms": 2_000},
                });
                let Ok(response) = client
                    .post(format!("{base}/order/{id}/place"))
                    .json(&order)
                    .send()
                    .await
                else {
                    return;
                };
                if response.status().as_u16() != 200 {
                    // Stopping (503) or refused: not acknowledged; try the next one.
                    if response.status().is_server_error() {
                        return;
                    }
                    continue;
                }
                let Ok(value) = response.json::<serde_json::Value>().await else {
                    return;
                };
                let status: Status = serde_json::from_value(value).expect("a status");
                acked.lock().unwrap().push((id, status));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < ACKS_BEFORE_SIGNAL {
        assert!(Instant::now() < deadline, "too few acknowledgements");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("serve exits within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    while tasks.join_next().await.is_some() {}

    // Every order acknowledged over HTTP is in the store, as far along as acknowledged.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKS_BEFORE_SIGNAL);
    let log = dir.path().join("http-acks.log");
    let mut file = std::fs::File::create(&log).unwrap();
    for (id, status) in &acked {
        file.write_all(order_demo::format_ack(id, *status).as_bytes())
            .unwrap();
    }
    drop(file);
    let audit = tokio::process::Command::new(DEMO)
        .args(["audit", "--data"])
        .arg(&data)
        .arg("--acks")
        .arg(&log)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{}\n{stdout}", audit.status);
    assert!(stdout.contains("audit:   PASSED"), "{stdout}");
    let checked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("acks:    "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count of checked acknowledgements: {stdout}"));
    assert!(
        checked >= acked.len(),
        "{checked} checked, {} acknowledged over HTTP",
        acked.len()
    );
}
