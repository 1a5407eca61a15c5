//! What ties the runtime's spans together across actors.
//!
//! Every call, turn, delivery, timer firing and commit is a `tracing` span at debug level
//! (target `gears::…`): invisible and nearly free unless a subscriber enables them. A call's
//! turn is a child of the call's span even when it runs in another task (the span rides in
//! the envelope). A send's delivery runs long after the turn that sent it ended, so what it
//! keeps of that turn is its OpenTelemetry span context (feature `otel`, in memory: not
//! stored, so a delivery after a restart starts a trace of its own): the delivery's span
//! joins the sender's trace as its child and links to it.

/// The span a message was sent under (feature `otel`; nothing without it). Kept with the
/// outbox entry in memory, never stored: it is not part of the message's identity.
#[derive(Clone, Default)]
pub(crate) struct Cause {
    #[cfg(feature = "otel")]
    context: Option<opentelemetry::trace::SpanContext>,
}

impl Cause {
    /// The span the code runs in now (a turn's), if it is traced.
    pub(crate) fn current() -> Cause {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let span = tracing::Span::current();
            if span.is_none() {
                return Cause::default();
            }
            let context = span.context().span().span_context().clone();
            Cause {
                context: context.is_valid().then_some(context),
            }
        }
        #[cfg(not(feature = "otel"))]
        Cause {}
    }

    /// Makes `span` part of the cause's trace: its child, and linked to it.
    pub(crate) fn adopt(&self, span: &tracing::Span) {
        #[cfg(feature = "otel")]
        if let Some(context) = &self.context {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let parent = opentelemetry::Context::new().with_remote_span_context(context.clone());
            let _ = span.set_parent(parent);
            span.add_link(context.clone());
        }
        #[cfg(not(feature = "otel"))]
        let _ = span;
    }
}

// Not part of what a record is: two records differing only by their cause are the same.
impl PartialEq for Cause {
    fn eq(&self, _: &Cause) -> bool {
        true
    }
}

impl Eq for Cause {}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cause")
    }
}

/// W3C trace context for the HTTP ingress (feature `otel`): the parent a request names in
/// `traceparent`, and the `traceparent` of the span that answered it.
#[cfg(all(feature = "otel", feature = "http"))]
pub(crate) mod w3c {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Headers<'a>(&'a axum::http::HeaderMap);

    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    /// Makes `span` a child of the caller's span named by the request's `traceparent` (and
    /// `tracestate`), if it names one.
    pub(crate) fn accept(span: &tracing::Span, headers: &axum::http::HeaderMap) {
        if headers.contains_key("traceparent") {
            let parent = TraceContextPropagator::new().extract(&Headers(headers));
            let _ = span.set_parent(parent);
        }
    }

    /// The `traceparent` (and `tracestate`) of `span`, to return to the caller.
    pub(crate) fn answer(span: &tracing::Span, headers: &mut axum::http::HeaderMap) {
        let mut fields = std::collections::HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
        for (name, value) in fields {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::try_from(name),
                axum::http::HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}
