//! Timing harnesses: concurrent async callers and plain-thread baselines run for a warm-up
//! and a measured window, recording every operation's latency in an HDR histogram.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::BenchResult;
use crate::process;

/// Significant digits kept by the histograms: within 1 %, and small enough that hundreds of
/// callers can each keep their own.
const SIGFIG: u8 = 2;

/// The `--secs`, `--rounds` and `--warmup` flags every timed workload takes.
#[derive(Debug, Clone, Copy, clap::Args, serde::Serialize)]
pub(crate) struct TimeArgs {
    /// Seconds measured per contender (Gears and each baseline), split over the rounds.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) secs: f64,
    /// Rounds: contenders take turns this many times, so a slow spell of a shared disk or
    /// CPU hits them all alike.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Seconds of warm-up before the first round (later rounds: at most 0.1 s).
    #[arg(long, default_value_t = 0.3)]
    pub(crate) warmup: f64,
}

impl TimeArgs {
    /// A fraction of a second: for the smoke run.
    pub(crate) fn tiny() -> Self {
        TimeArgs {
            secs: 0.2,
            rounds: 1,
            warmup: 0.05,
        }
    }

    /// The window of one round.
    pub(crate) fn round_window(&self) -> Window {
        Window::new(self.warmup, self.secs / self.rounds.max(1) as f64)
    }
}

/// One contender of [`interleave`]: runs a window and returns its sample.
pub(crate) type Contender<'a> = &'a mut dyn FnMut(Window) -> BenchResult<Sample>;

/// Runs the contenders in turn, `time.rounds` times, and returns each one's merged sample.
pub(crate) fn interleave(
    time: &TimeArgs,
    contenders: &mut [Contender<'_>],
) -> BenchResult<Vec<Sample>> {
    let first = time.round_window();
    // Later rounds only need to refill pipelines, not to warm caches again.
    let later = Window {
        warmup: first.warmup.min(Duration::from_millis(100)),
        ..first
    };
    let mut merged: Vec<Option<Sample>> = contenders.iter().map(|_| None).collect();
    for round in 0..time.rounds.max(1) {
        let window = if round == 0 { first } else { later };
        for (contender, total) in contenders.iter_mut().zip(merged.iter_mut()) {
            let sample = contender(window)?;
            match total {
                Some(total) => total.merge(&sample),
                None => *total = Some(sample),
            }
        }
    }
    Ok(merged.into_iter().flatten().collect())
}

/// How long to warm up and how long to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Operations run but not counted (caches, allocators and the OS settle).
    pub(crate) warmup: Duration,
    /// Operations counted.
    pub(crate) measure: Duration,
}

impl Window {
    /// A window of `secs` measured seconds after `warmup_secs` of warm-up.
    pub(crate) fn new(warmup_secs: f64, secs: f64) -> Self {
        Window {
            warmup: Duration::from_secs_f64(warmup_secs.max(0.0)),
            measure: Duration::from_secs_f64(secs.max(0.001)),
        }
    }
}

/// Latencies in nanoseconds.
#[derive(Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Latencies(Histogram::new(SIGFIG).expect("2 significant digits are valid"))
    }

    /// Records one operation.
    pub(crate) fn record(&mut self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Records `n` operations that each took `latency` (the writes of one batch).
    pub(crate) fn record_n(&mut self, latency: Duration, n: u64) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing: recording fails only past u64 range, where clamping is right.
        if self.0.record_n(nanos.max(1), n).is_err() {
            self.0.saturating_record_n(nanos.max(1), n);
        }
    }

    /// Adds another histogram's samples.
    pub(crate) fn merge(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("auto-resizing histograms of the same precision add up");
    }

    /// Operations recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 = median), in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// What one measured window produced.
#[derive(Clone)]
pub(crate) struct Sample {
    /// Latency of every operation completed inside the window.
    pub(crate) latencies: Latencies,
    /// Operations completed inside the window (a batch counts its writes).
    pub(crate) ops: u64,
    /// Length of the window.
    pub(crate) elapsed: Duration,
    /// CPU time the whole process used during the window (every thread).
    pub(crate) cpu: Duration,
}

