//! Child process of the cluster replication tests: one Gears node of a cluster, serving the
//! test actors over HTTP until SIGTERM, then leaving the cluster and shutting down.
//!
//! Usage: `cluster_http_node <data dir> <nats urls, comma-separated> <node id> <lease ms>
//! <replicas> [snapshot after]`. Prints `listening <addr>` once it serves, `stopped` after a
//! clean shutdown; logs to stderr when `RUST_LOG` is set.

use std::path::PathBuf;

use gears::http::HttpConfig;
use gears_tests::child::{cluster_config, say};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let usage =
        "usage: cluster_http_node <dir> <urls> <node id> <lease ms> <replicas> [snapshot after]";
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let cluster = cluster_config(&mut args, "replication")?;
    let stop = gears::shutdown_signal();
    let rt = gears_tests::builder(&dir).cluster(cluster).open().await?;
    let config = HttpConfig::default().bind(([127, 0, 0, 1], 0).into());
    let server = gears::http::serve(rt.clone(), config).await?;
    say(&format!("listening {}", server.local_addr()))?;
    stop.await?;
    server.shutdown().await?;
    rt.shutdown().await?;
    say("stopped")?;
    Ok(())
}
