//! The runtime's time: the system's, or the virtual time of a test runtime, which stands
//! still until the test moves it (`TestRuntime::advance`). It names no other module: every
//! part of the runtime reads it.
//!
//! Everything that decides by the time what an actor sees goes through it: when a timer is
//! due (set, scanned, re-armed, retried), when an activation is idle, when a kept
//! idempotent result expires. Timeouts that bound waiting (call timeouts, HTTP limits,
//! delivery backoffs) stay on real time: they are about the machine, not the actors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds of `d` (saturating).
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Time that moves only when told: a start and the milliseconds since.
#[derive(Debug)]
pub(crate) struct VirtualTime {
    start: SystemTime,
    elapsed_ms: AtomicU64,
}

impl VirtualTime {
    /// Virtual time starting at the system's now (in whole milliseconds, as timers count).
    pub(crate) fn new() -> Self {
        let now = epoch_ms(SystemTime::now());
        VirtualTime {
            start: UNIX_EPOCH + Duration::from_millis(now),
            elapsed_ms: AtomicU64::new(0),
        }
    }

    /// The elapsed milliseconds at which the time is `at_ms` since the Unix epoch (0 if that
    /// is before the start).
    pub(crate) fn elapsed_at(&self, at_ms: u64) -> u64 {
        at_ms.saturating_sub(epoch_ms(self.start))
    }

    /// Milliseconds since the start.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.elapsed_ms.load(Ordering::Acquire)
    }

    /// Moves the time to `elapsed_ms` since the start (never back).
    pub(crate) fn set_elapsed_ms(&self, elapsed_ms: u64) {
        self.elapsed_ms.fetch_max(elapsed_ms, Ordering::AcqRel);
    }

    /// The time now.
    pub(crate) fn now(&self) -> SystemTime {
        self.start + Duration::from_millis(self.elapsed_ms())
    }
}

/// A runtime's clock.
#[derive(Debug)]
pub(crate) enum Clock {
    /// The system's time; the monotonic clock counts from when the runtime opened.
    System { opened: Instant },
    /// A test runtime's virtual time, shared by the runtimes it opens on one store (so time
    /// goes on across a restart).
    Virtual(Arc<VirtualTime>),
}

impl Clock {
    /// The time now.
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::System { .. } => SystemTime::now(),
            Clock::Virtual(time) => time.now(),
        }
    }

    /// The time now, in milliseconds since the Unix epoch.
    pub(crate) fn epoch_ms(&self) -> u64 {
        epoch_ms(self.now())
    }

    /// Monotonic milliseconds (since the runtime opened, or since virtual time started).
    pub(crate) fn monotonic_ms(&self) -> u64 {
        match self {
            Clock::System { opened } => {
                u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            Clock::Virtual(time) => time.elapsed_ms(),
        }
    }
}
