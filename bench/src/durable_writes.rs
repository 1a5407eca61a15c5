//! Durable writes: C concurrent callers increment counters, on many keys (`many-keys`) or on
//! one (`hot-key`, where the output gate lets turns run while earlier writes sync), against
//! raw fjall with one batch + sync per B writes and with one sync per write.

use std::cell::RefCell;

use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter};
use crate::durability::Mode;
use crate::measure::{TimeArgs, drive_async, interleave};
use crate::raw_fjall::RawStore;
use crate::report::{Report, Target};
use crate::rng::Rng;
use crate::stats::GearsStats;

/// Flags of `many-keys`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct ManyKeysArgs {
    /// Concurrent callers (Gears' batch size, and so its lead over one sync per write, grows
    /// with them).
    #[arg(long, default_value_t = 128)]
    pub(crate) callers: usize,
    /// Counters the callers pick from at random.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) keys: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl ManyKeysArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        ManyKeysArgs {
            callers: 8,
            keys: 100,
            time: TimeArgs::tiny(),
        }
    }
}

/// Flags of `hot-key`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct HotKeyArgs {
    /// Concurrent callers, all on the same key.
    #[arg(long, default_value_t = 64)]
    pub(crate) callers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl HotKeyArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        HotKeyArgs {
            callers: 8,
            time: TimeArgs::tiny(),
        }
    }
}

/// Runs `many-keys`.
pub(crate) fn many_keys(tokio: &Tokio, mode: Mode, args: &ManyKeysArgs) -> BenchResult<Report> {
    let mut report = Report::new("many-keys", mode, serde_json::to_value(args)?);
    let (per_batch, per_write) = run(tokio, mode, &mut report, args.callers, args.keys, args.time)?;
    report.target(Target::at_least(
        &format!("throughput / raw fjall batch+{}", verb(mode)),
        per_batch,
        0.7,
        "x",
    ));
    report.target(Target::at_least(
        &format!("throughput / raw fjall {} per write", verb(mode)),
        per_write,
        20.0,
        "x",
    ));
    Ok(report)
}

/// Runs `hot-key`.
pub(crate) fn hot_key(tokio: &Tokio, mode: Mode, args: &HotKeyArgs) -> BenchResult<Report> {
    let mut report = Report::new("hot-key", mode, serde_json::to_value(args)?);
    let (_, per_write) = run(tokio, mode, &mut report, args.callers, 1, args.time)?;
    report.target(Target::at_least(
        &format!("throughput / raw fjall {} per write", verb(mode)),
        per_write,
        20.0,
        "x",
    ));
    report.note(
        "the raw batch baseline writes B distinct keys per batch, B = calls per Gears batch; \
         Gears coalesces them into one key write per batch",
    );
    Ok(report)
}

/// What the raw baselines do to each batch's journal in `mode`.
fn verb(mode: Mode) -> &'static str {
    match mode {
        Mode::Sync => "sync",
        Mode::Buffered => "flush",
    }
}

/// Measures Gears and both raw baselines in interleaved rounds; returns the throughput
/// ratios to the batched and the per-write baseline.
fn run(
    tokio: &Tokio,
    mode: Mode,
    report: &mut Report,
    callers: usize,
    keys: u64,
    time: TimeArgs,
) -> BenchResult<(f64, f64)> {
    let workload = report.workload;
    let keys = keys.max(1);
    let gears_dir = tempfile::tempdir()?;
    let rt = tokio.block_on(async {
        let rt = counter::open(gears_dir.path(), mode.gears()).await?;
        // Activate every counter first (reads, no writes): the window measures steady state.
        counter::call_all(&rt, keys, false).await?;
        BenchResult::Ok(rt)
    })?;
    let batch_dir = tempfile::tempdir()?;
    let batch_store = RawStore::open(batch_dir.path(), mode.fjall())?;
    let single_dir = tempfile::tempdir()?;
    let single_store = RawStore::open(single_dir.path(), mode.fjall())?;

    let marks = RefCell::new(Vec::new());
    // B: Gears' calls per commit batch, as observed in its first round.
    let mut batch = None;
    let verb = verb(mode);
    let samples = interleave(
        &time,
        &mut [
            &mut |window| {
                eprintln!("[{workload}] gears: {callers} callers on {keys} keys");
                let caller_rt = rt.clone();
                let (sample, from, to) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |caller, i| {
                        let rt = caller_rt.clone();
                        async move {
                            let k = Rng::new(((caller as u64) << 40) ^ i).below(keys);
                            rt.get::<Counter>(counter::key(k)).add(1).await?;
                            Ok(())
                        }
                    },
                    || rt.stats(),
                ))?;
                marks.borrow_mut().push((from, to));
                Ok(sample)
            },
            &mut |window| {
                let b = *batch.get_or_insert_with(|| {
                    let stats = GearsStats::over(&marks.borrow(), window.measure);
                    stats.submitted_per_batch.round().max(1.0) as usize
                });
                eprintln!("[{workload}] raw fjall: batches of {b}, one {verb} each");
                batch_store.batched_writes(b, keys, window)
            },
            &mut |window| {
                eprintln!("[{workload}] raw fjall: one {verb} per write");
                single_store.sync_per_write(keys, window)
            },
        ],
    )?;
    tokio.block_on(rt.shutdown())?;
    let gears_stats = GearsStats::over(&marks.into_inner(), samples[0].elapsed);
    let b = batch.unwrap_or(1);
    report.note(format!(
        "B = {b}: Gears' calls per commit batch in its first round ({:.1} over all rounds)",
        gears_stats.submitted_per_batch
    ));
    report.gears_stats = Some(gears_stats);
    let gears = report.row("gears", &samples[0]);
    let batched = report.row(format!("raw fjall batch+{verb} (B={b})"), &samples[1]);
    let single = report.row(format!("raw fjall {verb} per write"), &samples[2]);
    let per_batch = report.compare(&gears, &batched);
    let per_write = report.compare(&gears, &single);
    Ok((per_batch, per_write))
}
