//! A store whose catalog claims 4,294,967,295 items and customers and 10^12 orders (what one
//! request could write before the catalog's handlers were validated and made internal) still
//! opens, serves the live page and audits, in-process and as `order-demo audit`, with memory
//! bounded: nothing the demo does allocates by a count it read from the store.

use std::time::{Duration, Instant};

use gears::prelude::*;
use order_demo::serve::ServeOptions;
use order_demo::{CATALOG, Catalog, StoreOptions, Workload};

/// The catalog record's stored layout (postcard: the three counts in order), written by a
/// handler with no checks, as the demo's own handlers were before validation.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "catalog")]
pub struct UncheckedCatalog {
    skus: u32,
    customers: u32,
    orders: u64,
}

#[handlers]
impl UncheckedCatalog {
    /// Sets the counts as given.
    pub async fn overwrite(&mut self, skus: u32, customers: u32, orders: u64) {
        (self.skus, self.customers, self.orders) = (skus, customers, orders);
    }
}

/// Peak resident memory so far (`VmHWM`) of process `pid` (`self`: this one), in bytes;
/// `None` once it is gone.
fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
}

/// The most memory a process of the demo may use here: far above what it needs (tens of
/// MiB), far below one allocation per claimed key (tens of GiB).
const MEMORY_BOUND: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_catalog_opens_serves_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    // A real shop with a few orders first, so there is something to audit.
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let workload = Workload {
        orders: 40,
        skus: 4,
        customers: 5,
        concurrency: 4,
        ..Workload::default()
    };
    order_demo::seed(&rt, &workload).await.unwrap();
    let placement =
        order_demo::place_orders(&rt, &workload, std::sync::Arc::new(order_demo::Silent))
            .await
            .unwrap();
    assert_eq!(placement.acked.len(), 40);
    rt.shutdown().await.unwrap();

    // Poison the catalog through a handler that checks nothing.
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<UncheckedCatalog>()
        .open()
        .await
        .unwrap();
    rt.get::<UncheckedCatalog>(CATALOG)
        .overwrite(u32::MAX, u32::MAX, 1_000_000_000_000)
        .await
        .unwrap();
    rt.shutdown().await.unwrap();

    // The demo opens it and reads the counts as they are.
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let contents = rt.get::<Catalog>(CATALOG).contents().await.unwrap();
    assert_eq!(contents.skus, u32::MAX);
    assert_eq!(contents.orders, 1_000_000_000_000);

    // Serving: the sampler publishes snapshots, with a bounded number of SKUs.
    let live = order_demo::serve::start(&rt, ServeOptions::loopback())
        .await
        .unwrap();
    let url = format!("http://{}/demo/snapshot", live.local_addr());
    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        let snapshot: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if snapshot["seq"].as_u64().unwrap() >= 3 {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "no snapshots: {snapshot}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let skus = snapshot["skus"].as_array().unwrap();
    assert_eq!(skus.len(), order_demo::serve::MAX_LIVE_SKUS, "{snapshot}");
    assert_eq!(skus[0]["sku"], "sku-0000");
    // The orders placed before the server started are counted, from what is stored.
    assert_eq!(snapshot["orders"]["placed"], 40, "{snapshot}");
    live.stop().await.unwrap();

    // Auditing: the books of what is stored, paged through.
    let audit = order_demo::audit(&rt, &placement.acked).await.unwrap();
    assert!(audit.passed(), "{audit}");
    assert_eq!(audit.acked_checked, 40);
    assert_eq!(audit.orders.placed, 40, "{audit}");
    rt.shutdown().await.unwrap();
    let peak = peak_rss("self").expect("VmHWM in /proc/self/status");
    assert!(peak < MEMORY_BOUND, "peak RSS {} MiB", peak >> 20);

    // The binary too: `order-demo audit` drains and audits it, within the same bound.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_order-demo"))
        .args(["audit", "--drain-secs", "20", "--data"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut child_peak = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        // Read while it runs: the peak so far (it only grows).
        child_peak = child_peak.max(peak_rss(&pid).unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "order-demo audit did not finish");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status}\n{stdout}");
    assert!(stdout.contains("audit:   PASSED"), "{stdout}");
    assert!(
        child_peak < MEMORY_BOUND,
        "peak RSS {} MiB",
        child_peak >> 20
    );
}
