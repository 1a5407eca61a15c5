//! What a workload reports: measured rows, single figures, ratios to baselines of the same
//! run, targets met or missed, and the runtime's counters; printed as text or JSON.

use serde::Serialize;

use crate::durability::Mode;
use crate::measure::Sample;
use crate::stats::GearsStats;

/// One workload's results.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The workload's command name.
    pub(crate) workload: &'static str,
    /// `sync` or `buffered`.
    pub(crate) durability: &'static str,
    /// The parameters it ran with.
    pub(crate) params: serde_json::Value,
    /// Timed runs: Gears and its baselines.
    pub(crate) rows: Vec<Row>,
    /// Single figures (bytes, milliseconds) that are not rates.
    pub(crate) figures: Vec<Figure>,
    /// Gears relative to each baseline.
    pub(crate) ratios: Vec<Ratio>,
    /// The targets, met or missed.
    pub(crate) targets: Vec<Target>,
    /// The runtime's counters over the measured window of the main Gears row.
    pub(crate) gears_stats: Option<GearsStats>,
    /// What a reader needs to interpret the numbers.
    pub(crate) notes: Vec<String>,
}

/// One timed run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// What ran (`gears`, `raw fjall batch+sync (B=64)`, ...).
    pub(crate) name: String,
    /// Operations completed in the measured window.
    pub(crate) ops: u64,
    /// Length of the measured window.
    pub(crate) seconds: f64,
    /// Operations per second.
    pub(crate) ops_per_sec: f64,
    /// Median latency.
    pub(crate) p50_us: f64,
    /// 99th percentile latency.
    pub(crate) p99_us: f64,
    /// Process CPU time per operation (all threads: callers, workers, committer).
    pub(crate) cpu_us_per_op: f64,
}

impl Row {
    fn new(name: impl Into<String>, sample: &Sample) -> Self {
        Row {
            name: name.into(),
            ops: sample.ops,
            seconds: sample.elapsed.as_secs_f64(),
            ops_per_sec: sample.throughput(),
            p50_us: sample.latencies.quantile_us(0.5),
            p99_us: sample.latencies.quantile_us(0.99),
            cpu_us_per_op: sample.cpu_us_per_op(),
        }
    }
}

/// A single measured value.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// What was measured.
    pub(crate) name: String,
    /// Its value, in `unit`.
    pub(crate) value: f64,
    /// `bytes`, `ms`, ...
    pub(crate) unit: &'static str,
}

/// Gears divided by a baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    /// `<gears measure> / <baseline measure>`.
    pub(crate) name: String,
    /// The quotient (`×`).
    pub(crate) value: f64,
}

/// One of the targets.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    /// What is compared.
    pub(crate) name: String,
    /// The goal, e.g. `>= 0.7x`.
    pub(crate) goal: String,
    /// What this run measured, in the goal's unit.
    pub(crate) measured: f64,
    /// Whether the goal is reached.
    pub(crate) met: bool,
}

impl Target {
    /// Met when `measured >= goal`.
    pub(crate) fn at_least(name: &str, measured: f64, goal: f64, unit: &str) -> Self {
        Target {
            name: name.to_string(),
            goal: format!(">= {goal}{unit}"),
            measured,
            met: measured >= goal,
        }
    }

    /// Met when `measured <= goal`.
    pub(crate) fn at_most(name: &str, measured: f64, goal: f64, unit: &str) -> Self {
        Target {
            name: name.to_string(),
            goal: format!("<= {goal}{unit}"),
            measured,
            met: measured <= goal,
        }
    }
}

impl Report {
    /// An empty report of `workload`.
    pub(crate) fn new(workload: &'static str, mode: Mode, params: serde_json::Value) -> Self {
        let mut notes = Vec::new();
        if mode != Mode::Sync {
            notes.push("the issue's targets are set for `sync` durability".to_string());
        }
        Report {
            workload,
            durability: mode.name(),
            params,
            rows: Vec::new(),
            figures: Vec::new(),
            ratios: Vec::new(),
            targets: Vec::new(),
            gears_stats: None,
            notes,
        }
    }

    /// Adds a timed run and returns it (to compute ratios with).
    pub(crate) fn row(&mut self, name: impl Into<String>, sample: &Sample) -> Row {
        let row = Row::new(name, sample);
        self.rows.push(row.clone());
        row
    }

    /// Adds a single figure.
    pub(crate) fn figure(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
        });
    }

    /// Adds a ratio and returns its value.
    pub(crate) fn ratio(&mut self, name: impl Into<String>, value: f64) -> f64 {
        self.ratios.push(Ratio {
            name: name.into(),
            value,
        });
        value
    }

    /// Adds the throughput ratio and the p50/p99 latency ratios of `gears` to `baseline`;
    /// returns the throughput ratio.
    pub(crate) fn compare(&mut self, gears: &Row, baseline: &Row) -> f64 {
        let b = &baseline.name;
        self.ratio(
            format!("{} latency p50 / {b} p50", gears.name),
            gears.p50_us / baseline.p50_us,
        );
        self.ratio(
            format!("{} latency p99 / {b} p99", gears.name),
            gears.p99_us / baseline.p99_us,
        );
        self.ratio(
            format!("{} throughput / {b}", gears.name),
            gears.ops_per_sec / baseline.ops_per_sec,
        )
    }

    /// Adds a target.
    pub(crate) fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Adds a note.
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// True if some timed run completed nothing (a broken workload, not a slow one).
    pub(crate) fn has_empty_row(&self) -> bool {
        self.rows.iter().any(|r| r.ops == 0)
    }

    /// Prints the report for a human.
    pub(crate) fn print_text(&self) {
        println!(
            "\n== {} (durability {}) {}",
            self.workload, self.durability, self.params
        );
        if !self.rows.is_empty() {
            println!(
                "  {:<44} {:>10} {:>12} {:>10} {:>10} {:>9}",
                "run", "ops", "ops/s", "p50 µs", "p99 µs", "CPU µs/op"
            );
            for r in &self.rows {
                println!(
                    "  {:<44} {:>10} {:>12.0} {:>10.1} {:>10.1} {:>9.1}",
                    r.name, r.ops, r.ops_per_sec, r.p50_us, r.p99_us, r.cpu_us_per_op
                );
            }
        }
        for f in &self.figures {
            println!("  {:<66} {:>12.1} {}", f.name, f.value, f.unit);
        }
        for r in &self.ratios {
            println!("  ratio {:<60} {:>10.2}×", r.name, r.value);
        }
        for t in &self.targets {
            let verdict = if t.met { "met" } else { "MISSED" };
            println!(
                "  target {:<44} {:>12} measured {:>9.2}  {verdict}",
                t.name, t.goal, t.measured
            );
        }
        if let Some(s) = &self.gears_stats {
            println!("  gears stats: {}", s.summary());
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }
}
