#![cfg(all(feature = "otel", feature = "http"))]
//! Traces across actors (feature `otel`): an order placed over HTTP with a W3C
//! `traceparent` yields one trace, exported through `tracing-opentelemetry` to the SDK's
//! in-memory exporter: the HTTP request under the caller's span, the order's `place` turn,
//! the calls that hold each line and the items' `reserve` turns, the items' `commit` turns
//! (sends, delivered later: they join the trace and link to the turn that sent them), the
//! commits that made each turn durable, and the customer's notice. The answer carries the
//! request's `traceparent`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use order_demo::serve::ServeOptions;
use order_demo::{Customer, InventoryItem, Notice, StoreOptions};
use tracing_subscriber::prelude::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The spans named `name` whose attributes include every `(key, value)` of `with`.
fn find<'a>(spans: &[&'a SpanData], name: &str, with: &[(&str, &str)]) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| attribute(s, k).as_deref() == Some(*v))
        })
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_over_http_is_one_trace_across_its_actors() {
    // One global subscriber for the process: this file holds one test.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(order_demo::telemetry::layer(provider.tracer("gears")))
        .init();

    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    for sku in ["sku-1", "sku-2"] {
        rt.get::<InventoryItem>(sku).seed(5).await.unwrap();
    }
    let live = order_demo::serve::start(&rt, ServeOptions::loopback())
        .await
        .unwrap();
    let base = format!("http://{}", live.local_addr());

    let response = reqwest::Client::new()
        .post(format!("{base}/order/o-traced/place"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({
            "customer": "c-traced",
            "lines": [{"sku": "sku-1", "qty": 1}, {"sku": "sku-2", "qty": 2}],
            "policy": {"hold_ms": 60000, "wait_ms": 60000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered = response
        .headers()
        .get("traceparent")
        .expect("the answer carries traceparent")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")),
        "{answered}"
    );
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        "Shipping"
    );

    // The notice and the items' commits are sends: wait until they were delivered.
    let customer = rt.get::<Customer>("c-traced");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inbox = customer.inbox().await.unwrap();
        let shipped_items = rt
            .get::<InventoryItem>("sku-2")
            .level()
            .await
            .unwrap()
            .shipped;
        if matches!(&inbox.recent[..], [Notice::Shipped { .. }]) && shipped_items == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {inbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Spans end once the writes they wait for are durable: a shutdown settles every write
    // (and drops what waited for them), so every span of the order has ended after it.
    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
    provider.force_flush().unwrap();
    let all = exporter.get_finished_spans().unwrap();
    let spans: Vec<&SpanData> = all
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == TRACE_ID)
        .collect();
    let names: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {}.{}",
                s.name,
                attribute(s, "actor").unwrap_or_default(),
                attribute(s, "handler").unwrap_or_default()
            )
        })
        .collect();

    // The request, under the caller's span.
    let http = find(&spans, "http", &[("actor", "order"), ("handler", "place")]);
    assert_eq!(http.len(), 1, "{names:#?}");
    assert_eq!(http[0].parent_span_id.to_string(), CALLER_SPAN);
    assert!(answered.contains(&http[0].span_context.span_id().to_string()));
    // The order's turn, the holds it asked for, the items' commits, the notice.
    let place = find(&spans, "turn", &[("actor", "order"), ("handler", "place")]);
    assert_eq!(place.len(), 1, "{names:#?}");
    for sku in ["sku-1", "sku-2"] {
        let key = [("actor", "inventory_item"), ("key", sku)];
        let reserve = find(&spans, "turn", &[key[0], key[1], ("handler", "reserve")]);
        assert_eq!(reserve.len(), 1, "{sku}: {names:#?}");
        let call = find(&spans, "call", &[key[0], key[1], ("handler", "reserve")]);
        assert_eq!(call.len(), 1, "{sku}: {names:#?}");
        assert_eq!(reserve[0].parent_span_id, call[0].span_context.span_id());
        assert_eq!(call[0].parent_span_id, place[0].span_context.span_id());
        let commit = find(&spans, "turn", &[key[0], key[1], ("handler", "commit")]);
        assert_eq!(commit.len(), 1, "{sku}: {names:#?}");
        // A delivered send: the child of the turn that sent it, and linked to it.
        assert_eq!(commit[0].parent_span_id, place[0].span_context.span_id());
        assert!(
            commit[0]
                .links
                .iter()
                .any(|l| l.span_context.span_id() == place[0].span_context.span_id()),
            "{sku}: the delivery links to the sender"
        );
        assert_eq!(attribute(commit[0], "cause").as_deref(), Some("send"));
        let durable = find(&spans, "commit", &[key[0], key[1]]);
        assert!(!durable.is_empty(), "{sku}: the item's writes: {names:#?}");
    }
    let notice = find(
        &spans,
        "turn",
        &[("actor", "customer"), ("handler", "notify")],
    );
    assert_eq!(notice.len(), 1, "{names:#?}");
    assert_eq!(notice[0].parent_span_id, place[0].span_context.span_id());
    // One tree: every span's parent is in the trace, but the request's (the caller's).
    for span in &spans {
        let parent = span.parent_span_id;
        assert!(
            parent.to_string() == CALLER_SPAN
                || spans.iter().any(|s| s.span_context.span_id() == parent),
            "{} has a parent outside the trace: {names:#?}",
            span.name
        );
    }
}
