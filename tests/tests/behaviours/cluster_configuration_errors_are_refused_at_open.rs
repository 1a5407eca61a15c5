//! A runtime that cannot join its cluster does not open: a node id NATS would refuse and an
//! unreachable NATS server are each a clear `Error::Cluster` from `open`, and the store is
//! released, so the same folder opens at once afterwards.

use gears::Error;
use gears::cluster::ClusterConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_configuration_errors_are_refused_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    // Nothing listens on port 1 of the loopback.
    let unreachable = ["nats://127.0.0.1:1"];
    for (config, expected) in [
        (ClusterConfig::new(unreachable, "a.b"), "node id"),
        (
            ClusterConfig::new(unreachable, "a").name("x y"),
            "cluster name",
        ),
        (ClusterConfig::new(unreachable, "a").replicas(0), "replicas"),
        (ClusterConfig::new(unreachable, "a"), "connect to NATS"),
    ] {
        let opened = gears_tests::builder(dir.path())
            .cluster(config)
            .open()
            .await;
        match opened {
            Err(Error::Cluster(message)) => assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            ),
            Err(other) => panic!("expected a cluster error about {expected}, got {other}"),
            Ok(_) => panic!("a runtime opened without its cluster ({expected})"),
        }
    }
    let rt = gears_tests::open(dir.path()).await;
    assert_eq!(rt.get::<gears_tests::Counter>("c").add(1).await.unwrap(), 1);
    rt.shutdown().await.expect("shutdown");
}
