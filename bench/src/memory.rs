//! `memory`: resident memory per live activation of a small actor, against an idle tokio
//! task with a channel and an idle ractor actor; and the process's RSS once many stored
//! actors are passivated. Each figure comes from a fresh child process (`memory-probe`), so
//! memory freed by one measurement cannot hide the cost of the next.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter};
use crate::durability::Mode;
use crate::process::rss_bytes;
use crate::report::{Report, Target};

/// Flags of `memory`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct MemoryArgs {
    /// Live activations measured (and idle tokio tasks, idle ractor actors).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) live: u64,
    /// Stored actors written, then passivated (the figure is 1,000,000).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) passivated: u64,
}

impl MemoryArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        MemoryArgs {
            live: 2_000,
            passivated: 2_000,
        }
    }
}

/// What a probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProbeKind {
    /// Live Gears activations that were called once (read-only, nothing written).
    GearsLive,
    /// Gears actors written once each, then all passivated.
    GearsPassivated,
    /// Idle tokio tasks, each waiting on its own mpsc channel.
    TokioTask,
    /// Idle ractor actors.
    Ractor,
}

/// Flags of the hidden `memory-probe` command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProbeArgs {
    /// What to create.
    #[arg(long, value_enum)]
    pub(crate) kind: ProbeKind,
    /// How many.
    #[arg(long)]
    pub(crate) count: u64,
}

/// What a probe prints (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProbeResult {
    /// RSS once the runtime (if any) is open, before creating anything.
    pub(crate) rss_before: u64,
    /// RSS with everything created (and, for passivation, passivated again).
    pub(crate) rss_after: u64,
    /// RSS right after the writes, before passivating (passivation probe only).
    pub(crate) rss_live: u64,
    /// Activations still live right after the writes (passivation probe only).
    pub(crate) live_after_writes: u64,
    /// Live activations at the end (Gears probes).
    pub(crate) live: u64,
}

/// Runs `memory`: one child process per figure.
pub(crate) fn run(mode: Mode, args: &MemoryArgs) -> BenchResult<Report> {
    let mut report = Report::new("memory", mode, serde_json::to_value(args)?);
    let live = args.live.max(1);
    let per = |r: &ProbeResult, n: u64| r.rss_after.saturating_sub(r.rss_before) as f64 / n as f64;

    let gears = probe(mode, ProbeKind::GearsLive, live)?;
    let tokio_task = probe(mode, ProbeKind::TokioTask, live)?;
    let ractor = probe(mode, ProbeKind::Ractor, live)?;
    let state = std::mem::size_of::<Counter>() as f64;
    let gears_per = per(&gears, live);
    report.figure(
        format!("RSS per live activation ({live} live, state {state} B)"),
        gears_per,
        "bytes",
    );
    report.figure(
        "RSS per live activation beyond its state",
        gears_per - state,
        "bytes",
    );
    let tokio_per = per(&tokio_task, live);
    let ractor_per = per(&ractor, live);
    report.figure("RSS per idle tokio task + mpsc channel", tokio_per, "bytes");
    report.figure("RSS per idle ractor actor", ractor_per, "bytes");
    report.ratio(
        "gears activation / tokio task + channel",
        gears_per / tokio_per,
    );
    report.ratio("gears activation / ractor actor", gears_per / ractor_per);
    report.target(Target::at_most(
        "RSS per live activation beyond state",
        gears_per - state,
        1024.0,
        " B",
    ));

    let n = args.passivated.max(1);
    let passivated = probe(mode, ProbeKind::GearsPassivated, n)?;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    report.figure(
        format!(
            "RSS right after writing {n} actors, {} still live (whole process)",
            passivated.live_after_writes
        ),
        mib(passivated.rss_live),
        "MiB",
    );
    if passivated.live_after_writes == n {
        report.figure(
            "RSS per written actor, all live (incl. fjall memtable)",
            passivated.rss_live.saturating_sub(passivated.rss_before) as f64 / n as f64,
            "bytes",
        );
    }
    report.figure(
        format!("RSS with {n} stored actors all passivated (whole process)"),
        mib(passivated.rss_after),
        "MiB",
    );
    report.figure(
        "  of which added since the runtime opened",
        mib(passivated.rss_after.saturating_sub(passivated.rss_before)),
        "MiB",
    );
    report.figure(
        "  live activations left after passivation",
        passivated.live as f64,
        "",
    );
    report.note(
        "RSS after passivation includes fjall's memtable of the writes and the memory the \
         allocator keeps (for reuse) after activations are freed",
    );
    Ok(report)
}

