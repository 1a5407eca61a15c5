//! Schema-driven fuzzing of `order-demo serve` by schemathesis (PyPI), from the ingress' own
//! `GET /openapi.json`, while the demo's simulated customers order: every operation but the
//! event streams gets the document's examples, its coverage cases (each constraint met and
//! broken) and random cases. No answer is a 5xx, every answer has a documented status,
//! media type and schema, and input the document rules out is refused; afterwards the
//! server is healthy, places an order and exits 0 on SIGTERM.
//!
//! schemathesis is installed, pinned, into a venv under cargo's target dir at the first run
//! (needs `python3` and PyPI), or taken from `SCHEMATHESIS`. `GEARS_SCHEMATHESIS_EXAMPLES=N`
//! runs N random cases per operation instead of 20 (RELIABILITY.md has a longer run).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gears_tests::child::spawn_until_line;

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The `schemathesis` command: `SCHEMATHESIS`, or a venv made once under the target dir.
fn schemathesis() -> PathBuf {
    if let Some(given) = std::env::var_os("SCHEMATHESIS") {
        return given.into();
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let command = venv.join("bin/schemathesis");
    // Written last: a run killed while installing leaves no marker, and the next starts over.
    let installed = venv.join("gears-installed");
    if installed.exists() {
        return command;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let run = |program: &std::path::Path, args: &[&str]| {
        let status = Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    };
    run("python3".as_ref(), &["-m", "venv", venv.to_str().unwrap()]);
    run(
        &venv.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
        ],
    );
    std::fs::write(&installed, SCHEMATHESIS_VERSION).unwrap();
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_schema_violation() {
    let schemathesis = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut serve = tokio::process::Command::new(DEMO);
    serve
        .args(["serve", "--addr", "127.0.0.1:0", "--rate", "20", "--fresh"])
        .arg("--data")
        .arg(dir.path().join("store"));
    let serve = spawn_until_line(serve, "live page: ").await;
    let base = serve.rest.trim_end_matches('/').to_string();

    let examples = std::env::var("GEARS_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "20".into());
    let work = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(work.path())
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,negative_data_rejection",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &examples,
            // Event streams never end: a request would wait for its timeout.
            "--exclude-path-regex",
            "/events$",
            "--request-timeout",
            "30",
            // More than one worker trips a thread-safety bug of hypothesis 6.170's lambda
            // descriptions ("AST constructor recursion depth mismatch") in the coverage phase.
            "--workers",
            "1",
            "--generation-database",
            "none",
        ])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis finished within 15 minutes")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");

    // Still healthy: it answers, places an order, and stops cleanly.
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let order = serde_json::json!({
        "customer": "c-00001",
        "lines": [{"sku": "sku-0001", "qty": 1}],
        "policy": {"hold_ms": 10_000, "wait_ms": 2_000},
    });
    let placed = client
        .post(format!("{base}/order/o-after-fuzzing/place"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200, "{:?}", placed.text().await);
    let exit = serve.terminate(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit:?}");
}
