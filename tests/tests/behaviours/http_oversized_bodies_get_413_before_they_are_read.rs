//! A `Content-Length` past the body limit is answered `413 body_too_large` (JSON) before
//! the body is read: with `Expect: 100-continue` the client gets the 413 and never a
//! `100 Continue`. A chunked body that grows past the limit gets the same 413.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::{Account, connect, error_name, read_response, serve, until_closed, write};

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_past_the_limit_gets_413_and_no_100() {
    let s = serve(HttpConfig::default(), |b| b).await;
    let addr = s.server.local_addr();

    let mut socket = connect(addr).await;
    write(
        &mut socket,
        b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
          content-length: 10485760\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    let response = read_response(&mut socket, BOUND).await;
    assert_eq!(response.status, 413, "{response:?}");
    assert!(response.head.contains("content-type: application/json"));
    let json = response.json();
    assert_eq!(error_name(&json), "body_too_large");
    assert_eq!(json["limit"], 64 * 1024);
    // Nothing else follows (no late `100 Continue`): the server closes the connection.
    let rest = until_closed(&mut socket, BOUND).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // The same without `Expect`: still answered before the body arrives. (No body byte is
    // sent: one left unread when the server closes would make it reset the connection.)
    let mut socket = connect(addr).await;
    write(
        &mut socket,
        b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\ncontent-length: 10485760\r\n\r\n",
    )
    .await;
    let response = read_response(&mut socket, BOUND).await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(error_name(&response.json()), "body_too_large");

    // Within the limit, `Expect: 100-continue` gets its `100 Continue`, then the answer.
    let mut socket = connect(addr).await;
    write(
        &mut socket,
        b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
          content-length: 12\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    let response = read_response(&mut socket, BOUND).await;
    assert_eq!(response.status, 100, "{response:?}");
    write(&mut socket, br#"{"amount":3}"#).await;
    let response = read_response(&mut socket, BOUND).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), serde_json::json!(3));

    assert_eq!(s.rt.get::<Account>("k").balance().await.unwrap(), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_gets_413() {
    let s = serve(HttpConfig::default().body_limit(1024), |b| b).await;
    let mut socket = connect(s.server.local_addr()).await;
    let mut request = b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\n\
                        transfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b' '; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    write(&mut socket, &request).await;
    let response = read_response(&mut socket, BOUND).await;
    assert_eq!(response.status, 413, "{response:?}");
    let json = response.json();
    assert_eq!(error_name(&json), "body_too_large");
    assert_eq!(json["limit"], 1024);
    assert_eq!(s.rt.get::<Account>("k").balance().await.unwrap(), 0);
    s.stop().await;
}
