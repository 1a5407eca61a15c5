//! Child process of the cluster replication tests: one Gears node of a cluster, serving the
//! test actors over HTTP until SIGTERM, then leaving the cluster and shutting down.
//!
//! Usage: `cluster_http_node <data dir> <nats urls, comma-separated> <node id> <lease ms>
//! <replicas>`. Prints `listening <addr>` once it serves, `stopped` after a clean shutdown.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use gears::cluster::ClusterConfig;
use gears::http::HttpConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let usage = "usage: cluster_http_node <dir> <urls> <node id> <lease ms> <replicas>";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let urls: Vec<String> = args
        .next()
        .ok_or(usage)?
        .split(',')
        .map(String::from)
        .collect();
    let node = args.next().ok_or(usage)?;
    let lease = Duration::from_millis(args.next().ok_or(usage)?.parse()?);
    let replicas: usize = args.next().ok_or(usage)?.parse()?;
    let stop = gears::shutdown_signal();
    let cluster = ClusterConfig::new(urls, &node)
        .name("replication")
        .lease_ttl(lease)
        .replicas(replicas);
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