impl Sample {
    /// Adds another window's operations.
    pub(crate) fn merge(&mut self, other: &Sample) {
        self.latencies.merge(&other.latencies);
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }

    /// Adds `elapsed` and `cpu` to the window: work its operations left behind (messages in
    /// an outbox) that their throughput and CPU per operation must pay for.
    pub(crate) fn charge(&mut self, elapsed: Duration, cpu: Duration) {
        self.elapsed += elapsed;
        self.cpu += cpu;
    }

    /// Operations per second.
    pub(crate) fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU microseconds per operation (0 when nothing completed).
    pub(crate) fn cpu_us_per_op(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            self.cpu.as_secs_f64() * 1e6 / self.ops as f64
        }
    }
}

/// Runs `callers` async tasks, each calling `op(caller, i)` in a loop for the window, and
/// calls `mark` when the measured part starts and when it ends (to take counters).
pub(crate) async fn drive_async<Op, Fut, M, T>(
    callers: usize,
    window: Window,
    op: Op,
    mark: M,
) -> BenchResult<(Sample, T, T)>
where
    Op: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BenchResult<()>> + Send + 'static,
    M: Fn() -> T,
{
    let op = Arc::new(op);
    let from = Instant::now() + window.warmup;
    let until = from + window.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers.max(1) {
        let op = op.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::new();
            let mut i = 0;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                op(caller, i).await?;
                let done = Instant::now();
                if started >= from && done <= until {
                    latencies.record(done - started);
                }
                i += 1;
            }
            BenchResult::Ok(latencies)
        });
    }
    tokio::time::sleep_until(from.into()).await;
    let (cpu_from, first) = (process::cpu_time(), mark());
    tokio::time::sleep_until(until.into()).await;
    let (cpu_until, last) = (process::cpu_time(), mark());
    let mut latencies = Latencies::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.merge(&joined.map_err(|e| format!("a caller task failed: {e}"))??);
    }
    let sample = Sample {
        ops: latencies.count(),
        latencies,
        elapsed: window.measure,
        cpu: cpu_until.saturating_sub(cpu_from),
    };
    Ok((sample, first, last))
}

/// Runs `threads` plain threads (never Tokio workers: these block on fsync), each calling
/// `op(thread, i, latencies)` in a loop for the window. `op` returns how many operations it
/// completed and records their latencies itself (one batch is many writes).
pub(crate) fn drive_threads<Op>(threads: usize, window: Window, op: Op) -> BenchResult<Sample>
where
    Op: Fn(usize, u64) -> BenchResult<u64> + Sync,
{
    let from = Instant::now() + window.warmup;
    let until = from + window.measure;
    let (cpu_from, cpu_until, latencies) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|thread| {
                let op = &op;
                scope.spawn(move || {
                    let mut latencies = Latencies::new();
                    let mut i = 0;
                    loop {
                        let started = Instant::now();
                        if started >= until {
                            break;
                        }
                        let n = op(thread, i)?;
                        let done = Instant::now();
                        if started >= from && done <= until {
                            latencies.record_n(done - started, n);
                        }
                        i += 1;
                    }
                    BenchResult::Ok(latencies)
                })
            })
            .collect();
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let cpu_from = process::cpu_time();
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let cpu_until = process::cpu_time();
        let mut latencies = Latencies::new();
        for worker in workers {
            let worker = worker
                .join()
                .map_err(|_| "a baseline thread panicked".to_string())??;
            latencies.merge(&worker);
        }
        BenchResult::Ok((cpu_from, cpu_until, latencies))
    })?;
    Ok(Sample {
        ops: latencies.count(),
        latencies,
        elapsed: window.measure,
        cpu: cpu_until.saturating_sub(cpu_from),
    })
}

/// Times `f` once.
pub(crate) fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}
