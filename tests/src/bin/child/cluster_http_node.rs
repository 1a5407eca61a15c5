//! Child process of the cluster replication tests: one Gears node of a cluster, serving the
//! test actors over HTTP until SIGTERM, then leaving the cluster and shutting down.
//!
//! Usage: `child cluster_http_node <data dir> <nats urls, comma-separated> <node id> <lease ms>
//! <replicas> [snapshot after]`. Prints `listening <addr>` once it serves, `stopped` after a
//! clean shutdown; logs to stderr when `RUST_LOG` is set. With `GEARS_TEST_OUTBOX_FROM=<n>`
//! it numbers its outbox entries from `n` instead of from the clock (a node whose clock is
//! behind).

use std::path::PathBuf;

use gears::http::HttpConfig;
use gears_tests::child::{cluster_config, say};

use crate::BoxError;

#[tokio::main]
pub(crate) async fn run(mut args: std::env::Args) -> Result<(), BoxError> {
    let usage = "usage: child cluster_http_node <dir> <urls> <node id> <lease ms> <replicas> [snapshot after]";
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let cluster = cluster_config(&mut args, "replication")?;
    let stop = gears::shutdown_signal();
    let mut builder = gears_tests::builder(&dir).cluster(cluster);
    if let Some(first) = std::env::var_os("GEARS_TEST_OUTBOX_FROM") {
        let first = first.to_str().and_then(|s| s.parse().ok());
        builder = builder.__outbox_numbering_from(first.ok_or("GEARS_TEST_OUTBOX_FROM: a number")?);
    }
    let rt = builder.open().await?;
    let config = HttpConfig::default().bind(([127, 0, 0, 1], 0).into());
    let server = gears::http::serve(rt.clone(), config).await?;
    say(&format!("listening {}", server.local_addr()))?;
    stop.await?;
    server.shutdown().await?;
    rt.shutdown().await?;
    say("stopped")?;
    Ok(())
}
