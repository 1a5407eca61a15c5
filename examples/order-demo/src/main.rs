//! `order-demo`: runs the simulated shop on an embedded store and audits it.
//!
//! - `order-demo [run] [--data DIR] [--fresh] [--orders N] ...`: seeds the items, places
//!   orders concurrently with a progress bar, waits for backorders to be decided, prints a
//!   report and the audit. Exits with status 1 if the audit fails.
//! - `order-demo audit [--data DIR]`: lets pending work of an existing store finish (for
//!   instance after a crash), then audits it. Exits with status 1 if the audit fails.
//!
//! - `order-demo serve [--addr 127.0.0.1:8080] [--data DIR] [--fresh] [--no-simulation] ...`:
//!   serves the demo's actors over HTTP (the Gears ingress) with a live page at `/`, while a
//!   simulation places orders (feature `http`, on by default). Runs until Ctrl-C.
//!
//! Errors (the store cannot be opened, a call fails) exit with status 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use order_demo::{
    Audit, CATALOG, Catalog, DemoError, Observer, Policy, RunReport, Status, StoreOptions, Workload,
};

/// The Gears order demo: inventory, orders and customers as durable virtual actors.
#[derive(Debug, Parser)]
#[command(name = "order-demo", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seed a store, place orders concurrently, report and audit (the default).
    Run(RunArgs),
    /// Let an existing store's pending work finish, then audit it.
    Audit(AuditArgs),
    /// Serve the actors over HTTP with a live page at `/`, while simulated customers order.
    #[cfg(feature = "http")]
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// fsync every commit batch: survives power loss.
    Sync,
    /// Write every commit batch to the OS: survives a crash of the process.
    Buffered,
}

impl From<DurabilityArg> for gears::Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Sync => gears::Durability::Sync,
            DurabilityArg::Buffered => gears::Durability::Buffered,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Store folder [default: gears-order-demo under the system temp dir].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Wipe the store first (otherwise a run adds to what is there).
    #[arg(long)]
    fresh: bool,
    /// Orders to place.
    #[arg(long, default_value_t = Workload::default().orders)]
    orders: u64,
    /// Items in the shop (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = Workload::default().skus)]
    skus: u32,
    /// Customers (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = Workload::default().customers)]
    customers: u32,
    /// Orders placed at once (at least 1).
    #[arg(
        long,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        default_value_t = Workload::default().concurrency
    )]
    concurrency: usize,
    /// Most lines per order (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = Workload::default().max_lines)]
    max_lines: u32,
    /// Most units per line (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = Workload::default().max_qty)]
    max_qty: u32,
    /// Units each item starts with.
    #[arg(long, default_value_t = Workload::default().initial_stock)]
    initial_stock: u32,
    /// One restock after every this many orders (0: none).
    #[arg(long, default_value_t = Workload::default().restock_every)]
    restock_every: u64,
    /// Units per restock.
    #[arg(long, default_value_t = Workload::default().restock_qty)]
    restock_qty: u32,
    /// Milliseconds an item holds stock for an order before asking whether it still needs it.
    #[arg(long, default_value_t = Policy::default().hold_ms)]
    hold_ms: u64,
    /// Milliseconds a backordered order waits for stock before it is cancelled.
    #[arg(long, default_value_t = Policy::default().wait_ms)]
    wait_ms: u64,
    /// Seed of the order generator.
    #[arg(long, default_value_t = Workload::default().seed)]
    seed: u64,
    /// Durability of acknowledged writes.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    /// Milliseconds an idle order stays in memory before it is passivated.
    #[arg(long, default_value_t = 2_000)]
    order_idle_ms: u64,
    /// Longest wait, in seconds, for backorders to ship or time out after the last order.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
    /// Print `ack <order> <status>` on stdout for every acknowledged order, and nothing
    /// else (for the crash test).
    #[arg(long, hide = true)]
    print_acks: bool,
}

