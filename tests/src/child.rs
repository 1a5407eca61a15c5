//! Running a child process until SIGKILL, collecting the lines it acknowledged.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

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
