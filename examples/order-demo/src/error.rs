//! [`DemoError`]: why a run or an audit could not go on (as opposed to an audit that ran and
//! found violations, which is a result, not an error).

use std::fmt;

/// A failure of the demo itself: the store, a call the demo cannot do without, a task.
#[derive(Debug)]
#[non_exhaustive]
pub enum DemoError {
    /// The runtime could not be opened or shut down.
    Runtime(gears::Error),
    /// A call failed that the demo cannot continue without.
    Call {
        /// What the demo was doing.
        doing: String,
        /// The call's error.
        error: String,
    },
    /// A file-system operation failed.
    Io {
        /// What the demo was doing.
        doing: String,
        /// The error.
        error: std::io::Error,
    },
    /// The demo was asked for something it will not do.
    Refused(String),
}

impl DemoError {
    /// A failed call while `doing` something.
    pub fn call(doing: impl Into<String>, error: impl fmt::Display) -> DemoError {
        DemoError::Call {
            doing: doing.into(),
            error: error.to_string(),
        }
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Runtime(e) => write!(f, "runtime: {e}"),
            DemoError::Call { doing, error } => write!(f, "{doing}: {error}"),
            DemoError::Io { doing, error } => write!(f, "{doing}: {error}"),
            DemoError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DemoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DemoError::Runtime(e) => Some(e),
            DemoError::Io { error, .. } => Some(error),
            DemoError::Call { .. } | DemoError::Refused(_) => None,
        }
    }
}

impl From<gears::Error> for DemoError {
    fn from(e: gears::Error) -> Self {
        DemoError::Runtime(e)
    }
}
