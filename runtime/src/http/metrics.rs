//! `GET /metrics`: the runtime's [`Stats`] in the OpenMetrics text format (which Prometheus
//! scrapes), encoded by `prometheus-client`.
//!
//! The runtime keeps its own counters (relaxed atomics, see `metrics.rs`); each scrape takes
//! a snapshot and encodes it as constant metrics of a registry built for that scrape, so the
//! runtime's hot paths never touch a metrics library.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::Stats;

/// The media type of the OpenMetrics text format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `stats` (and the ingress' own counters) as OpenMetrics text.
pub(crate) fn render(stats: &Stats, ingress: &IngressCounts) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("gears");
    let mut counter = |name: &str, help: &str, value: u64| {
        registry.register(name, help, ConstCounter::new(value));
    };
    counter(
        "activations",
        "Activations created (state loaded or defaulted)",
        stats.activations,
    );
    counter(
        "passivations",
        "Activations passivated (idle timeout or the live cap)",
        stats.passivations,
    );
    counter("turns", "Handler turns run", stats.turns);
    counter("panics", "Handler turns that panicked", stats.panics);
    counter(
        "mailbox_rejections",
        "Calls refused with Overloaded (a full mailbox or the activation cap)",
        stats.rejected,
    );
    counter(
        "commit_batches",
        "Commit batches written (one atomic store batch each)",
        stats.commit_batches,
    );
    counter(
        "commit_failed_batches",
        "Commit batches that failed",
        stats.failed_batches,
    );
    counter(
        "journal_syncs",
        "Journal syncs (one per batch that reached the store)",
        stats.journal_syncs,
    );
    counter(
        "journal_fsyncs",
        "Journal persists that fsynced to disk (per batch in Durability::Sync, and at shutdown)",
        stats.journal_fsyncs,
    );
    counter(
        "journal_flushes",
        "Journal persists that only handed the journal to the OS (per batch in Durability::Buffered)",
        stats.journal_flushes,
    );
    counter("commit_writes", "Keys written to the store", stats.writes);
    counter(
        "commit_coalesced_writes",
        "Writes absorbed by a later write of the same key in the same batch",
        stats.coalesced_writes,
    );
    counter(
        "commit_timer_index_writes",
        "Writes that only moved or removed an actor's timer index entry that came due with no timer behind it",
        stats.timer_index_writes,
    );
    counter(
        "outbox_sends",
        "Messages written to the outbox",
        stats.sends,
    );
    counter(
        "outbox_delivered",
        "Outbox messages processed by their target",
        stats.delivered,
    );
    counter(
        "dead_letters",
        "Messages (sends and timer firings) parked in this run",
        stats.dead_letters,
    );
    counter(
        "handler_errors",
        "Delivered sends and timer firings whose handler returned an error (consumed)",
        stats.handler_errors,
    );
    counter(
        "timers_fired",
        "Timer firings processed",
        stats.timers_fired,
    );
    counter(
        "events",
        "Events published by committed turns",
        stats.events,
    );
    counter(
        "idempotency_expired",
        "Outcomes of idempotent requests removed after their retention",
        stats.idempotency_expired,
    );
    counter(
        "routed_requests",
        "Calls sent to the node that serves their actor (cluster), retries included",
        stats.routed_requests,
    );
    counter(
        "routed_served",
        "Calls other nodes routed here that ran here (cluster)",
        stats.routed_served,
    );
    counter(
        "snapshots_written",
        "Shard snapshots this node wrote, each removing the log entries it holds (cluster)",
        stats.snapshots_written,
    );
    counter(
        "snapshots_loaded",
        "Shard snapshots this node loaded to take a shard over (cluster)",
        stats.snapshots_loaded,
    );
    counter(
        "catch_ups",
        "Catch-ups of this node's store with a taken shard's log, one per shard taken (cluster)",
        stats.catch_ups,
    );
    counter(
        "frontier_writes",
        "Writes of the outbox frontier, past which processed messages are forgotten (single node)",
        stats.frontier_writes,
    );
    counter(
        "http_requests",
        "HTTP requests answered by the ingress",
        ingress.requests,
    );
    counter(
        "http_client_errors",
        "HTTP requests answered with a 4xx status",
        ingress.client_errors,
    );
    counter(
        "http_server_errors",
        "HTTP requests answered with a 5xx status",
        ingress.server_errors,
    );
    counter(
        "http_timed_out",
        "HTTP connections closed, or requests refused, for a client too slow or idle \
         (header-read, body-read or idle timeout)",
        ingress.timed_out,
    );

    let mut gauge = |name: &str, help: &str, value: u64| {
        registry.register(name, help, ConstGauge::new(value));
    };
    gauge(
        "http_connections_open",
        "HTTP connections open now (0 when the routes are served by another server)",
        ingress.connections_open,
    );
    gauge(
        "live_activations",
        "Activations currently in memory",
        stats.live_activations,
    );
    gauge(
        "shards_served",
        "Shards this node serves now (all of them on a single node)",
        stats.shards_served,
    );
    gauge(
        "outbox_backlog",
        "Outbox messages durable and not yet processed",
        stats.outbox_backlog,
    );
    gauge(
        "commit_max_batch",
        "Largest commit batch seen, in commit requests (turns)",
        stats.max_batch,
    );

    // Commit latency as a counter of seconds: with `commit_batches` it gives the mean
    // (rate(seconds) / rate(batches)), as a summary's _sum and _count would.
    registry.register_with_unit(
        "commit",
        "Time spent writing and syncing commit batches",
        Unit::Seconds,
        ConstCounter::new(stats.commit_micros as f64 / 1e6),
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// The ingress' own counters, as read for one scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IngressCounts {
    pub(crate) requests: u64,
    pub(crate) client_errors: u64,
    pub(crate) server_errors: u64,
    pub(crate) connections_open: u64,
    pub(crate) timed_out: u64,
}
