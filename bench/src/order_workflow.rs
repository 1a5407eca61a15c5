//! `order-workflow`: placing orders of 3 lines (reserve each line on its item, then record
//! the order) with Gears actors, against the same flow on SQLite, one transaction per order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::durability::Mode;
use crate::measure::{TimeArgs, drive_async, drive_threads, interleave};
use crate::orders::{InventoryItem, Line, Order};
use crate::report::{Report, Target};
use crate::rng::Rng;
use crate::sqlite_orders;
use crate::stats::GearsStats;

/// Stock of every item: never runs out during a run.
const STOCK: u32 = 1_000_000_000;

/// Flags of `order-workflow`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct OrderWorkflowArgs {
    /// Concurrent callers placing orders on Gears.
    #[arg(long, default_value_t = 64)]
    pub(crate) callers: usize,
    /// Threads placing orders on SQLite, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) sqlite_threads: usize,
    /// Items (SKUs) that orders pick their lines from at random.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) skus: u64,
    /// Lines per order (distinct items).
    #[arg(long, default_value_t = 3)]
    pub(crate) lines: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl OrderWorkflowArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        OrderWorkflowArgs {
            callers: 8,
            sqlite_threads: 1,
            skus: 50,
            lines: 3,
            time: TimeArgs::tiny(),
        }
    }
}

fn sku(i: u64) -> String {
    format!("sku-{i}")
}

/// The lines of order number `n`: distinct items, one of each.
fn order_lines(n: u64, skus: u64, lines: usize) -> Vec<(String, u32)> {
    Rng::new(n)
        .sample_distinct(skus, lines)
        .into_iter()
        .map(|i| (sku(i), 1))
        .collect()
}

/// Runs `order-workflow`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &OrderWorkflowArgs) -> BenchResult<Report> {
    let mut report = Report::new("order-workflow", mode, serde_json::to_value(args)?);
    let (skus, lines, callers) = (args.skus.max(1), args.lines.max(1), args.callers);
    if lines as u64 > skus {
        return Err(format!("{lines} distinct lines per order need at least {lines} SKUs").into());
    }

    let gears_dir = tempfile::tempdir()?;
    let rt = tokio.block_on(async {
        let rt = gears::Runtime::builder()
            .path(gears_dir.path())
            .durability(mode.gears())
            .register::<InventoryItem>()
            .register::<Order>()
            .open()
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..skus {
            let rt = rt.clone();
            tasks.spawn(async move { rt.get::<InventoryItem>(sku(i)).restock(STOCK).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| format!("a restock task failed: {e}"))??;
        }
        BenchResult::Ok(rt)
    })?;

    let sqlite_dir = tempfile::tempdir()?;
    let db = sqlite_dir.path().join("orders.db");
    let all_skus: Vec<String> = (0..skus).map(sku).collect();
    sqlite_orders::create(&db, mode, &all_skus, STOCK)?;
    let conns = (0..args.sqlite_threads.max(1))
        .map(|_| sqlite_orders::connect(&db, mode).map(Mutex::new))
        .collect::<BenchResult<Vec<_>>>()?;

    let gears_orders = Arc::new(AtomicU64::new(0));
    let sqlite_orders = AtomicU64::new(0);
    let mut marks = Vec::new();
    let samples = interleave(
        &args.time,
        &mut [
            &mut |window| {
                eprintln!("[order-workflow] gears: {callers} callers");
                let (rt_op, next) = (rt.clone(), gears_orders.clone());
                let (sample, from, to) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |_, _| {
                        let rt = rt_op.clone();
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let lines = order_lines(n, skus, lines)
                                .into_iter()
                                .map(|(sku, qty)| Line { sku, qty })
                                .collect();
                            rt.get::<Order>(format!("o-{n}")).place(lines).await?;
                            Ok(())
                        }
                    },
                    || rt.stats(),
                ))?;
                marks.push((from, to));
                Ok(sample)
            },
            &mut |window| {
                eprintln!("[order-workflow] sqlite: {} threads", conns.len());
                drive_threads(conns.len(), window, |thread, _| {
                    let n = sqlite_orders.fetch_add(1, Ordering::Relaxed);
                    let mut conn = conns[thread].lock();
                    let placed = sqlite_orders::place(
                        &mut conn,
                        &format!("o-{n}"),
                        &order_lines(n, skus, lines),
                    )?;
                    if !placed {
                        return Err(format!("SQLite order o-{n} found an item out of stock").into());
                    }
                    Ok(1)
                })
            },
        ],
    )?;
    tokio.block_on(rt.shutdown())?;

    report.gears_stats = Some(GearsStats::over(&marks, samples[0].elapsed));
    let gears = report.row("gears orders", &samples[0]);
    let sqlite = report.row(
        format!(
            "sqlite orders (WAL, synchronous={})",
            mode.sqlite_synchronous()
        ),
        &samples[1],
    );
    let ratio = report.compare(&gears, &sqlite);
    report.target(Target::at_least("throughput / sqlite", ratio, 10.0, "x"));
    report.note(format!(
        "a Gears order is {} turns ({lines} item reservations + the order) and as many writes",
        lines + 1
    ));
    Ok(report)
}
