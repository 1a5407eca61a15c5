//! Counts that must be at least 1 (`--skus`, `--rate`, `--customers`, `--concurrency`,
//! `--max-lines`, `--max-qty`) are refused by the command line with an error naming the
//! flag, before the store is touched (so `--fresh` wipes nothing).

use std::process::Command;

fn refused(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let output = Command::new(env!("CARGO_BIN_EXE_order-demo"))
        .args(args)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let flag = args[args.len() - 2];
    assert!(
        stderr.contains(flag) && stderr.contains("0"),
        "{args:?}: the error names the flag: {stderr}"
    );
    assert!(!data.exists(), "{args:?}: no store was made");
}

#[test]
fn zero_counts_are_refused() {
    for args in [
        &["serve", "--skus", "0"][..],
        &["serve", "--rate", "0"],
        &["serve", "--fresh", "--no-simulation", "--skus", "0"],
        &["run", "--skus", "0"],
        &["run", "--customers", "0"],
        &["run", "--concurrency", "0"],
        &["run", "--max-lines", "0"],
        &["run", "--max-qty", "0"],
        &["--skus", "0"],
    ] {
        refused(args);
    }
}
