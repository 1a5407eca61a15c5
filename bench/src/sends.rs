//! Sends: what the outbox costs. C concurrent callers make a sender actor send one message
//! to its receiver (`ctx.send`: the sender's state and the outbox entry commit together; the
//! receiver's turn commits its state and removes the entry), against the same callers making
//! plain durable calls on the same number of keys, in the same run.
//!
//! A send's window is stretched by the time the outbox then takes to drain, so its
//! throughput counts delivery, not just acceptance.

use std::time::{Duration, Instant};

use gears::prelude::*;
use serde::Serialize;
use tokio::runtime::Runtime as Tokio;

use crate::BenchResult;
use crate::counter::{self, Counter};
use crate::durability::Mode;
use crate::measure::{Sample, TimeArgs, drive_async, interleave};
use crate::process;
use crate::report::Report;
use crate::rng::Rng;

/// Flags of `sends`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct SendsArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    pub(crate) callers: usize,
    /// Sender/receiver pairs (and counters for the call baseline) picked at random.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) pairs: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) time: TimeArgs,
}

impl SendsArgs {
    /// Tiny sizes for the smoke run.
    pub(crate) fn tiny() -> Self {
        SendsArgs {
            callers: 8,
            pairs: 100,
            time: TimeArgs::tiny(),
        }
    }
}

/// Sends one message per call to its receiver.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "sender")]
pub(crate) struct Sender {
    sent: u64,
}

#[handlers]
impl Sender {
    /// Counts the send and sends `receive(1)` to `Receiver(target)`, in one atomic turn.
    pub(crate) async fn send_to(&mut self, ctx: &Context, target: String) {
        self.sent += 1;
        ctx.send::<Receiver>(target).receive(1);
    }
}

/// Counts what it received.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "receiver")]
pub(crate) struct Receiver {
    received: u64,
}

#[handlers]
impl Receiver {
    /// Adds `n`.
    pub(crate) async fn receive(&mut self, n: u64) {
        self.received += n;
    }
}

/// Runs `sends`.
pub(crate) fn run(tokio: &Tokio, mode: Mode, args: &SendsArgs) -> BenchResult<Report> {
    let mut report = Report::new("sends", mode, serde_json::to_value(args)?);
    let workload = report.workload;
    let (callers, pairs) = (args.callers, args.pairs.max(1));
    let dir = tempfile::tempdir()?;
    let rt = tokio.block_on(
        Runtime::builder()
            .path(dir.path())
            .durability(mode.gears())
            .register::<Counter>()
            .register::<Sender>()
            .register::<Receiver>()
            .open(),
    )?;
    let samples = interleave(
        &args.time,
        &mut [
            &mut |window| {
                eprintln!("[{workload}] gears calls: {callers} callers on {pairs} counters");
                let rt = rt.clone();
                let (sample, (), ()) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |caller, i| {
                        let rt = rt.clone();
                        async move {
                            let k = Rng::new(((caller as u64) << 40) ^ i).below(pairs);
                            rt.get::<Counter>(counter::key(k)).add(1).await?;
                            Ok(())
                        }
                    },
                    || (),
                ))?;
                Ok(sample)
            },
            &mut |window| {
                eprintln!("[{workload}] gears sends: {callers} callers on {pairs} pairs");
                let caller_rt = rt.clone();
                let (sample, (), ()) = tokio.block_on(drive_async(
                    callers,
                    window,
                    move |caller, i| {
                        let rt = caller_rt.clone();
                        async move {
                            let k = Rng::new(((caller as u64) << 40) ^ i).below(pairs);
                            rt.get::<Sender>(format!("s{k}"))
                                .send_to(format!("r{k}"))
                                .await?;
                            Ok(())
                        }
                    },
                    || (),
                ))?;
                Ok(tokio.block_on(until_delivered(&rt, sample)))
            },
        ],
    )?;
    let stats = rt.stats();
    tokio.block_on(rt.shutdown())?;
    let calls = report.row("gears durable call", &samples[0]);
    let sends = report.row("gears send incl. delivery", &samples[1]);
    report.compare(&sends, &calls);
    report.note(format!(
        "a send is two turns and four writes (sender state + outbox entry, receiver state + \
         entry removal) where a call is one turn and one write; {} sent, {} delivered, {} \
         parked",
        stats.sends, stats.delivered, stats.dead_letters
    ));
    report.note("send latency is until the send is durable in the outbox, not until delivery");
    Ok(report)
}

/// Stretches a send window by the time (and CPU) the outbox takes to drain after it.
async fn until_delivered(rt: &Runtime, mut sample: Sample) -> Sample {
    let started = Instant::now();
    let cpu = process::cpu_time();
    while rt.stats().outbox_backlog > 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    sample.elapsed += started.elapsed();
    sample.cpu += process::cpu_time().saturating_sub(cpu);
    sample
}
