//! Gears benchmarks: `cargo run --release -p gears-bench -- <workload>`.
//!
//! Every workload measures Gears and its baselines in the same run, in interleaved rounds,
//! and reports ratios, so the figures hold on a noisy shared machine. The latest results are
//! in `BENCHMARKS.md` at the repository root.
//!
//! ## Where each part lives
//! - Workloads: `durable_writes.rs` (`many-keys`, `hot-key`), `hot_key_panics.rs`,
//!   `sends.rs`, `read_call.rs`, `cold_activation.rs`, `order_workflow.rs`, `memory.rs`;
//!   `all` and `smoke` run them all (here).
//! - Actors under test: `counter.rs`, the order demo's actors (crate `order_demo`), and
//!   `orders.rs` (lean stand-ins for them, `order-workflow --flow lean`); `populate.rs` fills
//!   a store through Gears.
//! - Baselines: `raw_fjall.rs` (the store's physical limit), `echo.rs` (ractor and tokio
//!   round trips), `sqlite_orders.rs` (the order flow on SQLite).
//! - Measuring: `measure.rs` (callers, plain-thread baselines, interleaved rounds, HDR
//!   histograms), `process.rs` (CPU time and RSS from `/proc`), `stats.rs` (the runtime's
//!   counters over a window), `rng.rs`.
//! - Output: `report.rs` (text and `--json`), `durability.rs` (`--durability` for every
//!   contender).

/// mimalloc, as the order demo links it: Gears allocates per turn (its turn's future, the
/// writes it hands to the committer, fjall's memtable entries), and glibc's malloc and free
/// were a fifth of the runtime's CPU in the order flow; with mimalloc the flow costs a quarter
/// to a half less CPU per order (BENCHMARKS.md, "mimalloc in the benchmark"). SQLite, the
/// baseline, allocates through libc's malloc either way (the bundled build's default), and
/// from its own lookaside buffers on its hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod cold_activation;
mod counter;
mod durability;
mod durable_writes;
mod echo;
mod hot_key_panics;
mod measure;
mod memory;
mod order_workflow;
mod orders;
mod populate;
mod process;
mod raw_fjall;
mod read_call;
mod report;
mod rng;
mod sends;
mod sqlite_orders;
mod stats;

use clap::{Parser, Subcommand};

use crate::durability::Mode;
use crate::report::Report;

/// What every fallible step of a benchmark returns.
pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Benchmarks of Gears against raw fjall, ractor, tokio and SQLite, measured in the same run.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Durability of Gears and of every baseline.
    #[arg(long, value_enum, default_value_t = Mode::Sync, global = true)]
    durability: Mode,
    /// Print the reports as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Clone, Subcommand)]
enum Workload {
    /// Concurrent callers increment counters on many keys (durable).
    ManyKeys(durable_writes::ManyKeysArgs),
    /// Concurrent callers increment one counter (durable; the output-gate pipelining case).
    HotKey(durable_writes::HotKeyArgs),
    /// Other keys' throughput while one hot key's calls panic 1 %, vs while they do not.
    HotKeyPanics(hot_key_panics::HotKeyPanicsArgs),
    /// What the outbox costs: exactly-once sends (with delivery) vs durable calls.
    Sends(sends::SendsArgs),
    /// A read-only call on an active actor vs a bare ractor call and a tokio round trip.
    ReadCall(read_call::ReadCallArgs),
    /// Calls to stored actors not in memory, and the time to open a store of many actors.
    ColdActivation(cold_activation::ColdActivationArgs),
    /// Orders of 3 lines on the order demo's actors (or lean stand-ins) vs the same flow on
    /// SQLite.
    OrderWorkflow(order_workflow::OrderWorkflowArgs),
    /// Exactly `--orders` demo orders on Gears alone, with no clock deciding how many: for
    /// counting instructions per order under callgrind (BENCHMARKS.md, "Instructions").
    OrderCount(order_workflow::OrderCountArgs),
    /// The order flow on one node, on one node replicating through NATS JetStream and on
    /// three nodes; and a call across nodes against a local one.
    Cluster(cluster::ClusterArgs),
    /// RSS per live activation, and with many passivated actors.
    Memory(memory::MemoryArgs),
    /// Every workload with its defaults.
    All,
    /// Every workload at tiny sizes, in seconds (CI: checks the benchmark runs, not speed).
    Smoke,
    /// Measures one memory figure in a fresh process (used by `memory`).
    #[command(hide = true)]
    MemoryProbe(memory::ProbeArgs),
}

