//! How results are shown: the audit on its own ([`Audit`]'s `Display`) and the report at the
//! end of a run ([`RunReport`]).

use std::fmt;
use std::path::Path;

use gears::{Durability, Stats};

use crate::audit::Audit;
use crate::order::Status;
use crate::simulation::{Drained, Placement, Workload};

/// Everything a run's final report shows.
#[derive(Debug)]
pub struct RunReport<'a> {
    /// The store folder.
    pub dir: &'a Path,
    /// Whether the store was wiped first.
    pub fresh: bool,
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// The workload run.
    pub workload: &'a Workload,
    /// What placing the orders did.
    pub placement: &'a Placement,
    /// How the wait for pending work ended.
    pub drained: Drained,
    /// The runtime's counters at the end.
    pub stats: Stats,
    /// The audit.
    pub audit: &'a Audit,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl fmt::Display for RunReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, p, s) = (self.workload, self.placement, &self.stats);
        let durability = match self.durability {
            Durability::Buffered => "buffered",
            _ => "sync (fsync per batch)",
        };
        writeln!(
            f,
            "Gears order demo · store {}{} · durability {durability}",
            self.dir.display(),
            if self.fresh { " (fresh)" } else { "" }
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "placed {} orders for {} customers over {} SKUs, {} at a time, in {:.2} s: \
             {:.0} orders/s",
            p.acked.len(),
            w.customers,
            w.skus,
            w.concurrency,
            p.elapsed.as_secs_f64(),
            p.throughput()
        )?;
        writeln!(
            f,
            "  acknowledged: {} shipping, {} backordered; {} failed, {} calls retried",
            p.acked_with(Status::Shipping),
            p.acked_with(Status::Backordered),
            p.failed.len(),
            p.retries
        )?;
        let l = &p.latency;
        writeln!(
            f,
            "  latency of place(): p50 {:.1} ms · p90 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
            ms(l.value_at_quantile(0.5)),
            ms(l.value_at_quantile(0.9)),
            ms(l.value_at_quantile(0.99)),
            ms(l.max())
        )?;
        writeln!(f, "  restocks: {} ({} units)", p.restocks.0, p.restocks.1)?;
        let d = &self.drained;
        writeln!(
            f,
            "  then waited {:.1} s for backorders to ship or time out{}",
            d.waited.as_secs_f64(),
            if d.is_complete() {
                String::new()
            } else {
                format!(
                    " (gave up: {} still backordered, {} holds)",
                    d.backordered, d.holds
                )
            }
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "runtime: {} activations ({} live, {} passivated) · {} turns · {} panics · {} \
             rejected",
            s.activations, s.live_activations, s.passivations, s.turns, s.panics, s.rejected
        )?;
        let per_batch = s.writes as f64 / s.commit_batches.max(1) as f64;
        writeln!(
            f,
            "  {} commit batches ({per_batch:.1} writes each, max {}) · {} journal syncs · \
             {:.1} s committing",
            s.commit_batches,
            s.max_batch,
            s.journal_syncs,
            s.commit_micros as f64 / 1e6
        )?;
        writeln!(
            f,
            "  {} sends ({} delivered, {} dead letters) · {} timers fired · {} events",
            s.sends, s.delivered, s.dead_letters, s.timers_fired, s.events
        )?;
        writeln!(f)?;
        write!(f, "{}", self.audit)
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, t, n) = (&self.orders, &self.stock, &self.notices);
        writeln!(
            f,
            "orders:  {} placed: {} shipping ({} after a backorder) · {} backordered · {} \
             cancelled · {} order numbers allocated by the simulation",
            o.placed,
            o.shipping,
            o.shipped_after_backorder,
            o.backordered,
            o.cancelled,
            o.allocated
        )?;
        writeln!(
            f,
            "stock:   initial {} + restocked {} = available {} + reserved {} + shipped {}",
            t.initial, t.restocked, t.available, t.reserved, t.shipped
        )?;
        writeln!(
            f,
            "notices: {} shipped · {} backordered · {} back in stock · {} cancelled",
            n.shipped, n.backordered, n.back_in_stock, n.cancelled
        )?;
        if self.holds_pending > 0 {
            writeln!(
                f,
                "pending: {} holds of unfinished orders, released when they expire",
                self.holds_pending
            )?;
        }
        if self.acked_checked == 0 {
            writeln!(
                f,
                "acks:    none recorded, so none checked: this audit says nothing about \
                 orders acknowledged to their callers"
            )?;
        } else {
            writeln!(
                f,
                "acks:    {} acknowledged orders checked",
                self.acked_checked
            )?;
        }
        if self.passed() {
            writeln!(
                f,
                "audit:   PASSED · {} items conserved, none negative · {} orders consistent \
                 with their items{} · {} inboxes{}",
                self.items,
                o.placed,
                if self.quiescent {
                    ", no holds left"
                } else {
                    ""
                },
                self.customers,
                if self.acked_checked == 0 {
                    String::new()
                } else {
                    format!(" · {} acknowledged orders present", self.acked_checked)
                }
            )
        } else {
            writeln!(f, "audit:   FAILED · {} violations:", self.violation_count)?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            if self.violation_count > self.violations.len() {
                writeln!(
                    f,
                    "  ... and {} more",
                    self.violation_count - self.violations.len()
                )?;
            }
            Ok(())
        }
    }
}
