//! `order-demo`: runs the simulated shop on an embedded store and audits it.
//!
//! - `order-demo [run] [--data DIR] [--fresh] [--orders N] ...`: seeds the items, places
//!   orders concurrently with a progress bar, waits for backorders to be decided, prints a
//!   report and the audit. Exits with status 1 if the audit fails.
//! - `order-demo audit [--data DIR] [--acks FILE]...`: lets pending work of an existing store
//!   finish (for instance after a crash), then audits it, with the acknowledgements recorded
//!   in the store's `acks.log` and in each `--acks FILE`. Exits with status 1 if the audit
//!   fails.
//!
//! - `order-demo serve [--addr 127.0.0.1:8080] [--data DIR] [--fresh] [--no-simulation] ...`:
//!   serves the demo's actors over HTTP (the Gears ingress) with a live page at `/`, while a
//!   simulation places orders (feature `http`, on by default). Off loopback it needs
//!   `--token` (or `--insecure`). Runs until SIGTERM or Ctrl-C, then drains and exits 0.
//!
//! Errors (the store cannot be opened, a call fails) exit with status 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use order_demo::{
    AckLog, Audit, DemoError, MAX_CONCURRENCY, MAX_CUSTOMERS, MAX_LINES, MAX_ORDERS_PER_RUN,
    MAX_POLICY_MS, MAX_QTY, MAX_RESTOCK, MAX_SKUS, Observer, Policy, RunReport, Status,
    StoreOptions, Workload,
};

/// mimalloc instead of glibc's malloc: after a storm of connections glibc kept the freed
/// buffers (95 MB resident for 5.6 MB in use after one storm of 2,000 connections, growing
/// with each storm), while mimalloc returns freed pages to the system (see RELIABILITY.md,
/// "Memory after connection storms"); it is also faster here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Orders to place (at most 10,000,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_ORDERS_PER_RUN), default_value_t = Workload::default().orders)]
    orders: u64,
    /// Items in the shop (1 to 100,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SKUS)), default_value_t = Workload::default().skus)]
    skus: u32,
    /// Customers (1 to 1,000,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CUSTOMERS)), default_value_t = Workload::default().customers)]
    customers: u32,
    /// Orders placed at once (1 to 4,096).
    #[arg(
        long,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CONCURRENCY as u64),
        default_value_t = Workload::default().concurrency
    )]
    concurrency: usize,
    /// Most lines per order (1 to 32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_LINES as i64), default_value_t = Workload::default().max_lines)]
    max_lines: u32,
    /// Most units per line (1 to 10,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_QTY)), default_value_t = Workload::default().max_qty)]
    max_qty: u32,
    /// Units each item starts with (at most 1,000,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RESTOCK)), default_value_t = Workload::default().initial_stock)]
    initial_stock: u32,
    /// One restock after every this many orders (0: none).
    #[arg(long, default_value_t = Workload::default().restock_every)]
    restock_every: u64,
    /// Units per restock (1 to 1,000,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RESTOCK)), default_value_t = Workload::default().restock_qty)]
    restock_qty: u32,
    /// Milliseconds an item holds stock for an order before asking whether it still needs it
    /// (1 to 86,400,000: a day).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_POLICY_MS), default_value_t = Policy::default().hold_ms)]
    hold_ms: u64,
    /// Milliseconds a backordered order waits for stock before it is cancelled (1 to
    /// 86,400,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_POLICY_MS), default_value_t = Policy::default().wait_ms)]
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
    /// A log of acknowledged orders to check besides the store's own `acks.log` (lines
    /// `ack <order> <status>`, as a client that placed orders over HTTP may write them).
    #[arg(long)]
    acks: Vec<PathBuf>,
    /// Audit a whole cluster as a node of it (`--data` is then this node's store, empty at
    /// first): run it once the other nodes stopped, so that it serves every shard.
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[cfg(feature = "http")]
#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default; anything else exposes the shop: it
    /// needs `--token`, or `--insecure`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Serve off loopback without a token: anyone who reaches the address can place orders,
    /// restock and read everything. Only behind something else that authenticates.
    #[arg(long)]
    insecure: bool,
    /// Store folder [default: gears-order-demo under the system temp dir].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Wipe the store first.
    #[arg(long)]
    fresh: bool,
    /// Do not place simulated orders: only what arrives over HTTP.
    #[arg(long)]
    no_simulation: bool,
    /// Simulated orders per second (1 to 10,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), default_value_t = 20)]
    rate: u32,
    /// Items in the simulated shop (1 to 100,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SKUS)), default_value_t = 24)]
    skus: u32,
    /// Units each item starts with (at most 1,000,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RESTOCK)), default_value_t = 60)]
    initial_stock: u32,
    /// Require `Authorization: Bearer <TOKEN>` (or `?access_token=<TOKEN>` on the live
    /// page's routes): on every route but `/health` when `--addr` is not loopback, on the
    /// admin routes and `/metrics` when it is.
    #[arg(long)]
    token: Option<String>,
    /// Durability of acknowledged writes.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `serve` and `audit` join a cluster.
