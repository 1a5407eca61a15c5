//! `cold-activation`: calls to stored actors that are not in memory (load from the store,
//! decode, run), against raw fjall point reads of the same records; and the time to open a
//! store of N actors against a raw fjall reopen of the same folder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter};
use crate::durability::Mode;
use crate::measure::{Latencies, Sample};
use crate::populate;
use crate::process;
use crate::raw_fjall::{self, RawStore};
use crate::report::{Report, Target};
use crate::rng::Rng;
use crate::stats::GearsStats;

/// Flags of `cold-activation`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct ColdActivationArgs {
    /// Stored actors (the figure is 1,000,000: about 15 s more to fill).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) actors: u64,
    /// Cold calls measured (distinct actors, at random), split over the rounds.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) samples: usize,
    /// Rounds: each opens Gears, makes its share of cold calls, shuts down, then reopens the
    /// folder with raw fjall and reads as many records.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
}

impl ColdActivationArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        ColdActivationArgs {
            actors: 2_000,
            samples: 200,
            rounds: 2,
        }
    }
}

/// Runs `cold-activation`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &ColdActivationArgs) -> BenchResult<Report> {
    let mut report = Report::new("cold-activation", mode, serde_json::to_value(args)?);
    let dir = tempfile::tempdir()?;
    let actors = args.actors.max(1);
    tokio.block_on(populate::counters(dir.path(), actors, "cold-activation"))?;

    let rounds = args.rounds.max(1);
    let samples = args.samples.clamp(1, actors as usize);
    let mut rng = Rng::new(7);
    let picked = rng.sample_distinct(actors, samples);
    let per_round = samples.div_ceil(rounds);
    let raw_keys = {
        // Not timed: the keys to read, and a first open that replays what the writers left.
        let store = RawStore::open(dir.path(), mode.fjall())?;
        raw_fjall::pick(&store.keys()?, samples, 11)
    };

    let mut gears_opens = Vec::new();
    let mut raw_opens = Vec::new();
    let mut cold: Option<Sample> = None;
    let mut raw: Option<Sample> = None;
    let mut offloaded: Option<Sample> = None;
    let mut marks = Vec::new();
    for (round, (mine, raw_mine)) in picked
        .chunks(per_round)
        .zip(raw_keys.chunks(per_round))
        .enumerate()
    {
        eprintln!("[cold-activation] round {}: gears", round + 1);
        let (sample, open, from, to) = tokio.block_on(async {
            let started = Instant::now();
            let rt = counter::open(dir.path(), mode.gears()).await?;
            let open = started.elapsed();
            let from = rt.stats();
            // From a task, as a server's request handler would call (not from `block_on`,
            // which would add a thread hand-off to every call).
            let sample = tokio::spawn(cold_calls(rt.clone(), mine.to_vec())).await??;
            let to = rt.stats();
            rt.shutdown().await?;
            BenchResult::Ok((sample, open, from, to))
        })?;
        gears_opens.push(open);
        marks.push((from, to));
        merge(&mut cold, sample);

        eprintln!("[cold-activation] round {}: raw fjall", round + 1);
        raw_opens.push(raw_fjall::reopen_time(dir.path())?);
        let store = Arc::new(RawStore::open(dir.path(), mode.fjall())?);
        merge(&mut raw, raw_fjall::point_reads(&store, raw_mine)?);
        merge(
            &mut offloaded,
            tokio.block_on(tokio.spawn(offloaded_reads(store, raw_mine.to_vec())))??,
        );
    }
    let (Some(cold), Some(raw), Some(offloaded)) = (cold, raw, offloaded) else {
        return Err("no cold call was measured".into());
    };

    report.gears_stats = Some(GearsStats::over(&marks, cold.elapsed));
    let gears = report.row("gears cold call (load + decode + turn)", &cold);
    let raw = report.row("raw fjall point read", &raw);
    let offloaded = report.row("raw fjall read in spawn_blocking, awaited", &offloaded);
    report.compare(&gears, &raw);
    report.compare(&gears, &offloaded);
    let (gears_open, raw_open) = (median(&mut gears_opens), median(&mut raw_opens));
    report.figure(
        format!("gears open of {actors} stored actors (median)"),
        ms(gears_open),
        "ms",
    );
    report.figure(
        "raw fjall reopen of the same folder (median)",
        ms(raw_open),
        "ms",
    );
    let open_ratio = report.ratio(
        "gears open / raw fjall reopen",
        gears_open.as_secs_f64() / raw_open.as_secs_f64(),
    );
    report.target(Target::at_most(
        "cold call p99 (µs)",
        gears.p99_us,
        100.0,
        " µs",
    ));
    report.target(Target::at_most(
        "open / raw fjall reopen",
        open_ratio,
        1.2,
        "x",
    ));
    report.note(
        "the store was just written, so its files are in the OS page cache: \
         cold means not in Gears' memory, not read from the device",
    );
    Ok(report)
}

/// Calls each actor of `keys` once, one after the other; none of them is in memory.
async fn cold_calls(rt: gears::Runtime, keys: Vec<u64>) -> BenchResult<Sample> {
    let mut latencies = Latencies::new();
    let cpu_from = process::cpu_time();
    let started = Instant::now();
    for k in keys {
        let call_started = Instant::now();
        let value = rt.get::<Counter>(counter::key(k)).get().await?;
        latencies.record(call_started.elapsed());
        if value != k + 1 {
            return Err(format!("counter {k} read {value}, stored {}", k + 1).into());
        }
    }
    Ok(Sample {
        ops: latencies.count(),
        latencies,
        elapsed: started.elapsed(),
        cpu: process::cpu_time().saturating_sub(cpu_from),
    })
}

/// Point reads of `keys` from a Tokio task, each in `spawn_blocking` (how an activation
/// loads its state off the async workers): the cost of the hand-off alone.
async fn offloaded_reads(store: Arc<RawStore>, keys: Vec<Vec<u8>>) -> BenchResult<Sample> {
    let mut latencies = Latencies::new();
    let cpu_from = process::cpu_time();
    let started = Instant::now();
    for key in keys {
        let call_started = Instant::now();
        let store = store.clone();
        let found = tokio::task::spawn_blocking(move || store.get(&key)).await??;
        latencies.record(call_started.elapsed());
        if found.is_none() {
            return Err("a stored key was not found".into());
        }
    }
    Ok(Sample {
        ops: latencies.count(),
        latencies,
        elapsed: started.elapsed(),
        cpu: process::cpu_time().saturating_sub(cpu_from),
    })
}

fn merge(total: &mut Option<Sample>, sample: Sample) {
    match total {
        Some(total) => total.merge(&sample),
        None => *total = Some(sample),
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
