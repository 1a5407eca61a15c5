#![cfg(all(feature = "otel", feature = "http"))]
//! `order-demo serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports Gears' spans by OTLP
//! (HTTP, protobuf) to that endpoint: a collector in this test receives them, and an order
//! placed with a `traceparent` arrives as spans of that trace (the request, the order's
//! turn, the items' turns), with the service name `order-demo`. Sent in batches; the last
//! ones when it stops on SIGTERM.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use gears_tests::child::spawn_until_line;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

const DEMO: &str = env!("CARGO_BIN_EXE_order-demo");
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_an_orders_spans_to_the_otlp_endpoint() {
    // The collector: keeps every export request.
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let kept = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let media = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                kept.lock().unwrap().push((media, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut serve = tokio::process::Command::new(DEMO);
    serve
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--no-simulation",
            "--fresh",
        ])
        .arg("--data")
        .arg(dir.path().join("store"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    let serve = spawn_until_line(serve, "live page: ").await;
    let base = serve.rest.trim_end_matches('/').to_string();

    let client = reqwest::Client::new();
    let restocked = client
        .post(format!("{base}/inventory_item/sku-otlp/restock"))
        .json(&serde_json::json!({"qty": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), 200);
    let placed = client
        .post(format!("{base}/order/o-otlp/place"))
        .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({
            "customer": "c-otlp",
            "lines": [{"sku": "sku-otlp", "qty": 1}],
            "policy": {"hold_ms": 60000, "wait_ms": 60000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200);

    let exit = serve.terminate(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit:?}");

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "nothing was exported");
    let mut names = Vec::new();
    let mut services = Vec::new();
    for (media, body) in &received {
        assert_eq!(media, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            for kv in resource.resource.iter().flat_map(|r| &r.attributes) {
                if kv.key == "service.name" {
                    services.push(format!("{:?}", kv.value));
                }
            }
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    if trace == TRACE_ID {
                        let handler = span
                            .attributes
                            .iter()
                            .find(|kv| kv.key == "handler")
                            .map(|kv| format!("{:?}", kv.value))
                            .unwrap_or_default();
                        names.push(format!("{} {handler}", span.name));
                    }
                }
            }
        }
    }
    assert!(
        services.iter().all(|s| s.contains("order-demo")),
        "{services:?}"
    );
    for expected in ["http", "turn"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(expected) && n.contains("place")),
            "no `{expected}` span of place in the trace: {names:#?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("turn") && n.contains("reserve")),
        "{names:#?}"
    );
}
