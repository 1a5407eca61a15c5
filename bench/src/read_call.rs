//! `read-call`: a read-only call on an active actor, against a bare ractor call, a tokio
//! mpsc + oneshot round trip doing the same work, and a task spawned per call.

use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter};
use crate::durability::Mode;
use crate::echo::{self, RactorEcho};
use crate::measure::{TimeArgs, drive_async, interleave};
use crate::report::{Report, Target};
use crate::stats::GearsStats;

/// Flags of `read-call`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct ReadCallArgs {
    /// Concurrent callers, all on the same actor (1 measures pure round-trip latency).
    #[arg(long, default_value_t = 1)]
    pub(crate) callers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl ReadCallArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        ReadCallArgs {
            callers: 1,
            time: TimeArgs::tiny(),
        }
    }
}

/// Runs `read-call`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &ReadCallArgs) -> BenchResult<Report> {
    let mut report = Report::new("read-call", mode, serde_json::to_value(args)?);
    let callers = args.callers;
    let dir = tempfile::tempdir()?;
    let (rt, handle, ractor, channel) = tokio.block_on(async {
        let rt = counter::open(dir.path(), mode.gears()).await?;
        let handle = rt.get::<Counter>(counter::key(0));
        handle.add(1).await?;
        BenchResult::Ok((
            rt,
            handle,
            RactorEcho::spawn().await?,
            echo::spawn_tokio_echo(),
        ))
    })?;

    let mut marks = Vec::new();
    let samples = interleave(
        &args.time,
        &mut [
            &mut |window| {
                eprintln!("[read-call] gears");
                let handle = handle.clone();
                let (sample, from, to) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |_, _| {
                        let handle = handle.clone();
                        async move {
                            handle.get().await?;
                            Ok(())
                        }
                    },
                    || rt.stats(),
                ))?;
                marks.push((from, to));
                Ok(sample)
            },
            &mut |window| {
                eprintln!("[read-call] bare ractor call");
                let actor = ractor.actor();
                let (sample, (), ()) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |_, _| {
                        let actor = actor.clone();
                        async move {
                            echo::ractor_call(&actor).await?;
                            Ok(())
                        }
                    },
                    || (),
                ))?;
                Ok(sample)
            },
            &mut |window| {
                eprintln!("[read-call] tokio mpsc + oneshot");
                let tx = channel.clone();
                let (sample, (), ()) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |_, _| {
                        let tx = tx.clone();
                        async move {
                            echo::tokio_call(&tx).await?;
                            Ok(())
                        }
                    },
                    || (),
                ))?;
                Ok(sample)
            },
            &mut |window| {
                eprintln!("[read-call] tokio spawn per call + oneshot");
                let (sample, (), ()) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |_, i| async move {
                        echo::spawned_call(i).await?;
                        Ok(())
                    },
                    || (),
                ))?;
                Ok(sample)
            },
        ],
    )?;
    tokio.block_on(async {
        ractor.stop().await?;
        rt.shutdown().await?;
        BenchResult::Ok(())
    })?;

    report.gears_stats = Some(GearsStats::over(&marks, samples[0].elapsed));
    let gears = report.row("gears read call", &samples[0]);
    let ractor = report.row("bare ractor call", &samples[1]);
    let channel = report.row("tokio mpsc + oneshot", &samples[2]);
    let spawned = report.row("tokio spawn per call + oneshot", &samples[3]);
    report.compare(&gears, &ractor);
    report.compare(&gears, &channel);
    report.compare(&gears, &spawned);
    report.note(
        "a call that finds its Gears actor idle runs the turn in the caller's task, so no task \
         is woken; `tokio spawn per call` shows what a task per call would cost instead",
    );
    report.target(Target::at_most(
        "latency p50 / bare ractor call p50",
        gears.p50_us / ractor.p50_us,
        1.3,
        "x",
    ));
    Ok(report)
}