#[cfg(feature = "cluster")]
#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Run as a node of a cluster on these NATS JetStream servers (comma-separated URLs):
    /// the nodes share the shards, and a call on any node reaches the one that serves its
    /// actor. Writes are durable once the cluster's replicated log has them (`--durability`
    /// does not apply). See "Cluster" in the README.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's id in the cluster: unique, letters, digits, `-` and `_`.
    #[arg(long, requires = "cluster", default_value = "node-1")]
    node: String,
    /// Replicas of the cluster's log and buckets: 3 for three NATS servers, 1 for one.
    #[arg(long, requires = "cluster", value_parser = clap::value_parser!(u8).range(1..=5), default_value_t = 3)]
    replicas: u8,
    /// Seconds a node's shard leases live unless renewed: a dead node's shards move after
    /// about this long.
    #[arg(long, requires = "cluster", value_parser = clap::value_parser!(u64).range(1..=600), default_value_t = 20)]
    lease_secs: u64,
    /// Log entries a shard gathers before the node serving it snapshots it (and removes the
    /// entries before the snapshot from the log): a take-over replays at most about this many.
    #[arg(long, requires = "cluster", value_parser = clap::value_parser!(u64).range(1..), default_value_t = gears::cluster::DEFAULT_SNAPSHOT_AFTER)]
    snapshot_after: u64,
}

#[cfg(feature = "cluster")]
impl ClusterArgs {
    /// Opens the store at `dir`: as a node of the cluster if `--cluster` was given.
    async fn open(
        &self,
        dir: &std::path::Path,
        options: StoreOptions,
    ) -> Result<gears::Runtime, DemoError> {
        if self.cluster.is_empty() {
            return order_demo::open(dir, options).await;
        }
        let cluster = gears::cluster::ClusterConfig::new(self.cluster.clone(), &self.node)
            .name("order_demo")
            .replicas(usize::from(self.replicas))
            .lease_ttl(Duration::from_secs(self.lease_secs))
            .snapshot_after(self.snapshot_after);
        println!(
            "joining the cluster as {} on {}",
            self.node,
            self.cluster.join(",")
        );
        order_demo::open_node(dir, options, cluster).await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Without RUST_LOG: Gears' own notices (where the ingress listens, messages recovered
    // from the last run) at info, everything else at warn, so fjall's and lsm-tree's
    // recovery chatter stays out of the way. RUST_LOG replaces this entirely.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,gears=info")),
        );
    // With OTEL_EXPORTER_OTLP_ENDPOINT set, Gears' spans are exported there by OTLP.
    #[cfg(feature = "otel")]
    let traces = match order_demo::telemetry::otlp_provider("order-demo") {
        Ok(provider) => provider,
        Err(e) => {
            eprintln!("order-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otel")]
    let registry = registry.with(traces.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        order_demo::telemetry::layer(provider.tracer("gears"))
    }));
    registry.init();
    let code = run_command().await;
    #[cfg(feature = "otel")]
    if let Some(provider) = traces
        && let Err(e) = provider.shutdown()
    {
        eprintln!("order-demo: exporting the last traces failed: {e}");
    }
    code
}

async fn run_command() -> ExitCode {
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
    let acks = order_demo::ack_log_path(&dir);
    let result = match AckLog::open(&acks) {
        Ok(log) => run_on(&rt, &workload, &args, log, &acks).await,
        Err(e) => Err(e),
    };
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
    log: AckLog,
    log_path: &std::path::Path,
) -> Result<RunResult, DemoError> {
    order_demo::seed(rt, workload).await?;
    let observer = Arc::new(Progress::new(workload.orders, args.print_acks, log));
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
    // Every acknowledgement in the log: this run's and those of runs before (killed ones
    // included) on the same store.
    let audit = order_demo::audit_logged(rt, &[log_path.to_path_buf()]).await?;
    Ok((placement, drained, stats, audit))
}

/// Longest a stopping `serve` waits for requests in flight and the simulation's orders.
#[cfg(feature = "http")]
const SHUTDOWN_BOUND: Duration = Duration::from_secs(20);

