//! Running a child process until SIGKILL, collecting the lines it acknowledged.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Prints one line on standard output and flushes it (what a child tells its test).
pub fn say(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, …) to process `pid` with `kill`; panics if
/// it cannot (there is no libc in the tests and unsafe code is forbidden).
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A cluster member's configuration from a child's arguments
/// `<nats urls, comma-separated> <node id> <lease ms> <replicas>`, in the cluster `name`.
pub fn cluster_config(
    args: &mut impl Iterator<Item = String>,
    name: &str,
) -> Result<gears::cluster::ClusterConfig, String> {
    let usage =
        "arguments: <nats urls, comma-separated> <node id> <lease ms> <replicas> [snapshot after]";
    let mut next = || args.next().ok_or_else(|| usage.to_string());
    let urls: Vec<String> = next()?.split(',').map(String::from).collect();
    let node = next()?;
    let lease: u64 = next()?.parse().map_err(|e| format!("lease ms: {e}"))?;
    let replicas: usize = next()?.parse().map_err(|e| format!("replicas: {e}"))?;
    let mut config = gears::cluster::ClusterConfig::new(urls, node)
        .name(name)
        .lease_ttl(Duration::from_millis(lease))
        .replicas(replicas);
    if let Some(entries) = args.next() {
        let entries = entries
            .parse()
            .map_err(|e| format!("snapshot after: {e}"))?;
        config = config.snapshot_after(entries);
    }
    Ok(config)
}

/// Runs `program args…` until it has printed `lines` complete lines (or `bound` passed),
/// SIGKILLs it, and returns every complete line it printed before dying (those still in
/// the pipe included; a last line cut by the kill is dropped). Panics if the child exits on
/// its own.
pub async fn run_until_sigkill<I, S>(
    program: &str,
    args: I,
    lines: usize,
    bound: Duration,
) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut seen = Vec::new();
    let mut line = Vec::new();
    let deadline = tokio::time::Instant::now() + bound;
    while seen.len() < lines {
        match tokio::time::timeout_at(deadline, stdout.read_until(b'\n', &mut line)).await {
            // Out of time: `line` may hold the start of a line, completed below.
            Err(_) => break,
            Ok(Ok(0)) => panic!(
                "{program} exited before it was killed ({:?}) after {} lines",
                child.wait().await,
                seen.len()
            ),
            Ok(Ok(_)) if line.ends_with(b"\n") => {
                seen.push(text(&line));
                line.clear();
            }
            Ok(Ok(_)) => panic!("{program} closed its stdout mid-line: {line:?}"),
            Ok(Err(e)) => panic!("reading {program}'s stdout: {e}"),
        }
    }
    child.kill().await.expect("SIGKILL the child");
    stdout
        .read_to_end(&mut line)
        .await
        .expect("drain the child's stdout");
    for complete in line.split_inclusive(|b| *b == b'\n') {
        if complete.ends_with(b"\n") {
            seen.push(text(complete));
        }
    }
    seen
}

fn text(line: &[u8]) -> String {
    std::str::from_utf8(line)
        .expect("the child prints UTF-8")
        .trim_end_matches('\n')
        .to_string()
}

/// A child process whose standard output announced something: see [`spawn_until_line`].
#[derive(Debug)]
pub struct Announced {
    /// The child (killed when dropped).
    pub child: tokio::process::Child,
    /// The rest of the line that started with the prefix.
    pub rest: String,
}

impl Announced {
    /// Sends SIGTERM and waits (at most `bound`) for the child to exit; its status.
    pub async fn terminate(mut self, bound: Duration) -> std::process::ExitStatus {
        signal(
            self.child.id().expect("the child is still running"),
            "-TERM",
        );
        tokio::time::timeout(bound, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the child did not exit within {bound:?} of SIGTERM"))
            .expect("wait for the child")
    }
}

/// Starts `command` with its standard output piped, waits (at most 60 s) for a line that
/// starts with `prefix` and returns the child with the rest of that line; the output after
/// it is read and dropped, so the child never blocks on a full pipe.
pub async fn spawn_until_line(mut command: Command, prefix: &str) -> Announced {
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read the child's output")
                .unwrap_or_else(|| panic!("the child exited before printing {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                break rest.to_string();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the child printed no {prefix:?} within 60 s"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Announced { child, rest }
}
