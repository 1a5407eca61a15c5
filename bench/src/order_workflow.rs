//! `order-workflow`: placing orders of 3 lines on Gears actors against the same business
//! flow on SQLite, one transaction per order, in interleaved rounds of the same run.
//!
//! `--flow` chooses what an order is, on both sides:
//! - `demo` (the default): the order demo's own actors (`order_demo`). `Order::place` holds
//!   each line on its `InventoryItem` (a call; each hold arms an expiry timer), then, in the
//!   same turn, becomes `Shipping` and sends every item a `commit` and the customer a notice
//!   through the outbox. `place` returns before those messages are processed, so after each
//!   Gears window the bench waits for the outbox to drain and adds that time, and its CPU,
//!   to the window: throughput pays for every order's whole flow, and the SQLite window never
//!   shares the machine with Gears' leftovers. SQLite runs the same flow in one transaction
//!   ([`sqlite_orders::place_and_ship`]).
//! - `lean`: the bench's stand-ins (`orders.rs`) reserve each line and record the order,
//!   leaving nothing behind; SQLite reserves and records ([`sqlite_orders::place`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gears::Stats;
use order_demo::{Policy, Status, StoreOptions};
use parking_lot::Mutex;
use rusqlite::Connection;
use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::durability::Mode;
use crate::measure::{Contender, Sample, TimeArgs, Window, drive_async, drive_threads, interleave};
use crate::orders;
use crate::process;
use crate::report::{Report, Target};
use crate::rng::Rng;
use crate::sqlite_orders;
use crate::stats::GearsStats;

/// Stock of every item: never runs out during a run.
pub(crate) const STOCK: u32 = 1_000_000_000;

/// Longest wait for the outbox to drain after a window: far beyond what a window leaves
/// behind, so reaching it means the runtime is stuck, not slow.
const DRAIN_BOUND: Duration = Duration::from_secs(60);

/// What one order is, on Gears and on SQLite alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Flow {
    /// The order demo's actors: hold the lines, ship, commit every item and notify the
    /// customer through the outbox (drained and charged to Gears after each window).
    Demo,
    /// The bench's stand-in actors: reserve the lines and record the order.
    Lean,
}

/// Flags of `order-workflow`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct OrderWorkflowArgs {
    /// What an order is, on both sides: the order demo's actors, or lean stand-ins.
    #[arg(long, value_enum, default_value_t = Flow::Demo)]
    pub(crate) flow: Flow,
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
    /// Customers that orders pick at random (the demo flow sends each order's one a notice).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) customers: u32,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl OrderWorkflowArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        OrderWorkflowArgs {
            flow: Flow::Demo,
            callers: 8,
            sqlite_threads: 1,
            skus: 50,
            lines: 3,
            customers: 20,
            time: TimeArgs::tiny(),
        }
    }
}

/// The sizes every order is drawn from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) skus: u64,
    pub(crate) lines: usize,
    pub(crate) customers: u32,
}

