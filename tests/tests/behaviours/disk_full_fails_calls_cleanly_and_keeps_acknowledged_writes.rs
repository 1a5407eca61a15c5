//! A store on a full filesystem (an 8 MiB tmpfs filled up by another file) fails calls with a
//! clear `Storage` error: no panic, no hang, no false acknowledgement. Every acknowledged
//! write is there after copying the store to a normal disk and reopening it there, and after
//! freeing space and reopening in place; the reopened store takes writes again.
//!
//! Needs `mount -t tmpfs` (root, or a container allowed to mount). Where mounting is refused,
//! the test fails if the environment variable `CI` is set (CI runs as root and must check
//! this), and otherwise prints a `SKIPPED` line with the reason and passes without checking
//! anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gears::CallError;
use gears_tests::{Counter, builder};

/// Every call has a bound: a hang is a failure, not a stuck test.
const CALL_BOUND: Duration = Duration::from_secs(20);
const WRITERS: u64 = 8;
/// Room left on the filesystem once the filler file has taken the rest.
const SLACK: u64 = 256 << 10;
/// Failed calls to observe before stopping the writers.
const FAILURES_WANTED: u64 = 64;
const FILL_BOUND: Duration = Duration::from_secs(60);

/// A tmpfs mounted on a temporary folder, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs refused ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach now, freed when it closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the filesystem of `dir` with one file, then gives back `SLACK` bytes of it.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("create the filler");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    let _ = file.sync_all();
    file.set_len(written.saturating_sub(SLACK))
        .expect("shrink the filler");
    filler
}

/// Per key, the value acknowledged (each key is written once, by `add(value)`).
type Acked = BTreeMap<String, u64>;

/// Writers add to fresh keys until `FAILURES_WANTED` calls failed.
async fn write_until_full(rt: &gears::Runtime) -> (Acked, Vec<String>, Vec<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for w in 0..WRITERS {
        let (rt, failures) = (rt.clone(), failures.clone());
        tasks.spawn(async move {
            use std::sync::atomic::Ordering;
            let (mut acked, mut errors, mut tried) = (Acked::new(), Vec::new(), Vec::new());
            let started = Instant::now();
            let mut i = 0u64;
            while failures.load(Ordering::Relaxed) < FAILURES_WANTED {
                assert!(
                    started.elapsed() < FILL_BOUND,
                    "the store never failed on a full disk"
                );
                let key = format!("w{w}-{i}");
                let value = i + 1;
                i += 1;
                tried.push(key.clone());
                let counter = rt.get::<Counter>(&key);
                let call = counter.add(value);
                match tokio::time::timeout(CALL_BOUND, call).await {
                    Err(_) => panic!("a call hung on the full disk ({key})"),
                    Ok(Ok(v)) => {
                        assert_eq!(v, value);
                        acked.insert(key, value);
                    }
                    Ok(Err(CallError::Storage(e))) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                    }
                    Ok(Err(e)) => panic!("a call failed with something else than Storage: {e}"),
                }
            }
            (acked, errors, tried)
        });
    }
    let (mut acked, mut errors, mut tried) = (Acked::new(), Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (a, e, n) = done.expect("a writer panicked");
        acked.extend(a);
        errors.extend(e);
        tried.extend(n);
    }
    (acked, errors, tried)
}

/// Opens `dir` and checks every acknowledged value; keys that failed read 0 or their value.
async fn check(dir: &Path, acked: &Acked, attempted_keys: &[String], what: &str) -> gears::Runtime {
    let rt = tokio::time::timeout(CALL_BOUND, builder(dir).open())
        .await
        .unwrap_or_else(|_| panic!("opening {what} hung"))
        .unwrap_or_else(|e| panic!("opening {what}: {e}"));
    for key in attempted_keys {
        let got = tokio::time::timeout(CALL_BOUND, rt.get::<Counter>(key).get())
            .await
            .unwrap_or_else(|_| panic!("reading {key} in {what} hung"))
            .unwrap_or_else(|e| panic!("reading {key} in {what}: {e}"));
        match acked.get(key) {
            Some(&value) => assert_eq!(got, value, "acknowledged {key} lost in {what}"),
            None => {
                let written: u64 = key.rsplit('-').next().unwrap().parse::<u64>().unwrap() + 1;
                assert!(
                    got == 0 || got == written,
                    "{key} reads {got} in {what}: neither nothing nor what was written"
                );
            }
        }
    }
    rt
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_calls_cleanly_and_keeps_acknowledged_writes() {
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(t) => t,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI is set, so disk full must be tested, but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED disk_full_fails_calls_cleanly_and_keeps_acknowledged_writes: {why}");
            return;
        }
    };
    let store = tmpfs.path().join("store");
    let started = Instant::now();
    let rt = builder(&store).open().await.expect("open on the tmpfs");
    let filler = fill(tmpfs.path());
    let (acked, errors, keys) = write_until_full(&rt).await;
    let stats = rt.stats();
    eprintln!(
        "full disk: {} calls, {} acknowledged, {} failed with Storage ({} failed batches); first error: {}",
        keys.len(),
        acked.len(),
        errors.len(),
        stats.failed_batches,
        errors.first().map_or("-", String::as_str)
    );
    assert!(
        !acked.is_empty(),
        "nothing was written before the disk was full"
    );
    assert!(errors.len() as u64 >= FAILURES_WANTED);
    assert!(
        errors.iter().all(|e| !e.trim().is_empty()),
        "an error without a message"
    );
    // Still full: calls keep failing cleanly (never a false acknowledgement), and shutdown
    // ends (it may report the failure).
    let after = tokio::time::timeout(CALL_BOUND, rt.get::<Counter>("late").add(1))
        .await
        .expect("a call hung after the disk filled up");
    assert!(matches!(after, Err(CallError::Storage(_))), "{after:?}");
    let shutdown = tokio::time::timeout(CALL_BOUND, rt.shutdown())
        .await
        .expect("shutdown hung on the full disk");
    eprintln!("shutdown on the full disk: {shutdown:?}");
    drop(rt);

    // 1. The store as the full disk left it, copied to a normal disk.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&store, copy.path());
    let rt = check(copy.path(), &acked, &keys, "the copy on a normal disk").await;
    rt.shutdown().await.unwrap();
    drop(rt);

    // 2. Space freed, reopened in place: everything is there and writes work again.
    std::fs::remove_file(&filler).unwrap();
    let rt = check(&store, &acked, &keys, "the store after freeing space").await;
    let again = tokio::time::timeout(CALL_BOUND, rt.get::<Counter>("after-free").add(7))
        .await
        .expect("a call hung after freeing space");
    assert_eq!(again.unwrap(), 7, "the store takes writes again");
    rt.shutdown().await.unwrap();
    drop(rt);
    eprintln!(
        "{} acknowledged writes intact on a copy and in place after freeing space, in {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    drop(tmpfs);
}