/// Runs one probe in a child process.
fn probe(mode: Mode, kind: ProbeKind, count: u64) -> BenchResult<ProbeResult> {
    eprintln!("[memory] probe {kind:?} × {count}");
    let exe = std::env::current_exe()?;
    let kind_arg =
        clap::ValueEnum::to_possible_value(&kind).ok_or("every probe kind has a name")?;
    let output = std::process::Command::new(exe)
        .args([
            "--durability",
            mode.name(),
            "memory-probe",
            "--kind",
            kind_arg.get_name(),
        ])
        .args(["--count", &count.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("memory probe {kind:?} failed: {}", output.status).into());
    }
    let line = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(line.trim())?)
}

/// The hidden `memory-probe` command: measures one kind in this (fresh) process and prints
/// a [`ProbeResult`] as JSON.
pub(crate) fn probe_main(tokio: &Tokio, mode: Mode, args: &ProbeArgs) -> BenchResult<()> {
    let result = tokio.block_on(async {
        match args.kind {
            ProbeKind::GearsLive => gears_live(mode, args.count).await,
            ProbeKind::GearsPassivated => gears_passivated(mode, args.count).await,
            ProbeKind::TokioTask => tokio_tasks(args.count).await,
            ProbeKind::Ractor => ractor_actors(args.count).await,
        }
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Lets freed task memory settle before reading RSS.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn gears_live(mode: Mode, n: u64) -> BenchResult<ProbeResult> {
    let dir = tempfile::tempdir()?;
    let rt = counter::open(dir.path(), mode.gears()).await?;
    // Warm the runtime's own allocations (tasks, first activation) before the baseline.
    rt.get::<Counter>("warm-up").get().await?;
    settle().await;
    let rss_before = rss_bytes();
    counter::call_all(&rt, n, false).await?;
    settle().await;
    let rss_after = rss_bytes();
    let live = rt.stats().live_activations;
    if live < n {
        return Err(format!("only {live} of {n} activations are live").into());
    }
    rt.shutdown().await?;
    Ok(ProbeResult {
        rss_before,
        rss_after,
        rss_live: 0,
        live_after_writes: 0,
        live,
    })
}

async fn gears_passivated(mode: Mode, n: u64) -> BenchResult<ProbeResult> {
    let dir = tempfile::tempdir()?;
    // Longer than writing 100,000 actors takes (so all are live at the end of the writes),
    // short enough to wait for.
    let idle = Duration::from_secs(3);
    let rt = gears::Runtime::builder()
        .path(dir.path())
        .durability(mode.gears())
        .idle_timeout(idle)
        .register::<Counter>()
        .open()
        .await?;
    rt.get::<Counter>("warm-up").get().await?;
    settle().await;
    let rss_before = rss_bytes();
    counter::call_all(&rt, n, true).await?;
    let rss_live = rss_bytes();
    // Not counting the warm-up actor.
    let live_after_writes = rt.stats().live_activations.saturating_sub(1);
    let mut live = rt.stats().live_activations;
    for _ in 0..100 {
        if live == 0 {
            break;
        }
        tokio::time::sleep(idle).await;
        rt.passivate_idle();
        live = rt.stats().live_activations;
    }
    settle().await;
    let rss_after = rss_bytes();
    rt.shutdown().await?;
    Ok(ProbeResult {
        rss_before,
        rss_after,
        rss_live,
        live_after_writes,
        live,
    })
}

async fn tokio_tasks(n: u64) -> BenchResult<ProbeResult> {
    settle().await;
    let rss_before = rss_bytes();
    let mut senders = Vec::with_capacity(n as usize);
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<u64>>(16);
        tasks.push(tokio::spawn(async move {
            let state = 0u64;
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(state);
            }
        }));
        senders.push(tx);
    }
    settle().await;
    let rss_after = rss_bytes();
    drop(senders);
    for task in tasks {
        task.await?;
    }
    Ok(ProbeResult {
        rss_before,
        rss_after,
        rss_live: 0,
        live_after_writes: 0,
        live: n,
    })
}

async fn ractor_actors(n: u64) -> BenchResult<ProbeResult> {
    settle().await;
    let rss_before = rss_bytes();
    let mut actors = Vec::with_capacity(n as usize);
    for _ in 0..n {
        actors.push(crate::echo::RactorEcho::spawn().await?);
    }
    settle().await;
    let rss_after = rss_bytes();
    for actor in actors {
        actor.stop().await?;
    }
    Ok(ProbeResult {
        rss_before,
        rss_after,
        rss_live: 0,
        live_after_writes: 0,
        live: n,
    })
}