/// A workload's flags with every default, as if given on the command line without any.
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"]))
        .expect("every workload flag has a default")
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("gears-bench: {e}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> BenchResult<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mode = cli.durability;
    let (workloads, smoke) = match &cli.workload {
        Workload::MemoryProbe(args) => return memory::probe_main(&tokio, mode, args),
        Workload::All => (every_workload(Sizes::Defaults), false),
        Workload::Smoke => (every_workload(Sizes::Tiny), true),
        one => (vec![one.clone()], false),
    };
    let mut reports = Vec::new();
    for workload in &workloads {
        let report = run_one(&tokio, mode, workload)?;
        if smoke && report.has_empty_row() {
            return Err(format!("smoke: {} completed no operation", report.workload).into());
        }
        if !cli.json {
            report.print_text();
        }
        reports.push(report);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// Runs one workload (never `all`, `smoke` or the probe).
fn run_one(
    tokio: &tokio::runtime::Runtime,
    mode: Mode,
    workload: &Workload,
) -> BenchResult<Report> {
    match workload {
        Workload::ManyKeys(args) => durable_writes::many_keys(tokio, mode, args),
        Workload::HotKey(args) => durable_writes::hot_key(tokio, mode, args),
        Workload::HotKeyPanics(args) => hot_key_panics::run(tokio, mode, args),
        Workload::Sends(args) => sends::run(tokio, mode, args),
        Workload::ReadCall(args) => read_call::run(tokio, mode, args),
        Workload::ColdActivation(args) => cold_activation::run(tokio, mode, args),
        Workload::OrderWorkflow(args) => order_workflow::run(tokio, mode, args),
        Workload::OrderCount(args) => order_workflow::count(tokio, mode, args),
        Workload::Cluster(args) => cluster::run(tokio, args),
        Workload::Memory(args) => memory::run(mode, args),
        Workload::All | Workload::Smoke | Workload::MemoryProbe(_) => {
            Err("not a single workload".into())
        }
    }
}

/// Which flags `every_workload` uses.
#[derive(Clone, Copy)]
enum Sizes {
    /// As if given no flag.
    Defaults,
    /// The smoke run's: seconds in all, even in a debug build.
    Tiny,
}

/// Every workload, in the order `all` and `smoke` run them.
fn every_workload(sizes: Sizes) -> Vec<Workload> {
    match sizes {
        Sizes::Defaults => vec![
            Workload::ManyKeys(defaults()),
            Workload::HotKey(defaults()),
            Workload::HotKeyPanics(defaults()),
            Workload::Sends(defaults()),
            Workload::ReadCall(defaults()),
            Workload::ColdActivation(defaults()),
            Workload::OrderWorkflow(defaults()),
            Workload::Cluster(defaults()),
            Workload::Memory(defaults()),
        ],
        Sizes::Tiny => vec![
            Workload::ManyKeys(durable_writes::ManyKeysArgs::tiny()),
            Workload::HotKey(durable_writes::HotKeyArgs::tiny()),
            Workload::HotKeyPanics(hot_key_panics::HotKeyPanicsArgs::tiny()),
            Workload::Sends(sends::SendsArgs::tiny()),
            Workload::ReadCall(read_call::ReadCallArgs::tiny()),
            Workload::ColdActivation(cold_activation::ColdActivationArgs::tiny()),
            Workload::OrderWorkflow(order_workflow::OrderWorkflowArgs::tiny()),
            Workload::OrderCount(order_workflow::OrderCountArgs::tiny()),
            Workload::Cluster(cluster::ClusterArgs::tiny()),
            Workload::Memory(memory::MemoryArgs::tiny()),
        ],
    }
}