#[derive(Debug, Clone, Args)]
struct AuditArgs {
    /// Store folder [default: gears-order-demo under the system temp dir].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Longest wait, in seconds, for pending work (backorders, expiring holds) to finish.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

#[cfg(feature = "http")]
#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default; anything else exposes every actor:
    /// set `--token`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Store folder [default: gears-order-demo under the system temp dir].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Wipe the store first.
    #[arg(long)]
    fresh: bool,
    /// Do not place simulated orders: only what arrives over HTTP.
    #[arg(long)]
    no_simulation: bool,
    /// Simulated orders per second (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 20)]
    rate: u32,
    /// Items in the simulated shop (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), default_value_t = 24)]
    skus: u32,
    /// Units each item starts with.
    #[arg(long, default_value_t = 60)]
    initial_stock: u32,
    /// Require `Authorization: Bearer <TOKEN>`: on every route but `/health` when `--addr`
    /// is not loopback, on the admin routes and `/metrics` when it is.
    #[arg(long)]
    token: Option<String>,
    /// Durability of acknowledged writes.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Audit(args)) => audit(args).await,
        Some(Command::Run(args)) => run(args).await,
        #[cfg(feature = "http")]
        Some(Command::Serve(args)) => {
            return match serve(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("order-demo: {e}");
                    ExitCode::from(2)
                }
            };
        }
        None => run(cli.run).await,
    };
    match outcome {
        Ok(audit) if audit.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("order-demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> Result<Audit, DemoError> {
    let dir = args.data.clone().unwrap_or_else(order_demo::default_dir);
    if args.fresh {
        order_demo::wipe(&dir)?;
    }
    let workload = Workload {
        orders: args.orders,
        skus: args.skus,
        customers: args.customers,
        concurrency: args.concurrency,
        max_lines: args.max_lines,
        max_qty: args.max_qty,
        initial_stock: args.initial_stock,
        restock_every: args.restock_every,
        restock_qty: args.restock_qty,
        policy: Policy {
            hold_ms: args.hold_ms,
            wait_ms: args.wait_ms,
        },
        seed: args.seed,
    };
    let options = StoreOptions {
        durability: args.durability.into(),
        order_idle: Duration::from_millis(args.order_idle_ms),
    };
    let rt = order_demo::open(&dir, options).await?;
    let result = run_on(&rt, &workload, &args).await;
    let shutdown = rt.shutdown().await;
    let (placement, drained, stats, audit) = result?;
    shutdown?;
    if !args.print_acks {
        let report = RunReport {
            dir: &dir,
            fresh: args.fresh,
            durability: options.durability,
            workload: &workload,
            placement: &placement,
            drained,
            stats,
            audit: &audit,
        };
        println!("{report}");
    }
    Ok(audit)
}

type RunResult = (
    order_demo::Placement,
    order_demo::Drained,
    gears::Stats,
    Audit,
);

async fn run_on(
    rt: &gears::Runtime,
    workload: &Workload,
    args: &RunArgs,
) -> Result<RunResult, DemoError> {
    order_demo::seed(rt, workload).await?;
    let observer = Arc::new(Progress::new(workload.orders, args.print_acks));
    let placement = order_demo::place_orders(rt, workload, observer.clone()).await?;
    observer
        .bar
        .set_message("waiting for backorders to ship or time out");
    let backordered = placement.ids_with(Status::Backordered);
    let skus: Vec<String> = (0..workload.skus).map(order_demo::sku_id).collect();
    let bound = Duration::from_secs(args.drain_secs);
    let drained = order_demo::drain(rt, backordered, &skus, bound).await?;
    observer.bar.finish_and_clear();
    let stats = rt.stats();
    let audit = order_demo::audit(rt, &placement.acked).await?;
    Ok((placement, drained, stats, audit))
}

/// Serves until Ctrl-C. No audit at the end: orders placed over HTTP with ids of the
/// caller's choosing are not in the catalog, which the audit walks.
#[cfg(feature = "http")]
async fn serve(args: ServeArgs) -> Result<(), DemoError> {
    use order_demo::serve::{ServeOptions, Simulation};

    let dir = args.data.clone().unwrap_or_else(order_demo::default_dir);
    if args.fresh {
        order_demo::wipe(&dir)?;
    }
    let options = StoreOptions {
        durability: args.durability.into(),
        ..StoreOptions::default()
    };
    let rt = order_demo::open(&dir, options).await?;
    let mut http = gears::http::HttpConfig::default().bind(args.addr);
    if let Some(token) = args.token {
        // Off loopback the token guards every route but `/health` (calls, state and events
        // too): `HttpConfig` picks `TokenScope::All` there when no scope is chosen.
        http = http.bearer_token(token);
        if !args.addr.ip().is_loopback() {
            http = http.token_scope(gears::http::TokenScope::All);
        }
    }
    let simulation = (!args.no_simulation).then(|| {
        let mut simulation = Simulation {
            rate: args.rate,
            ..Simulation::default()
        };
        simulation.workload.skus = args.skus;
        simulation.workload.initial_stock = args.initial_stock;
        simulation
    });
    let options = ServeOptions {
        http,
        simulation,
        ..ServeOptions::default()
    };
    let live = match order_demo::serve::start(&rt, options).await {
        Ok(live) => live,
        Err(e) => {
            let _ = rt.shutdown().await;
            return Err(e);
        }
    };
    println!("store {}", dir.display());
    println!("live page: http://{}/", live.local_addr());
    println!("Ctrl-C stops the server.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
    let stopped = live.stop().await;
    let shutdown = rt.shutdown().await;
    stopped?;
    shutdown?;
    Ok(())
}

async fn audit(args: AuditArgs) -> Result<Audit, DemoError> {
    let dir = args.data.unwrap_or_else(order_demo::default_dir);
    if !order_demo::is_store(&dir) {
        return Err(DemoError::Refused(format!(
            "no store at {}: run the demo first",
            dir.display()
        )));
    }
    let rt = order_demo::open(&dir, StoreOptions::default()).await?;
    let result = audit_on(&rt, Duration::from_secs(args.drain_secs)).await;
    let shutdown = rt.shutdown().await;
    let audit = result?;
    shutdown?;
    println!("store {}", dir.display());
    println!("{audit}");
    Ok(audit)
}

async fn audit_on(rt: &gears::Runtime, bound: Duration) -> Result<Audit, DemoError> {
    let contents = rt
        .get::<Catalog>(CATALOG)
        .contents()
        .await
        .map_err(|e| DemoError::call("reading the catalog", e))?;
    let drained = order_demo::drain(rt, contents.order_ids(), &contents.sku_ids(), bound).await?;
    if !drained.is_complete() {
        eprintln!(
            "order-demo: after {:.1} s, {} orders are still backordered and {} holds wait \
             to expire; auditing anyway",
            drained.waited.as_secs_f64(),
            drained.backordered,
            drained.holds
        );
    }
    order_demo::audit(rt, &[]).await
}

/// The progress bar, and the acknowledgements the crash test reads.
struct Progress {
    bar: ProgressBar,
    print_acks: bool,
}

impl Progress {
    fn new(orders: u64, print_acks: bool) -> Progress {
        let bar = ProgressBar::new(orders);
        if print_acks {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} orders \
             ({per_sec}) {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress { bar, print_acks }
    }
}

impl Observer for Progress {
    fn placed(&self, order: &str, status: Status) {
        self.bar.inc(1);
        if self.print_acks {
            let mut out = std::io::stdout().lock();
            // A closed stdout (the crash test stopped reading) must not stop the run.
            let _ = writeln!(out, "ack {order} {status}").and_then(|()| out.flush());
        }
    }

    fn failed(&self, order: &str, error: &str) {
        self.bar.inc(1);
        self.bar.println(format!("order {order} failed: {error}"));
    }
}
