//! Slow clients cannot hold connections: headers that never finish (slowloris, silent or
//! trickling) are cut at the header-read timeout, bodies that never end at the body-read
//! timeout (`408 body_timeout`), connections where nothing moves at the idle timeout; a
//! quiet event stream outlives all three.

use crate::support;

use std::time::Duration;

use futures::future::join_all;
use gears::http::HttpConfig;
use support::{
    Account, connect, error_name, parse_response, read_response, serve, until_closed, write,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections of each kind opened at once.
const N: usize = 20;
/// Short timeouts, so each test is quick; not shorter, so a loaded machine's stalls (which
/// hold up the test's own scrapes and a stream's keep-alive comments too) stay well below.
const SHORT: Duration = Duration::from_secs(1);
/// Timeouts a test does not exercise.
const LONG: Duration = Duration::from_secs(120);
/// How long a connection may stay open before the test fails: far above `SHORT`.
const BOUND: Duration = Duration::from_secs(10);

/// The `/metrics` sample `name` (a counter's or a gauge's value).
async fn metric(s: &support::Served, name: &str) -> u64 {
    // On a connection of its own, closed after the answer: a kept-alive one left waiting
    // would itself be cut by the short timeouts, and counted.
    let response = s
        .client
        .get(s.url("/metrics"))
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The server counted `N` connections cut by a timeout, and (eventually, as their tasks
/// end) holds none of them: the scrape's own connection is the one open.
/// (The counts are kept by each connection's task as it ends, which may be just after the
/// client saw the connection close.)
async fn all_timed_out_and_gone(s: &support::Served) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let timed_out = metric(s, "gears_http_timed_out_total").await;
        let open = metric(s, "gears_http_connections_open").await;
        if (timed_out, open) == (N as u64, 1) {
            return;
        }
        assert!(timed_out <= N as u64, "{timed_out} timed out");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{timed_out} timed out, {open} open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes one byte every 100 ms until the server closes the connection.
async fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, byte: &'static [u8]) {
    while writer.write_all(byte).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_are_cut_at_the_header_timeout() {
    let config = HttpConfig::default()
        .header_read_timeout(SHORT)
        .body_read_timeout(LONG)
        .idle_timeout(LONG);
    let s = serve(config, |b| b).await;
    let addr = s.server.local_addr();

    let slowloris = (0..N).map(|i| async move {
        let mut socket = connect(addr).await;
        write(
            &mut socket,
            b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\ncontent-length: 12\r\n",
        )
        .await;
        let got = if i % 2 == 0 {
            // Silent after a partial head.
            until_closed(&mut socket, BOUND).await
        } else {
            // A header byte every 100 ms: bytes keep moving, the head never ends.
            let (mut reader, writer) = socket.into_split();
            let writing = tokio::spawn(trickle(writer, b"x"));
            let mut got = Vec::new();
            let read = tokio::time::timeout(BOUND, reader.read_to_end(&mut got)).await;
            assert!(read.is_ok(), "a trickling slowloris was kept for {BOUND:?}");
            writing.abort();
            got
        };
        // Closed without running anything (hyper answers nothing on a header timeout).
        assert!(
            !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 2"),
            "{got:?}"
        );
    });
    join_all(slowloris).await;

    all_timed_out_and_gone(&s).await;
    assert_eq!(s.rt.get::<Account>("k").balance().await.unwrap(), 0);
    let (status, _, _) = s.get("/health").await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_end_are_cut_at_the_body_timeout() {
    let config = HttpConfig::default()
        .header_read_timeout(LONG)
        .body_read_timeout(SHORT)
        .idle_timeout(LONG);
    let s = serve(config, |b| b).await;
    let addr = s.server.local_addr();

    let endless = (0..N).map(|i| async move {
        let mut socket = connect(addr).await;
        write(
            &mut socket,
            b"POST /account/k/deposit HTTP/1.1\r\nhost: test\r\n\
              content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
              1\r\n{\r\n",
        )
        .await;
        if i % 2 == 0 {
            // Silent after the first chunk: answered 408, then closed.
            let got = until_closed(&mut socket, BOUND).await;
            let response = parse_response(&got)
                .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&got)));
            assert_eq!(response.status, 408, "{response:?}");
            assert_eq!(error_name(&response.json()), "body_timeout");
        } else {
            // A chunk every 100 ms: the deadline holds however steady the trickle. The
            // server closes with our bytes unread, so the kernel may reset the connection
            // before its answer is read: only require that it is not a success.
            let (mut reader, writer) = socket.into_split();
            let writing = tokio::spawn(trickle(writer, b"1\r\n \r\n"));
            let mut got = Vec::new();
            let read = tokio::time::timeout(BOUND, async {
                let mut buffer = [0u8; 4096];
                while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                    got.extend_from_slice(&buffer[..n]);
                }
            })
            .await;
            assert!(read.is_ok(), "a trickling body was read for {BOUND:?}");
            writing.abort();
            if let Some(response) = parse_response(&got) {
                assert_eq!(response.status, 408, "{response:?}");
            }
        }
    });
    join_all(endless).await;

    all_timed_out_and_gone(&s).await;
    assert_eq!(s.rt.get::<Account>("k").balance().await.unwrap(), 0);
    // A body that arrives in time is still read.
    let (status, _, json) = s.post("/account/k/deposit", r#"{"amount":2}"#).await;
    assert_eq!((status, json), (200, serde_json::json!(2)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_where_nothing_moves_are_closed_at_the_idle_timeout() {
    let config = HttpConfig::default()
        .header_read_timeout(LONG)
        .body_read_timeout(LONG)
        .idle_timeout(SHORT)
        .keep_alive(Duration::from_millis(100));
    let s = serve(config, |b| b).await;
    let addr = s.server.local_addr();

    let idle = (0..N).map(|i| async move {
        let mut socket = connect(addr).await;
        if i % 2 == 0 {
            // Kept alive after an answer, then silent.
            write(&mut socket, b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n").await;
            let response = read_response(&mut socket, BOUND).await;
            assert_eq!(response.status, 200, "{response:?}");
        }
        // (Odd ones never send a byte.)
        let rest = until_closed(&mut socket, BOUND).await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    });
    join_all(idle).await;
    all_timed_out_and_gone(&s).await;
    s.stop().await;
}

/// An event stream with no events for several times every timeout stays open (its
/// keep-alive comments are traffic), then still delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_event_stream_outlives_the_timeouts() {
    let keep_alive = SHORT / 4;
    let config = HttpConfig::default()
        .header_read_timeout(SHORT)
        .body_read_timeout(SHORT)
        .idle_timeout(SHORT)
        .keep_alive(keep_alive);
    let s = serve(config, |b| b).await;
    let mut socket = connect(s.server.local_addr()).await;
    write(
        &mut socket,
        b"GET /account/q/events HTTP/1.1\r\nhost: test\r\n\r\n",
    )
    .await;

    // Wait for enough keep-alive comments to span three times the timeouts (a count of
    // comments the server sent, not a sleep).
    let comments = 3 * SHORT.as_millis() / keep_alive.as_millis();
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    let seen = |got: &[u8]| String::from_utf8_lossy(got).matches(":\n\n").count();
    while seen(&got) < comments as usize {
        let n = tokio::time::timeout(BOUND, socket.read(&mut buffer))
            .await
            .expect("keep-alive comments keep coming")
            .unwrap();
        assert!(
            n > 0,
            "the stream was closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buffer[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    let (status, _, _) = s.post("/account/q/deposit", r#"{"amount":5}"#).await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(BOUND, async {
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the stream was closed before the event");
            got.extend_from_slice(&buffer[..n]);
            if String::from_utf8_lossy(&got).contains("event: event") {
                break;
            }
        }
    })
    .await;
    assert!(event.is_ok(), "the event arrived on the old stream");
    s.stop().await;
}
