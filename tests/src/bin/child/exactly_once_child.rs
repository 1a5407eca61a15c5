//! Child process of `tests/numbered_messages_events_and_timers_arrive_exactly_once_in_order_across_sigkill.rs`:
//! sends numbered messages, publishes numbered events and arms numbered one-shot timers until
//! it is killed, printing every acknowledged number.
//!
//! Usage: `child exactly_once_child <data_dir>`. Expects `Listener("l")` to follow `Stock("p")`
//! already. Prints, one flushed line each, once the call returned:
//! - `send <sender> <n>` after `Numberer(sender).send_next(..)` (senders `s0`..`s3`, each to
//!   `Tally("t<i % 2>")`, one task per sender so its numbers are acknowledged in order);
//! - `event <seq>` after `Stock("p").add(1)` published event `seq`;
//! - `timer <n>` after `Numberer("clock").arm_next(..)` armed timer `n`.
//!
//! Runs until killed.

use std::io::Write;
use std::path::PathBuf;

use gears::Runtime;
use gears_tests::{Numberer, Stock};

use crate::{BoxError, first_end};

/// Senders of numbered messages, one task each.
pub(crate) const SENDERS: usize = 4;
/// How long after it is armed a timer is due, in milliseconds.
const TIMER_DELAY_MS: u64 = 30;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child exactly_once_child <data_dir>";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let rt = gears_tests::open(&dir).await;
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let rt = rt.clone();
        tasks.spawn(async move {
            let sender = format!("s{s}");
            let target = format!("t{}", s % 2);
            loop {
                let n = rt
                    .get::<Numberer>(&sender)
                    .send_next(target.clone())
                    .await?;
                say(&format!("send {sender} {n}"))?;
            }
        });
    }
    tasks.spawn(publish(rt.clone()));
    tasks.spawn(arm(rt.clone()));
    // The tasks only end on an error: report it.
    first_end(tasks).await
}

/// Publishes numbered events; returns only on an error.
async fn publish(rt: Runtime) -> Result<(), BoxError> {
    loop {
        let seq = rt.get::<Stock>("p").add(1).await?;
        say(&format!("event {seq}"))?;
    }
}

/// Arms numbered timers; returns only on an error.
async fn arm(rt: Runtime) -> Result<(), BoxError> {
    loop {
        let n = rt.get::<Numberer>("clock").arm_next(TIMER_DELAY_MS).await?;
        say(&format!("timer {n}"))?;
    }
}

/// One locked write + flush per line, so lines never interleave and the acknowledgement is
/// in the pipe before the task makes its next call.
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
