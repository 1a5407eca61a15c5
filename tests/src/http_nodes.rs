//! Gears cluster nodes as child processes with an HTTP ingress (`child cluster_http_node`),
//! for the tests that call them over HTTP, and what those tests read of them.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::child::spawn_until_line;
use crate::nats::NatsCluster;

/// A running node.
pub struct HttpNode {
    /// The process (killed when dropped).
    pub child: Child,
    /// Its ingress, `http://addr`.
    pub url: String,
}

impl HttpNode {
    /// Starts node `id` on `dir` against `nats` (leases of `lease`, streams and buckets of
    /// one replica per NATS server, at most 3), once it serves HTTP. `program` is the
    /// test's `env!("CARGO_BIN_EXE_child")`, started as `child cluster_http_node ...`.
    pub async fn start(
        program: &str,
        nats: &NatsCluster,
        dir: &Path,
        id: &str,
        lease: Duration,
    ) -> HttpNode {
        HttpNode::start_snapshotting(program, nats, dir, id, lease, None).await
    }

    /// [`HttpNode::start`], snapshotting each shard every `snapshot_after` log entries
    /// (`None`: the default).
    pub async fn start_snapshotting(
        program: &str,
        nats: &NatsCluster,
        dir: &Path,
        id: &str,
        lease: Duration,
        snapshot_after: Option<u64>,
    ) -> HttpNode {
        HttpNode::start_with(program, nats, dir, id, lease, snapshot_after, &[]).await
    }

    /// [`HttpNode::start_snapshotting`], with the environment variables `env` set.
    pub async fn start_with(
        program: &str,
        nats: &NatsCluster,
        dir: &Path,
        id: &str,
        lease: Duration,
        snapshot_after: Option<u64>,
        env: &[(&str, &str)],
    ) -> HttpNode {
        let mut command = Command::new(program);
        command.envs(env.iter().copied());
        command.arg("cluster_http_node").args([
            dir.to_str().expect("utf-8 dir").to_string(),
            nats.urls().join(","),
            id.to_string(),
            lease.as_millis().to_string(),
            nats.urls().len().min(3).to_string(),
        ]);
        command.args(snapshot_after.map(|entries| entries.to_string()));
        let announced = spawn_until_line(command, "listening ").await;
        HttpNode {
            url: format!("http://{}", announced.rest),
            child: announced.child,
        }
    }

    /// Stops the node with SIGTERM (it hands its shards over) and checks it exits 0 within
    /// 30 s.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("a node stops within 30 s of SIGTERM")
            .expect("wait for a node");
        assert!(status.success(), "a node exited with {status}");
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to the node.
    pub fn signal(&self, signal: &str) {
        crate::child::signal(self.child.id().expect("running"), signal);
    }

    /// The value of the metric `gears_<name>` on the node's `/metrics`, if it answers.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<u64> {
        let text = http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("gears_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    }
}

/// POSTs `body` (JSON) to `url/path`: the answer's status and body.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    let response = http
        .post(format!("{url}/{path}"))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// POSTs `body` (JSON) to `url/path`, checks the answer is 200, and returns its JSON.
pub async fn post_ok(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (status, text) = post(http, url, path, body).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// Waits (at most `bound`) until every node serves some shards and together they serve all
/// of them once; panics otherwise.
pub async fn wait_until_shared(http: &reqwest::Client, nodes: &[&HttpNode], bound: Duration) {
    let started = Instant::now();
    loop {
        let mut served = Vec::new();
        for node in nodes {
            served.push(node.metric(http, "shards_served").await.unwrap_or(0));
        }
        if served.iter().all(|&s| s > 0) && served.iter().sum::<u64>() == u64::from(gears::SHARDS) {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "the nodes did not share the shards within {bound:?}: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// NATS servers and Gears nodes started together, sharing the shards.
pub struct HttpCluster {
    /// The NATS servers.
    pub nats: NatsCluster,
    /// The nodes, `node-0`, `node-1`, ...
    pub nodes: Vec<HttpNode>,
    /// Their ingresses, in the same order (they stay known after a node is gone).
    pub urls: Vec<String>,
    /// A client whose timeout (40 s) outlasts the runtime's call timeout (30 s): a call is
    /// answered or fails in Gears.
    pub http: reqwest::Client,
    /// The nodes' stores (removed when dropped).
    pub dirs: Vec<tempfile::TempDir>,
}

/// What a cluster test starts with: `servers` NATS servers, `stores` empty store dirs
/// (removed when dropped), and an HTTP client whose requests time out after 10 s.
pub async fn nats_stores_and_client(
    servers: usize,
    stores: usize,
) -> (NatsCluster, Vec<tempfile::TempDir>, reqwest::Client) {
    let nats = tokio::task::spawn_blocking(move || NatsCluster::start(servers))
        .await
        .expect("start nats");
    let dirs = (0..stores)
        .map(|_| tempfile::tempdir().expect("dir"))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (nats, dirs, http)
}

impl HttpCluster {
    /// Starts `servers` NATS servers and `nodes` nodes (`program`: the test's
    /// `env!("CARGO_BIN_EXE_child")`) with leases of `lease`, and waits until the
    /// nodes share the shards.
    pub async fn start(program: &str, servers: usize, nodes: usize, lease: Duration) -> Self {
        let nats = tokio::task::spawn_blocking(move || NatsCluster::start(servers))
            .await
            .expect("start nats");
        let dirs: Vec<tempfile::TempDir> = (0..nodes)
            .map(|_| tempfile::tempdir().expect("dir"))
            .collect();
        let mut started = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let id = format!("node-{i}");
            started.push(HttpNode::start(program, &nats, dir.path(), &id, lease).await);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .expect("client");
        wait_until_shared(
            &http,
            &started.iter().collect::<Vec<_>>(),
            Duration::from_secs(30),
        )
        .await;
        HttpCluster {
            urls: started.iter().map(|n| n.url.clone()).collect(),
            nats,
            nodes: started,
            http,
            dirs,
        }
    }

    /// Stops every node still running with SIGTERM, checking each exits 0.
    pub async fn stop(&mut self) {
        for node in self.nodes.drain(..) {
            node.stop().await;
        }
    }
}
