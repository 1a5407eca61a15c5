//! Child process of the cluster ownership tests: one cluster member that reports, every few
//! milliseconds, which shards it would serve a call for right now.
//!
//! Usage: `child cluster_node <nats urls, comma-separated> <node id> <lease ms> <replicas>`.
//! Prints `joined <node id>` once it is a member, then `serves <unix ms> <bitmap>` per sample
//! (the 256 shards as 64 hex digits, shard 0 in the first digit's high bit), taken right after
//! asking the placement (a sample that took longer than 50 ms, paused in between, is not
//! printed). On SIGTERM it leaves the cluster (handing its shards over) and
//! prints `left <shards it held>` before exiting 0.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gears::cluster::Node;
use gears::{Place, Placement, SHARDS};
use gears_tests::child::cluster_config;

use crate::BoxError;

/// How often the placement is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Longest a sample may take from asking the placement to reading the clock; a longer one
/// (the process was paused in between) is dropped, as its time would be later than its
/// answer.
const MAX_SAMPLE_SPAN: Duration = Duration::from_millis(50);

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let config = cluster_config(&mut args, "ownership")?;
    let member = Node::join(config).await?;
    let placement = member.placement();
    let mut out = std::io::stdout().lock();
    writeln!(out, "joined {}", member.id())?;
    out.flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = sample.tick() => {
                let asked = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
                let mut bits = [0u8; SHARDS as usize / 8];
                for shard in 0..SHARDS {
                    if matches!(placement.place(shard), Place::Local { .. }) {
                        bits[usize::from(shard / 8)] |= 0x80 >> (shard % 8);
                    }
                }
                let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
                if at.saturating_sub(asked) > MAX_SAMPLE_SPAN.as_millis() {
                    // Stopped (SIGSTOP) or starved between asking and the clock: what the
                    // placement said belongs to before, not to `at`. Not reported.
                    continue;
                }
                let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(out, "serves {at} {hex}")?;
                out.flush()?;
            }
        }
    }
    let held = placement.served().len();
    member.leave().await?;
    writeln!(out, "left {held}")?;
    out.flush()?;
    Ok(())
}
