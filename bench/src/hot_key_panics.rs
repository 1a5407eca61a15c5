//! Panics on a hot key: the throughput other keys keep while one hot key's calls panic. C
//! callers add on K other keys while H callers hammer one hot key (`add_then_panic`); in
//! phase A none of its calls panics, in phase B one in `--panic-every` does. The phases take
//! turns in interleaved rounds of the same run, under the same load, and B / A is the figure
//! (the target: other keys keep at least 90 % of their throughput).
//!
//! Whether the panics are contained (each fails with `Panicked`, every other hot call is
//! applied, no other call fails) is the test
//! `panics_on_one_hot_key_are_contained_and_other_keys_keep_working`; this measures the cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gears::{CallError, Runtime};
use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter, INJECTED_PANIC};
use crate::durability::Mode;
use crate::measure::{TimeArgs, drive_async, interleave};
use crate::report::{Report, Target};
use crate::rng::Rng;

/// Flags of `hot-key-panics`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct HotKeyPanicsArgs {
    /// Concurrent callers on the other keys (the measured ones).
    #[arg(long, default_value_t = 8)]
    pub(crate) callers: usize,
    /// Other keys they pick from at random.
    #[arg(long, default_value_t = 16)]
    pub(crate) keys: u64,
    /// Concurrent callers on the hot key, in both phases.
    #[arg(long, default_value_t = 4)]
    pub(crate) hot_callers: usize,
    /// In phase B, one hot call in this many panics.
    #[arg(long, default_value_t = 100)]
    pub(crate) panic_every: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl HotKeyPanicsArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        HotKeyPanicsArgs {
            callers: 4,
            keys: 8,
            hot_callers: 2,
            panic_every: 10,
            time: TimeArgs::tiny(),
        }
    }
}

/// What the hot callers do now, and what they saw.
#[derive(Default)]
struct Hot {
    /// Phase B: one call in `panic_every` panics.
    panics: AtomicBool,
    stop: AtomicBool,
    /// Hot calls started (numbers them, so exactly one in `panic_every` panics).
    started: AtomicU64,
    applied: AtomicU64,
    panicked: AtomicU64,
}

/// Runs `hot-key-panics`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &HotKeyPanicsArgs) -> BenchResult<Report> {
    let mut report = Report::new("hot-key-panics", mode, serde_json::to_value(args)?);
    let workload = report.workload;
    let (callers, keys) = (args.callers, args.keys.max(1));
    let panic_every = args.panic_every.max(1);
    let dir = tempfile::tempdir()?;
    let rt = tokio.block_on(async {
        let rt = counter::open(dir.path(), mode.gears()).await?;
        counter::call_all(&rt, keys, false).await?;
        BenchResult::Ok(rt)
    })?;

    // A backtrace printed per injected panic would measure the panic hook, not the runtime.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&INJECTED_PANIC) {
            default_hook(info);
        }
    }));
    let hot = Arc::new(Hot::default());
    let hammers: Vec<_> = (0..args.hot_callers.max(1))
        .map(|_| tokio.spawn(hammer(rt.clone(), hot.clone(), panic_every)))
        .collect();
    let phase = |panics: bool| {
        let (rt, hot) = (rt.clone(), hot.clone());
        move |window| {
            hot.panics.store(panics, Ordering::Relaxed);
            let what = if panics { "B, hot key panicking" } else { "A" };
            eprintln!("[{workload}] phase {what}: {callers} callers on {keys} other keys");
            let rt = rt.clone();
            let (sample, (), ()) = tokio.block_on(drive_async(
                callers,
                window,
                move |caller, i| {
                    let rt = rt.clone();
                    async move {
                        let k = Rng::new(((caller as u64) << 40) ^ i).below(keys);
                        rt.get::<Counter>(counter::key(k)).add(1).await?;
                        Ok(())
                    }
                },
                || (),
            ))?;
            Ok(sample)
        }
    };
    let (mut without, mut with) = (phase(false), phase(true));
    let measured = interleave(&args.time, &mut [&mut without, &mut with]);
    hot.stop.store(true, Ordering::Relaxed);
    let hammered: Vec<_> = hammers.into_iter().map(|h| tokio.block_on(h)).collect();
    drop(std::panic::take_hook());
    let samples = measured?;
    for outcome in hammered {
        outcome.map_err(|e| format!("a hot caller failed: {e}"))??;
    }
    let hot_value = tokio.block_on(rt.get::<Counter>("hot").get())?;
    let (applied, panicked) = (
        hot.applied.load(Ordering::Relaxed),
        hot.panicked.load(Ordering::Relaxed),
    );
    tokio.block_on(rt.shutdown())?;
    if hot_value != applied {
        return Err(
            format!("the hot key holds {hot_value}, but {applied} calls were applied").into(),
        );
    }

    let a = report.row("other keys, hot key calm (A)", &samples[0]);
    let b = report.row("other keys, hot key panicking (B)", &samples[1]);
    let ratio = report.compare(&b, &a);
    report.target(Target::at_least(
        "other keys' throughput, B / A",
        ratio,
        0.9,
        "x",
    ));
    report.figure("hot-key calls applied", applied as f64, "calls");
    report.figure("hot-key calls panicked (phase B)", panicked as f64, "calls");
    report.note(format!(
        "{} callers on the hot key in both phases; in B one hot call in {panic_every} panics \
         (its turn is rolled back and its caller gets `Panicked`); the injected panics are not \
         printed",
        args.hot_callers.max(1)
    ));
    Ok(report)
}

/// Calls the hot key until told to stop, panicking one call in `panic_every` in phase B.
async fn hammer(rt: Runtime, hot: Arc<Hot>, panic_every: u64) -> BenchResult<()> {
    let counter = rt.get::<Counter>("hot");
    while !hot.stop.load(Ordering::Relaxed) {
        let seq = hot.started.fetch_add(1, Ordering::Relaxed);
        let panic = hot.panics.load(Ordering::Relaxed) && seq.is_multiple_of(panic_every);
        match counter.add_then_panic(1, panic).await {
            Ok(_) if !panic => hot.applied.fetch_add(1, Ordering::Relaxed),
            Err(CallError::Panicked { .. }) if panic => {
                hot.panicked.fetch_add(1, Ordering::Relaxed)
            }
            other => return Err(format!("hot call (panic: {panic}) gave {other:?}").into()),
        };
    }
    Ok(())
}
