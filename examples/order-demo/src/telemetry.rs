//! Traces (feature `otel`): Gears' spans (calls, turns, deliveries, timer firings, commits;
//! debug level, target `gears`) as OpenTelemetry spans, whatever the log filter says.
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::prelude::*;
//! # fn provider() -> opentelemetry_sdk::trace::SdkTracerProvider { unimplemented!() }
//! let provider = provider(); // with the exporter of your choice (OTLP, stdout, in memory)
//! tracing_subscriber::registry()
//!     .with(order_demo::telemetry::layer(provider.tracer("gears")))
//!     .init();
//! ```

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// A layer exporting Gears' spans through `tracer`, filtered on its own (Gears' spans at
/// debug level), so it can sit beside a log layer with a stricter filter.
pub fn layer<S>(tracer: opentelemetry_sdk::trace::SdkTracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target("gears", Level::DEBUG))
}
