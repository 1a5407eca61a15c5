//! Child process of `tests/http_shutdown_drains_in_flight_requests.rs`: serves the test
//! actors over HTTP until SIGINT or SIGTERM, then shuts down as the docs of
//! `gears::shutdown_signal` say an embedder should.
//!
//! Usage: `child http_signal_child <data_dir>`. Prints `listening <addr>` once it serves,
//! `signal <name>` when a signal arrives, `stopped` once the server and the runtime are
//! shut down; then exits 0.

use std::path::PathBuf;

use gears::http::HttpConfig;
use gears_tests::child::say;

use crate::BoxError;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: child http_signal_child <data_dir>")?,
    );
    // Before serving: a signal that arrives while the server starts is not lost.
    let stop = gears::shutdown_signal();
    let rt = gears_tests::open(&dir).await;
    let config = HttpConfig::default().bind(([127, 0, 0, 1], 0).into());
    let server = gears::http::serve(rt.clone(), config).await?;
    say(&format!("listening {}", server.local_addr()))?;
    let signal = stop.await?;
    say(&format!("signal {signal}"))?;
    server.shutdown().await?;
    rt.shutdown().await?;
    say("stopped")?;
    Ok(())
}
