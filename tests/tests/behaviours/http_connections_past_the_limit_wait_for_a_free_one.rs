//! `max_connections` bounds the connections served at once: one past it is not served
//! (it waits in the kernel's backlog) until a served one closes, then it is answered.

use crate::support;

use std::time::Duration;

use gears::http::HttpConfig;
use support::{connect, read_response, serve, write};
use tokio::io::AsyncReadExt;

const BOUND: Duration = Duration::from_secs(10);
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_waits_until_one_closes() {
    let config = HttpConfig::default()
        .max_connections(2)
        .header_read_timeout(Duration::from_secs(120))
        .idle_timeout(Duration::from_secs(120));
    let s = serve(config, |b| b).await;
    let addr = s.server.local_addr();

    // Two kept-alive connections, each answered once: both are being served.
    let mut first = connect(addr).await;
    let mut second = connect(addr).await;
    for socket in [&mut first, &mut second] {
        write(socket, HEALTH).await;
        assert_eq!(read_response(socket, BOUND).await.status, 200);
    }

    // A third: the kernel completes its handshake, but the server does not take it. (An
    // absence can only be checked for a while; a server without the limit answers a
    // health check far sooner than this.)
    let mut third = connect(addr).await;
    write(&mut third, HEALTH).await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the connection past the limit was served at once: {early:?}"
    );

    // One served connection closes: the waiting one is taken and answered.
    drop(first);
    assert_eq!(read_response(&mut third, BOUND).await.status, 200);
    // The other one still works.
    write(&mut second, HEALTH).await;
    assert_eq!(read_response(&mut second, BOUND).await.status, 200);
    drop(second);
    drop(third);
    s.stop().await;
}
