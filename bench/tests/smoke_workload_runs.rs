//! The benchmarks must not rot: every workload runs at tiny sizes and completes operations
//! (`gears-bench smoke` fails if any row is empty). Part of `cargo test --workspace`, so CI
//! runs it with the binary the test build already made.

use std::process::Command;

#[test]
fn every_workload_runs_at_smoke_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_gears-bench"))
        .arg("smoke")
        .output()
        .expect("run gears-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gears-bench smoke failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for workload in [
        "many-keys",
        "hot-key",
        "hot-key-panics",
        "sends",
        "read-call",
        "cold-activation",
        "order-workflow",
        "memory",
    ] {
        assert!(
            stdout.contains(&format!("== {workload} ")),
            "{workload} did not report:\n{stdout}"
        );
    }
}
