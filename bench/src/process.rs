//! What the process itself costs, read from `/proc`: CPU time and resident memory.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SEC: u64 = 100;
/// Bytes per page of `/proc/<pid>/statm` (4 KiB on x86-64 and the usual arm64 kernels).
const PAGE_SIZE: u64 = 4096;

/// CPU time (user + system) used so far by every thread of this process; zero where `/proc`
/// is unavailable.
pub(crate) fn cpu_time() -> Duration {
    cpu_time_at("/proc/self/stat")
}

/// CPU time (user + system) used so far by process `pid` (another process: a NATS server);
/// zero where `/proc` is unavailable.
pub(crate) fn cpu_time_of(pid: u32) -> Duration {
    cpu_time_at(&format!("/proc/{pid}/stat"))
}

fn cpu_time_at(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // The command name (field 2) may contain spaces; fields after it are plain numbers.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total = ticks(11) + ticks(12);
    Duration::from_micros(total * 1_000_000 / TICKS_PER_SEC)
}

/// Resident set size of this process in bytes (`/proc/self/statm`); zero where unavailable.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_SIZE)
}
