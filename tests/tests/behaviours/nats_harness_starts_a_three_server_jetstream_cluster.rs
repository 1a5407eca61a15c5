//! The NATS test harness starts a three-server JetStream cluster (pinned nats-server, fsync
//! on every write) that agrees on a meta leader; when the meta leader is SIGKILLed the other
//! two elect another and stay healthy, a SIGSTOPped server resumes on SIGCONT, and a
//! restarted server is healthy again on the same ports and store dir. A lone server starts
//! and restarts too. The servers are only spoken to over their monitoring port.

use std::time::Duration;

use gears_tests::nats::{NATS_SERVER_VERSION, NatsCluster};

/// Elections take a few seconds here; the bound leaves room for a loaded machine.
const WITHIN: Duration = Duration::from_secs(15);

#[test]
fn three_servers_elect_a_new_meta_leader_after_a_sigkill_and_take_the_restarted_one_back() {
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (i, url) in urls.iter().enumerate() {
        assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
        assert_eq!(*url, cluster.url(i));
        assert_eq!(cluster.healthz(i), Ok(()));
    }
    let distinct: std::collections::HashSet<_> = urls.iter().collect();
    assert_eq!(distinct.len(), 3, "{urls:?}");
    if std::env::var_os("NATS_SERVER").is_none() {
        let (status, varz) = cluster.monitor(0, "/varz").expect("GET /varz");
        assert_eq!(status, 200);
        assert!(
            varz.contains(&format!("\"version\": \"{NATS_SERVER_VERSION}\"")),
            "{varz}"
        );
    }
    // Every server sees the other two as routes.
    for i in 0..3 {
        let (_, routez) = cluster.monitor(i, "/routez").expect("GET /routez");
        for j in (0..3).filter(|&j| j != i) {
            assert!(routez.contains(cluster.server_name(j)), "{i}: {routez}");
        }
    }

    let leader = cluster
        .meta_leader()
        .expect("start waits for a meta leader");
    let old_pid = cluster.pid(leader);
    cluster.kill(leader);
    assert!(!cluster.is_running(leader));
    assert!(cluster.healthz(leader).is_err(), "a killed server answers");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Only running servers count, so this is a leader the survivors elected.
    let new_leader = cluster.wait_meta_leader(WITHIN);
    assert!(survivors.contains(&new_leader), "{new_leader}");
    for &i in &survivors {
        cluster.wait_healthy(i, WITHIN);
    }

    // A paused follower answers nothing; resumed, it is healthy again.
    let paused = *survivors
        .iter()
        .find(|&&i| i != new_leader)
        .expect("two survivors");
    cluster.stop(paused);
    assert_eq!(process_state(cluster.pid(paused)), "T", "SIGSTOP took");
    cluster.cont(paused);
    cluster.wait_healthy(paused, WITHIN);

    cluster.restart(leader);
    assert_ne!(cluster.pid(leader), old_pid);
    for i in 0..3 {
        cluster.wait_healthy(i, WITHIN);
    }
    let jsz = cluster.monitor(leader, "/jsz").expect("GET /jsz").1;
    let store = cluster.store_dir(leader).to_str().expect("UTF-8 path");
    assert!(jsz.contains(store), "restarted on another store dir: {jsz}");
    assert!(cluster.meta_leader().is_some(), "the three agree again");
}

#[test]
fn a_lone_server_starts_and_restarts_with_jetstream() {
    let server = NatsCluster::start(1);
    assert_eq!(server.urls(), vec![server.url(0)]);
    assert_eq!(server.healthz(0), Ok(()));
    assert_eq!(server.meta_leader(), Some(0));
    let (_, jsz) = server.monitor(0, "/jsz").expect("GET /jsz");
    assert!(jsz.contains("\"sync_always\": true"), "{jsz}");

    server.kill(0);
    assert!(server.healthz(0).is_err(), "a killed server answers");
    server.restart(0);
    server.wait_healthy(0, WITHIN);
    assert_eq!(server.meta_leader(), Some(0));
}

/// The state letter `ps` shows for `pid` (`T` when stopped).
fn process_state(pid: u32) -> String {
    let out = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .expect("run ps");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .chars()
        .take(1)
        .collect()
}
