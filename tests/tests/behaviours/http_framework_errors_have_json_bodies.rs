//! Every error the server can shape carries the JSON `{"error", "message"}` body: a URI
//! past `MAX_URI_LEN` (414), unknown routes (404), wrong methods (405, with `Allow`), and
//! the plain-text rejections of axum's extractors on routes an embedder adds. What hyper
//! refuses before a request exists (a head past `MAX_HEAD_LEN`, control bytes in a header,
//! a malformed request line) is answered by hyper without a body, the connection closed,
//! and the server keeps serving.

use crate::support;

use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use gears::http::{HttpConfig, MAX_HEAD_LEN, MAX_URI_LEN};
use serde::Deserialize;
use support::{Account, connect, error_name, parse_response, read_response, until_closed, write};

const BOUND: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Search {
    #[allow(dead_code)]
    n: u32,
}

/// Routes of an embedding application, with axum's own extractors.
fn page() -> axum::Router {
    axum::Router::new()
        .route(
            "/page/echo",
            post(
                |axum::Json(value): axum::Json<serde_json::Value>| async move { axum::Json(value) },
            ),
        )
        .route("/page/search", get(|_: Query<Search>| async { "found" }))
        .route(
            "/page/html",
            get(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    axum::response::Html("<h1>not here</h1>"),
                )
            }),
        )
}

async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> support::RawResponse {
    let mut socket = connect(addr).await;
    write(&mut socket, request).await;
    read_response(&mut socket, BOUND).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_json_and_pre_request_errors_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let rt = gears::Runtime::builder()
        .path(dir.path())
        .register::<Account>()
        .open()
        .await
        .unwrap();
    let config = HttpConfig::default().bind(([127, 0, 0, 1], 0).into());
    let server = gears::http::serve_with(rt.clone(), config, page())
        .await
        .unwrap();
    let addr = server.local_addr();

    let json_error = |response: &support::RawResponse, status: u16, name: &str| {
        assert_eq!(response.status, status, "{response:?}");
        assert!(
            response.head.contains("content-type: application/json"),
            "{response:?}"
        );
        assert_eq!(error_name(&response.json()), name, "{response:?}");
    };

    // A URI past the limit (a long key, say): 414, ours.
    let long = format!(
        "GET /account/{}/balance HTTP/1.1\r\nhost: test\r\n\r\n",
        "k".repeat(MAX_URI_LEN)
    );
    json_error(&exchange(addr, long.as_bytes()).await, 414, "uri_too_long");
    // Just within it, the request goes on (to the key check).
    let within = format!(
        "GET /account/{} HTTP/1.1\r\nhost: test\r\n\r\n",
        "k".repeat(MAX_URI_LEN - 20)
    );
    json_error(&exchange(addr, within.as_bytes()).await, 400, "invalid_key");

    json_error(
        &exchange(addr, b"GET /no/such/route/here HTTP/1.1\r\nhost: t\r\n\r\n").await,
        404,
        "not_found",
    );
    let wrong = exchange(addr, b"PUT /page/echo HTTP/1.1\r\nhost: t\r\n\r\n").await;
    json_error(&wrong, 405, "method_not_allowed");
    assert!(wrong.head.contains("allow: post"), "{wrong:?}");

    // The embedder's routes: axum's extractors answer in plain text; the ingress reshapes.
    json_error(
        &exchange(
            addr,
            b"POST /page/echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              content-length: 5\r\n\r\n{nope",
        )
        .await,
        400,
        "bad_request",
    );
    let unsupported = exchange(
        addr,
        b"POST /page/echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    json_error(&unsupported, 415, "unsupported_media_type");
    assert!(
        unsupported.json()["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type"),
        "the message is axum's: {unsupported:?}"
    );
    json_error(
        &exchange(addr, b"GET /page/search?n=many HTTP/1.1\r\nhost: t\r\n\r\n").await,
        400,
        "bad_request",
    );
    // An error page the embedder chose (HTML) is left alone.
    let html = exchange(addr, b"GET /page/html HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(html.status, 404);
    assert!(html.head.contains("content-type: text/html"), "{html:?}");
    assert_eq!(html.body, b"<h1>not here</h1>");
    // And a good request to them still works.
    let echoed = exchange(
        addr,
        b"POST /page/echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
          content-length: 7\r\n\r\n{\"a\":1}",
    )
    .await;
    assert_eq!(
        (echoed.status, echoed.json()),
        (200, serde_json::json!({"a": 1}))
    );

    // Refused by hyper before there is a request: a status, no body, the connection closed.
    let big_header = format!(
        "GET /health HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n",
        "p".repeat(MAX_HEAD_LEN)
    );
    for (request, status) in [
        (big_header.into_bytes(), 431),
        (
            b"GET /health HTTP/1.1\r\nhost: t\r\nidempotency-key: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
    ] {
        let mut socket = connect(addr).await;
        write(&mut socket, &request).await;
        let got = until_closed(&mut socket, BOUND).await;
        match parse_response(&got) {
            Some(response) => {
                assert_eq!(response.status, status, "{response:?}");
                assert!(
                    !response.head.contains("content-type"),
                    "hyper's own answer has no body: {response:?}"
                );
            }
            // Hyper stops reading an oversized head midway and closes with the rest
            // unread, so the kernel may reset the connection before its 431 is read.
            None if status == 431 => {}
            None => panic!("no answer: {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let health = exchange(addr, b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(health.status, 200);

    server.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}
