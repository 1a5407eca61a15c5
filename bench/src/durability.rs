//! The `--durability` flag, and what it means for Gears and for each baseline.

use clap::ValueEnum;

/// How durable an acknowledged write is, for Gears and its baselines alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// fsync before acknowledging: survives power loss (Gears' default).
    Sync,
    /// Written to the OS before acknowledging: survives a process crash, not power loss.
    Buffered,
}

impl Mode {
    /// The name used in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Buffered => "buffered",
        }
    }

    /// The Gears setting.
    pub(crate) fn gears(self) -> gears::Durability {
        match self {
            Mode::Sync => gears::Durability::Sync,
            Mode::Buffered => gears::Durability::Buffered,
        }
    }

    /// How a raw fjall baseline persists each batch.
    pub(crate) fn fjall(self) -> fjall::PersistMode {
        match self {
            Mode::Sync => fjall::PersistMode::SyncAll,
            Mode::Buffered => fjall::PersistMode::Buffer,
        }
    }

    /// SQLite's `synchronous` setting in WAL mode: `FULL` syncs the WAL at every commit;
    /// `NORMAL` survives a process crash but not power loss, like `Buffered`.
    pub(crate) fn sqlite_synchronous(self) -> &'static str {
        match self {
            Mode::Sync => "FULL",
            Mode::Buffered => "NORMAL",
        }
    }
}
