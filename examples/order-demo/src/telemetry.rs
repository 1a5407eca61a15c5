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

/// The endpoint variable the OTLP exporter reads (the OpenTelemetry standard's).
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A tracer provider exporting by OTLP (HTTP, protobuf; `{endpoint}/v1/traces`) in batches,
/// if `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `None` if not. Call it inside the Tokio
/// runtime: requests go out on it. Shut the provider down before exiting, to send what is
/// left.
pub fn otlp_provider(
    service: &'static str,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use opentelemetry_otlp::WithHttpConfig as _;
    if std::env::var_os(OTLP_ENDPOINT).is_none() {
        return Ok(None);
    }
    let client = OnTokio {
        runtime: tokio::runtime::Handle::current(),
        client: opentelemetry_http::hyper::HyperClient::with_default_connector(
            std::time::Duration::from_secs(10),
            None,
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// hyper's client on the application's Tokio runtime: the SDK's batch processor exports
/// from a thread of its own, where hyper finds no runtime.
#[derive(Debug)]
struct OnTokio {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnTokio {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}