/// Serves until SIGTERM or Ctrl-C, then stops taking requests, answers those in flight,
/// stops the simulation and shuts the runtime down (every acknowledged write is durable
/// already), within [`SHUTDOWN_BOUND`]. No audit at the end: `order-demo audit` does it.
#[cfg(feature = "http")]
async fn serve(args: ServeArgs) -> Result<(), DemoError> {
    if !args.addr.ip().is_loopback() && args.token.is_none() && !args.insecure {
        return Err(DemoError::Refused(format!(
            "{} is not a loopback address: anyone who reaches it could place orders, restock \
             and read everything. Pass --token <TOKEN> (clients then send `Authorization: \
             Bearer <TOKEN>`; open the page at http://HOST:PORT/?access_token=<TOKEN>), or \
             --insecure if something in front of it authenticates",
            args.addr
        )));
    }
    // Before anything starts, so a signal during startup is not lost.
    let stop = gears::shutdown_signal();
    let dir = args.data.clone().unwrap_or_else(order_demo::default_dir);
    if args.fresh {
        order_demo::wipe(&dir)?;
    }
    let options = StoreOptions {
        durability: args.durability.into(),
        ..StoreOptions::default()
    };
    #[cfg(feature = "cluster")]
    let rt = args.cluster.open(&dir, options).await?;
    #[cfg(not(feature = "cluster"))]
    let rt = order_demo::open(&dir, options).await?;
    let result = serve_on(&rt, &dir, args, stop).await;
    let shutdown = rt.shutdown().await;
    result?;
    shutdown?;
    println!("stopped");
    Ok(())
}

#[cfg(feature = "http")]
async fn serve_on(
    rt: &gears::Runtime,
    dir: &std::path::Path,
    args: ServeArgs,
    stop: impl Future<Output = std::io::Result<gears::Signal>>,
) -> Result<(), DemoError> {
    use order_demo::serve::{ServeOptions, Simulation};

    let http = gears::http::HttpConfig::default()
        .bind(args.addr)
        .allow_unauthenticated(args.insecure);
    let simulation = (!args.no_simulation).then(|| {
        let mut simulation = Simulation {
            rate: args.rate,
            ..Simulation::default()
        };
        simulation.workload.skus = args.skus;
        simulation.workload.initial_stock = args.initial_stock;
        simulation
    });
    let acks = match simulation {
        Some(_) => Some(Arc::new(AckLog::open(&order_demo::ack_log_path(dir))?)),
        None => None,
    };
    let options = ServeOptions {
        http,
        token: args.token,
        simulation,
        acks,
        ..ServeOptions::default()
    };
    let live = order_demo::serve::start(rt, options).await?;
    println!("store {}", dir.display());
    println!("live page: http://{}/", live.local_addr());
    println!("SIGTERM or Ctrl-C stops the server.");
    let signal = stop.await.map_err(|error| DemoError::Io {
        doing: "listening for SIGTERM".into(),
        error,
    })?;
    println!("{signal}: stopping");
    match tokio::time::timeout(SHUTDOWN_BOUND, live.stop()).await {
        Ok(stopped) => stopped,
        Err(_) => Err(DemoError::Refused(format!(
            "requests in flight were not answered within {SHUTDOWN_BOUND:?}; stopping anyway"
        ))),
    }
}

async fn audit(args: AuditArgs) -> Result<Audit, DemoError> {
    let dir = args.data.unwrap_or_else(order_demo::default_dir);
    #[cfg(feature = "cluster")]
    let clustered = !args.cluster.cluster.is_empty();
    #[cfg(not(feature = "cluster"))]
    let clustered = false;
    if !clustered && !order_demo::is_store(&dir) {
        return Err(DemoError::Refused(format!(
            "no store at {}: run the demo first",
            dir.display()
        )));
    }
    for log in &args.acks {
        if !log.is_file() {
            return Err(DemoError::Refused(format!(
                "no acknowledgement log at {}",
                log.display()
            )));
        }
    }
    let mut logs = args.acks;
    let own = order_demo::ack_log_path(&dir);
    if own.is_file() {
        logs.insert(0, own);
    }
    #[cfg(feature = "cluster")]
    let rt = args.cluster.open(&dir, StoreOptions::default()).await?;
    #[cfg(not(feature = "cluster"))]
    let rt = order_demo::open(&dir, StoreOptions::default()).await?;
    let result = audit_on(&rt, Duration::from_secs(args.drain_secs), &logs).await;
    let shutdown = rt.shutdown().await;
    let audit = result?;
    shutdown?;
    println!("store {}", dir.display());
    println!("{audit}");
    Ok(audit)
}

async fn audit_on(
    rt: &gears::Runtime,
    bound: Duration,
    logs: &[PathBuf],
) -> Result<Audit, DemoError> {
    let drained = order_demo::drain_store(rt, bound).await?;
    if !drained.is_complete() {
        eprintln!(
            "order-demo: after {:.1} s, {} orders are still backordered and {} holds wait \
             to expire; auditing anyway",
            drained.waited.as_secs_f64(),
            drained.backordered,
            drained.holds
        );
    }
    order_demo::audit_logged(rt, logs).await
}

/// The progress bar, the acknowledgement log, and the acknowledgements the crash test reads.
struct Progress {
    bar: ProgressBar,
    print_acks: bool,
    log: AckLog,
}

impl Progress {
    fn new(orders: u64, print_acks: bool, log: AckLog) -> Progress {
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
        Progress {
            bar,
            print_acks,
            log,
        }
    }
}

impl Observer for Progress {
    fn placed(&self, order: &str, status: Status) {
        self.bar.inc(1);
        if let Err(e) = self.log.record(order, status) {
            self.bar.println(format!("order-demo: {e}"));
        }
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