pub(crate) fn sku(i: u64) -> String {
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

/// The customer of order number `n` (a draw independent of its lines).
fn order_customer(n: u64, customers: u32) -> String {
    let pick = Rng::new(!n).below(u64::from(customers.max(1)));
    // `below` returns less than `customers`, a u32.
    order_demo::customer_id(u32::try_from(pick).unwrap_or(0))
}

/// Runs `order-workflow`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &OrderWorkflowArgs) -> BenchResult<Report> {
    let mut report = Report::new("order-workflow", mode, serde_json::to_value(args)?);
    let flow = args.flow;
    let shape = Shape {
        skus: args.skus.max(1),
        lines: args.lines.max(1),
        customers: args.customers.max(1),
    };
    let (skus, lines, callers) = (shape.skus, shape.lines, args.callers);
    if lines as u64 > skus {
        return Err(format!("{lines} distinct lines per order need at least {lines} SKUs").into());
    }

    let gears_dir = tempfile::tempdir()?;
    let rt = tokio.block_on(open_gears(gears_dir.path(), mode, flow, skus))?;

    // SQLite as durable as Gears (`FULL` under `Sync`), and under `Sync` also with
    // `synchronous=NORMAL`: what a user gets by giving up power-loss safety.
    let all_skus: Vec<String> = (0..skus).map(sku).collect();
    let mut sqlite_modes = vec![mode];
    if mode == Mode::Sync {
        sqlite_modes.push(Mode::Buffered);
    }
    let sqlite_sides = sqlite_modes
        .into_iter()
        .map(|sqlite_mode| SqliteSide::open(sqlite_mode, flow, &all_skus, args.sqlite_threads))
        .collect::<BenchResult<Vec<_>>>()?;

    let gears_orders = Arc::new(AtomicU64::new(0));
    let gears_placed = Arc::new(AtomicU64::new(0));
    let mut marks = Vec::new();
    let mut per_order = PerOrder::default();
    let upkeep_before = rt.stats().timer_index_writes;
    let mut drain_time = Duration::ZERO;
    let mut gears_side = |window| {
        eprintln!("[order-workflow] gears ({flow:?} flow): {callers} callers");
        // Nothing is in flight here (seeding is done, and every earlier window was
        // drained), so the counters up to the drain belong to this window's orders.
        let (quiet, placed_before) = (rt.stats(), gears_placed.load(Ordering::Relaxed));
        let (rt_op, next, placed) = (rt.clone(), gears_orders.clone(), gears_placed.clone());
        let (mut sample, (from, _, _), (mut to, ended, cpu_ended)) =
            tokio.block_on(drive_async(
                callers,
                window,
                move |_, _| {
                    let (rt, placed) = (rt_op.clone(), placed.clone());
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        place_on_gears(&rt, flow, n, shape).await?;
                        placed.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                },
                || (rt.stats(), Instant::now(), process::cpu_time()),
            ))?;
        if flow == Flow::Demo {
            tokio.block_on(drain_outbox(&rt))?;
            let drained = ended.elapsed();
            sample.charge(drained, process::cpu_time().saturating_sub(cpu_ended));
            drain_time += drained;
            to = rt.stats();
            let placed = gears_placed.load(Ordering::Relaxed) - placed_before;
            per_order.add(&quiet, &to, placed);
        }
        marks.push((from, to));
        Ok(sample)
    };
    let mut sqlite_runs: Vec<_> = sqlite_sides
        .iter()
        .map(|side| move |window| side.sample(window, flow, shape))
        .collect();
    let mut contenders: Vec<Contender<'_>> = vec![&mut gears_side];
    contenders.extend(sqlite_runs.iter_mut().map(|run| run as Contender<'_>));
    let samples = interleave(&args.time, &mut contenders)?;
    drop(contenders);
    per_order.upkeep = rt.stats().timer_index_writes - upkeep_before;
    tokio.block_on(rt.shutdown())?;

    report.gears_stats = Some(GearsStats::over(&marks, samples[0].elapsed));
    let gears_name = match flow {
        Flow::Demo => "gears orders (demo actors, outbox drained)",
        Flow::Lean => "gears orders",
    };
    let gears = report.row(gears_name, &samples[0]);
    for (side, sample) in sqlite_sides.iter().zip(&samples[1..]) {
        let synchronous = side.mode.sqlite_synchronous();
        let sqlite = report.row(
            format!("sqlite orders (WAL, synchronous={synchronous})"),
            sample,
        );
        let ratio = report.compare(&gears, &sqlite);
        // Issue 16: at least 4x SQLite as durable as Gears, and at least SQLite without
        // power-loss safety.
        let goal = if side.mode == mode { 4.0 } else { 1.0 };
        report.target(Target::at_least(
            &format!("throughput / sqlite synchronous={synchronous}"),
            ratio,
            goal,
            "x",
        ));
    }
    match flow {
        Flow::Demo => {
            report.figure(
                "gears: outbox drain after its windows (counted in its seconds)",
                drain_time.as_secs_f64() * 1e3,
                "ms",
            );
            report.note(format!(
                "a demo order is `Order::place` ({lines} calls that hold a line each and arm \
                 its expiry timer; the order ships and sends {lines} item commits and 1 \
                 customer notice) plus those {} outbox messages, processed before the Gears \
                 window ends; on SQLite, one transaction: {lines} conditional stock updates, \
                 the order, its {lines} lines and the notice",
                lines + 1
            ));
            report.note(per_order.summary());
        }
        Flow::Lean => report.note(format!(
            "a lean order is {} turns ({lines} item reservations + the order) and as many \
             writes on Gears; on SQLite, {lines} conditional stock updates and the order in \
             one transaction",
            lines + 1
        )),
    }
    Ok(report)
}

/// One SQLite database of the flow, and the connections that place orders on it.
struct SqliteSide {
    mode: Mode,
    conns: Vec<Mutex<Connection>>,
    next: AtomicU64,
    skus: u64,
    // Last: removed after the connections are closed.
    _dir: tempfile::TempDir,
}

impl SqliteSide {
    fn open(mode: Mode, flow: Flow, skus: &[String], threads: usize) -> BenchResult<SqliteSide> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("orders.db");
        sqlite_orders::create(&db, mode, flow, skus, STOCK)?;
        let conns = (0..threads.max(1))
            .map(|_| sqlite_orders::connect(&db, mode).map(Mutex::new))
            .collect::<BenchResult<Vec<_>>>()?;
        Ok(SqliteSide {
            mode,
            conns,
            next: AtomicU64::new(0),
            skus: skus.len() as u64,
            _dir: dir,
        })
    }

    /// Places orders on every connection, each on its own thread, for one window.
    fn sample(&self, window: Window, flow: Flow, shape: Shape) -> BenchResult<Sample> {
        eprintln!(
            "[order-workflow] sqlite ({flow:?} flow, synchronous={}): {} threads",
            self.mode.sqlite_synchronous(),
            self.conns.len()
        );
        drive_threads(self.conns.len(), window, |thread, _| {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let mut conn = self.conns[thread].lock();
            let (id, lines) = (format!("o-{n}"), order_lines(n, self.skus, shape.lines));
            let placed = match flow {
                Flow::Demo => sqlite_orders::place_and_ship(
                    &mut conn,
                    &id,
                    &order_customer(n, shape.customers),
                    &lines,
                )?,
                Flow::Lean => sqlite_orders::place(&mut conn, &id, &lines)?,
            };
            if !placed {
                return Err(format!("SQLite order {id} found an item out of stock").into());
            }
            Ok(1)
        })
    }
}

/// Opens a runtime with `flow`'s actors registered and every item stocked with [`STOCK`].
async fn open_gears(dir: &Path, mode: Mode, flow: Flow, skus: u64) -> BenchResult<gears::Runtime> {
    let rt = match flow {
        Flow::Demo => {
            let options = StoreOptions {
                durability: mode.gears(),
                ..StoreOptions::default()
            };
            order_demo::open(dir, options).await?
        }
        Flow::Lean => {
            gears::Runtime::builder()
                .path(dir)
                .durability(mode.gears())
                .register::<orders::InventoryItem>()
                .register::<orders::Order>()
                .open()
                .await?
        }
    };
    stock_items(&rt, flow, skus).await?;
    Ok(rt)
}

/// Stocks items `0..skus` of `flow` with [`STOCK`] each.
pub(crate) async fn stock_items(rt: &gears::Runtime, flow: Flow, skus: u64) -> BenchResult<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..skus {
        let rt = rt.clone();
        tasks.spawn(async move {
            match flow {
                Flow::Demo => {
                    rt.get::<order_demo::InventoryItem>(sku(i))
                        .seed(STOCK)
                        .await?;
                }
                Flow::Lean => {
                    rt.get::<orders::InventoryItem>(sku(i))
                        .restock(STOCK)
                        .await?;
                }
            }
            BenchResult::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| format!("a stocking task failed: {e}"))??;
    }
    Ok(())
}

/// Places order number `n` on Gears. In the demo flow, an order that does not ship is an
/// error: stock never runs out, so it means the flow broke.
pub(crate) async fn place_on_gears(
    rt: &gears::Runtime,
    flow: Flow,
    n: u64,
    shape: Shape,
) -> BenchResult<()> {
    let id = format!("o-{n}");
    let lines = order_lines(n, shape.skus, shape.lines);
    match flow {
        Flow::Demo => {
            let lines = lines
                .into_iter()
                .map(|(sku, qty)| order_demo::Line { sku, qty })
                .collect();
            let status = rt
                .get::<order_demo::Order>(&id)
                .place(order_customer(n, shape.customers), lines, Policy::default())
                .await?;
            if status != Status::Shipping {
                return Err(format!("order {id} is {status}, not shipping").into());
            }
        }
        Flow::Lean => {
            let lines = lines
                .into_iter()
                .map(|(sku, qty)| orders::Line { sku, qty })
                .collect();
            rt.get::<orders::Order>(id).place(lines).await?;
        }
    }
    Ok(())
}

/// Waits until every outbox message is processed, polling every millisecond, at most
/// [`DRAIN_BOUND`].
pub(crate) async fn drain_outbox(rt: &gears::Runtime) -> BenchResult<()> {
    let deadline = Instant::now() + DRAIN_BOUND;
    loop {
        let backlog = rt.stats().outbox_backlog;
        if backlog == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the outbox still holds {backlog} messages {DRAIN_BOUND:?} after a window"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The runtime's turns and writes per order placed, over spans that start and end with
/// nothing in flight, so they hold every turn and write of their orders and no other; plus
/// the upkeep of the timer index over the whole run (an item's entry is removed when it
/// comes due, a hold time after its first hold, whatever runs then).
#[derive(Debug, Default)]
struct PerOrder {
    orders: u64,
    turns: u64,
    /// Writes of turns.
    writes: u64,
    /// Writes that removed timer index entries, from the first window to the end of the
    /// last (the entries written in the last hold time of the run are not removed yet).
    upkeep: u64,
}

impl PerOrder {
    /// Adds a span: the counters at its quiet start and end, and the orders placed in it.
    fn add(&mut self, from: &Stats, to: &Stats, orders: u64) {
        // Upkeep is counted before coalescing (rarely any): all of it is taken off here
        // and reported over the run.
        let turn_writes = |s: &Stats| s.writes.saturating_sub(s.timer_index_writes);
        self.orders += orders;
        self.turns += to.turns.saturating_sub(from.turns);
        self.writes += turn_writes(to).saturating_sub(turn_writes(from));
    }

    /// The note that reports them.
    fn summary(&self) -> String {
        let per = |n: u64| n as f64 / self.orders.max(1) as f64;
        format!(
            "demo flow: {:.1} turns and {:.1} writes per order observed ({:.1} by turns, \
             {:.2} removing timer index entries over the run; {} orders, warm-ups and drains \
             included)",
            per(self.turns),
            per(self.writes + self.upkeep),
            per(self.writes),
            per(self.upkeep),
            self.orders
        )
    }
}

/// Flags of `order-count`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct OrderCountArgs {
    /// Orders to place, in all.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) orders: u64,
    /// Concurrent callers placing them.
    #[arg(long, default_value_t = 64)]
    pub(crate) callers: usize,
    /// What an order is: the order demo's actors, or lean stand-ins.
    #[arg(long, value_enum, default_value_t = Flow::Demo)]
    pub(crate) flow: Flow,
    /// Items (SKUs) that orders pick their lines from at random.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) skus: u64,
}

impl OrderCountArgs {
    /// The smoke run's: a few orders.
    pub(crate) fn tiny() -> Self {
        OrderCountArgs {
            orders: 50,
            callers: 8,
            flow: Flow::Demo,
            skus: 50,
        }
    }
}

/// Runs `order-count`: exactly `--orders` orders on Gears alone (no baseline, no clock
/// deciding how many), the outbox drained, then the runtime's counters. What it is for:
/// counting instructions, which a change of a few per cent moves visibly where timings do
/// not. Under `valgrind --tool=callgrind`, the difference between two counts (say 1,000 and
/// 3,000 orders) divided by the difference in orders is the instructions of one order, with
/// the opening, the stocking and the shutdown cancelled out. The runtime's periodic work
/// runs by the clock, so counts repeat within ≈ 1 % only on a quiet machine (BENCHMARKS.md,
/// "How it measures").
pub(crate) fn count(tokio: &Tokio, mode: Mode, args: &OrderCountArgs) -> BenchResult<Report> {
    let mut report = Report::new("order-count", mode, serde_json::to_value(args)?);
    let shape = Shape {
        skus: args.skus.max(3),
        lines: 3,
        customers: 1_000,
    };
    let (flow, total) = (args.flow, args.orders);
    let dir = tempfile::tempdir()?;
    let rt = tokio.block_on(open_gears(dir.path(), mode, flow, shape.skus))?;
    let before = rt.stats();
    let (cpu_from, started) = (process::cpu_time(), Instant::now());
    let next = Arc::new(AtomicU64::new(0));
    tokio.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.callers.max(1) {
            let (rt, next) = (rt.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return BenchResult::Ok(());
                    }
                    place_on_gears(&rt, flow, n, shape).await?;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| format!("a caller failed: {e}"))??;
        }
        drain_outbox(&rt).await
    })?;
    let (elapsed, cpu) = (
        started.elapsed(),
        process::cpu_time().saturating_sub(cpu_from),
    );
    let after = rt.stats();
    tokio.block_on(rt.shutdown())?;
    let per = |of: fn(&Stats) -> u64| (of(&after) - of(&before)) as f64 / total.max(1) as f64;
    report.figure("orders placed", total as f64, "");
    report.figure("seconds", elapsed.as_secs_f64(), "s");
    report.figure(
        "CPU per order",
        cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
        "us",
    );
    report.figure("turns per order", per(|s| s.turns), "");
    report.figure("writes per order", per(|s| s.writes), "");
    report.figure("commit batches per order", per(|s| s.commit_batches), "");
    Ok(report)
}
