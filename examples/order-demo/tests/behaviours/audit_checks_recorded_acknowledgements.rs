//! `order-demo audit` checks acknowledgements: those the demo recorded in the store's
//! `acks.log` and those in each `--acks FILE` a driver wrote. An acknowledged order that is
//! missing fails the audit (exit 1); with no acknowledgement recorded the audit says plainly
//! that none were checked, instead of counting zero of them under PASSED.

use std::path::Path;
use std::time::Duration;

use order_demo::{InventoryItem, Line, Order, Policy, Status, StoreOptions};

async fn audit(data: &Path, extra: &[&Path]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-demo"));
    cmd.args(["audit", "--drain-secs", "5", "--data"]).arg(data);
    for log in extra {
        cmd.arg("--acks").arg(log);
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_checks_the_acknowledgement_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let rt = order_demo::open(&data, StoreOptions::default())
        .await
        .unwrap();
    rt.get::<InventoryItem>("sku-1").seed(5).await.unwrap();
    let placed = rt
        .get::<Order>("o-1")
        .place(
            "c-1".into(),
            vec![Line {
                sku: "sku-1".into(),
                qty: 2,
            }],
            Policy::default(),
        )
        .await
        .unwrap();
    assert_eq!(placed, Status::Shipping);
    order_demo::settle(&rt, Duration::from_secs(10)).await;
    rt.shutdown().await.unwrap();

    // Nothing recorded: said plainly.
    let (code, text) = audit(&data, &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit:   PASSED"), "{text}");
    assert!(
        text.contains("acks:    none recorded, so none checked"),
        "{text}"
    );
    assert!(!text.contains("0 acknowledged orders"), "{text}");

    // The store's own log: checked.
    let own = order_demo::ack_log_path(&data);
    std::fs::write(&own, order_demo::format_ack("o-1", Status::Shipping)).unwrap();
    let (code, text) = audit(&data, &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("acks:    1 acknowledged orders checked"),
        "{text}"
    );

    // A driver's log naming an order the store does not have: the audit fails.
    let driver = dir.path().join("driver-acks.log");
    std::fs::write(
        &driver,
        format!(
            "{}{}",
            order_demo::format_ack("o-1", Status::Shipping),
            order_demo::format_ack("o-lost one", Status::Backordered)
        ),
    )
    .unwrap();
    let (code, text) = audit(&data, &[&driver]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("acks:    3 acknowledged orders checked"),
        "{text}"
    );
    assert!(
        text.contains("o-lost one: acknowledged as backordered, now missing"),
        "{text}"
    );

    // A log that is not one, or is missing: an error (exit 2), not a pass.
    std::fs::write(&driver, "hello\n").unwrap();
    let (code, text) = audit(&data, &[&driver]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("line 1"), "{text}");
    let (code, text) = audit(&data, &[&dir.path().join("nope.log")]).await;
    assert_eq!(code, Some(2), "{text}");
}
