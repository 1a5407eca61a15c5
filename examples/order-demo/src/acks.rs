//! The acknowledgement log: which orders the demo told its callers were placed, and how,
//! kept so that an audit (later, in another process, after a crash) can check that each of
//! them is still there.
//!
//! A log file, not an actor in the store. An acknowledgement is a fact about the caller: it
//! is true once the reply left, and recording it is a second act that can always be cut
//! short (the process dies between the two). Kept in the store, it would be a second durable
//! write per order, doubling the orders' cost, for the same guarantee; in a file it costs one
//! `write` to a file opened for appending, made after the order's reply arrived (so after
//! the order was durable). It survives the process being killed (the kernel holds it); a
//! power loss may cut the log's tail, which only leaves fewer acknowledgements to check.
//! So every line names an order that was acknowledged: the audit checks a subset of the
//! acknowledgements, never one that was not given.
//!
//! `order-demo run` and the simulation of `order-demo serve` append to [`ACK_LOG`] in the
//! store folder (a store wiped with `--fresh` loses its log with it); `order-demo audit`
//! checks it, and any `--acks FILE` a driver of its own wrote in the same format (a client
//! that placed orders over HTTP, say). One line per acknowledgement: `ack <order> <status>`,
//! the status last, since an order id may hold spaces (never a control character: `place`
//! refuses those, so a line is always one line).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::DemoError;
use crate::order::Status;

/// The log's file name in the store folder.
pub const ACK_LOG: &str = "acks.log";
/// Longest line read: an order id of the longest key and a status.
const MAX_LINE: usize = gears::MAX_KEY_LEN + 64;

/// The acknowledgement log of the store in `dir`.
pub fn ack_log_path(dir: &Path) -> PathBuf {
    dir.join(ACK_LOG)
}

/// The line that records `order` acknowledged with `status` (with its newline).
pub fn format_ack(order: &str, status: Status) -> String {
    format!("ack {order} {status}\n")
}

/// An acknowledgement from its line (without the newline).
pub fn parse_ack(line: &str) -> Result<(String, Status), String> {
    let parsed = line
        .strip_prefix("ack ")
        .and_then(|rest| rest.rsplit_once(' '))
        .filter(|(order, _)| !order.is_empty());
    let Some((order, status)) = parsed else {
        return Err(format!("not `ack <order> <status>`: {line:?}"));
    };
    Ok((order.to_string(), status.parse()?))
}

/// An open log, appended to by every task that hears of an acknowledgement.
#[derive(Debug)]
pub struct AckLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AckLog {
    /// Opens the log at `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> Result<AckLog, DemoError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| DemoError::Io {
                doing: format!("opening the acknowledgement log {}", path.display()),
                error,
            })?;
        Ok(AckLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one acknowledgement: one `write` of a whole line, so lines of concurrent
    /// writers never interleave.
    pub fn record(&self, order: &str, status: Status) -> Result<(), DemoError> {
        let line = format_ack(order, status);
        // A writer that panicked mid-call left no partial state in the file handle.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .map_err(|error| DemoError::Io {
                doing: format!("appending to {}", self.path.display()),
                error,
            })
    }
}

/// Reads a log a chunk at a time, so a log of any length is checked in bounded memory.
#[derive(Debug)]
pub struct AckReader {
    path: PathBuf,
    input: BufReader<File>,
    line: usize,
}

impl AckReader {
    /// Opens the log at `path`.
    pub fn open(path: &Path) -> Result<AckReader, DemoError> {
        let file = File::open(path).map_err(|error| DemoError::Io {
            doing: format!("opening the acknowledgement log {}", path.display()),
            error,
        })?;
        Ok(AckReader {
            path: path.to_path_buf(),
            input: BufReader::new(file),
            line: 0,
        })
    }

    /// Up to `max` more acknowledgements; empty at the end. A last line without its
    /// newline was cut by a crash while it was written, and is skipped: its order was
    /// acknowledged, but nothing says how.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<(String, Status)>, DemoError> {
        let mut chunk = Vec::new();
        let mut buf = Vec::new();
        while chunk.len() < max {
            buf.clear();
            let read = (&mut self.input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|error| DemoError::Io {
                    doing: format!("reading {}", self.path.display()),
                    error,
                })?;
            if read == 0 {
                break;
            }
            self.line += 1;
            if buf.len() > MAX_LINE {
                return Err(self.refuse(&format!("longer than {MAX_LINE} bytes")));
            }
            if !buf.ends_with(b"\n") {
                break;
            }
            let text =
                std::str::from_utf8(&buf[..buf.len() - 1]).map_err(|_| self.refuse("not UTF-8"))?;
            chunk.push(parse_ack(text).map_err(|why| self.refuse(&why))?);
        }
        Ok(chunk)
    }

    fn refuse(&self, why: &str) -> DemoError {
        DemoError::Refused(format!("{} line {}: {why}", self.path.display(), self.line))
    }
}
