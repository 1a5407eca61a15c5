//! The runtime's counters over a measured window, with the averages that explain a result
//! (writes per commit batch, commit time per batch, how busy the committer was).

use std::time::Duration;

use gears::Stats;
use serde::Serialize;

/// [`Stats`] differences between the start and the end of a window, plus derived averages.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GearsStats {
    /// Handler turns run.
    pub(crate) turns: u64,
    /// Activations created.
    pub(crate) activations: u64,
    /// Activations passivated.
    pub(crate) passivations: u64,
    /// Activations in memory at the end.
    pub(crate) live_activations: u64,
    /// Calls refused with `Overloaded`.
    pub(crate) rejected: u64,
    /// Handler panics.
    pub(crate) panics: u64,
    /// Commit batches.
    pub(crate) commit_batches: u64,
    /// Commit batches that failed.
    pub(crate) failed_batches: u64,
    /// Journal syncs.
    pub(crate) journal_syncs: u64,
    /// Keys written to the store.
    pub(crate) writes: u64,
    /// Writes absorbed by a later write of the same key in the same batch.
    pub(crate) coalesced_writes: u64,
    /// Largest batch since the runtime opened (not a difference: the counter is a maximum).
    pub(crate) max_batch: u64,
    /// Time spent writing and syncing batches.
    pub(crate) commit_micros: u64,
    /// Keys written per batch: what the store sees, and the `B` of the raw batch baseline.
    pub(crate) writes_per_batch: f64,
    /// Writes submitted per batch, before coalescing.
    pub(crate) submitted_per_batch: f64,
    /// Mean time to write and sync one batch.
    pub(crate) commit_us_per_batch: f64,
    /// Fraction of the window the committer spent writing and syncing.
    pub(crate) committer_busy: f64,
}

impl GearsStats {
    /// The counters summed over measured windows, each given as the counters at its start
    /// and at its end; `window` is their total length.
    pub(crate) fn over(windows: &[(Stats, Stats)], window: Duration) -> Self {
        let sum = |f: fn(&Stats) -> u64| -> u64 {
            windows
                .iter()
                .map(|(from, to)| f(to).saturating_sub(f(from)))
                .sum()
        };
        let last = windows.last().map(|(_, to)| *to).unwrap_or_default();
        let batches = sum(|s| s.commit_batches);
        let writes = sum(|s| s.writes);
        let coalesced = sum(|s| s.coalesced_writes);
        let commit_micros = sum(|s| s.commit_micros);
        let per_batch = |n: u64| {
            if batches == 0 {
                0.0
            } else {
                n as f64 / batches as f64
            }
        };
        GearsStats {
            turns: sum(|s| s.turns),
            activations: sum(|s| s.activations),
            passivations: sum(|s| s.passivations),
            live_activations: last.live_activations,
            rejected: sum(|s| s.rejected),
            panics: sum(|s| s.panics),
            commit_batches: batches,
            failed_batches: sum(|s| s.failed_batches),
            journal_syncs: sum(|s| s.journal_syncs),
            writes,
            coalesced_writes: coalesced,
            max_batch: last.max_batch,
            commit_micros,
            writes_per_batch: per_batch(writes),
            submitted_per_batch: per_batch(writes + coalesced),
            commit_us_per_batch: per_batch(commit_micros),
            committer_busy: commit_micros as f64 / (window.as_secs_f64() * 1e6).max(1.0),
        }
    }

    /// One line for the text report.
    pub(crate) fn summary(&self) -> String {
        format!(
            "turns {} · batches {} · writes {} (+{} coalesced) · {:.1} writes/batch \
             ({:.1} submitted) · max batch {} · {:.0} µs/batch commit · committer busy {:.0} % \
             · activations {} · live {} · rejected {}",
            self.turns,
            self.commit_batches,
            self.writes,
            self.coalesced_writes,
            self.writes_per_batch,
            self.submitted_per_batch,
            self.max_batch,
            self.commit_us_per_batch,
            self.committer_busy * 100.0,
            self.activations,
            self.live_activations,
            self.rejected
        )
    }
}
