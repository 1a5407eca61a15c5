//! [`shutdown_signal`]: the signals a service manager stops a process with, as a future, so
//! an embedding application can drain before it exits instead of dying mid-request.
//!
//! Imports only tokio's signal handling; the runtime itself never installs a handler.

use std::fmt;

/// The signal [`shutdown_signal`] resolved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// SIGINT (Ctrl-C in a terminal; Ctrl-C on platforms without signals).
    Interrupt,
    /// SIGTERM: how containers (`docker stop`, Kubernetes) and systemd stop a service.
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// A future that resolves when the process is asked to stop: on SIGINT or SIGTERM (on
/// platforms without them, on Ctrl-C). Await it, then shut down in order: the HTTP server
/// (which answers the requests in flight and ends the event streams), then the runtime
/// (which finishes the turns in flight and flushes the store), then return from `main`.
///
/// On unix the handlers are installed when this is called, not when the future is first
/// polled: call it before you start serving, so a signal that arrives during startup is
/// not lost (it would otherwise stop the process at once, as if there were no handler).
/// They stay installed for the life of the process, so these signals no longer kill it:
/// call it once, and keep awaiting it. It must be called inside a tokio runtime; the
/// future fails if it is not, or if the handlers cannot be installed.
///
/// ```no_run
/// # #[cfg(feature = "http")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use gears::http::HttpConfig;
/// use gears::prelude::*;
///
/// let stop = gears::shutdown_signal(); // before serving: nothing is missed
/// let rt = Runtime::builder().path("data").open().await?;
/// let server = gears::http::serve(rt.clone(), HttpConfig::default()).await?;
/// let signal = stop.await?;
/// eprintln!("{signal}: stopping");
/// server.shutdown().await?; // requests in flight are answered
/// rt.shutdown().await?; // turns in flight finish, the store is flushed
/// # Ok(()) }
/// ```
pub fn shutdown_signal() -> impl Future<Output = std::io::Result<Signal>> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let installed = tokio::runtime::Handle::try_current()
            .map_err(|_| {
                std::io::Error::other(
                    "gears::shutdown_signal must be called inside a tokio runtime",
                )
            })
            .and_then(|_| {
                Ok((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            });
        async move {
            let (mut interrupt, mut terminate) = installed?;
            tokio::select! {
                _ = interrupt.recv() => Ok(Signal::Interrupt),
                _ = terminate.recv() => Ok(Signal::Terminate),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            tokio::signal::ctrl_c().await?;
            Ok(Signal::Interrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_the_future_fails_instead_of_panicking() {
        let stop = shutdown_signal();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let error = runtime.block_on(stop).unwrap_err();
        assert!(error.to_string().contains("tokio runtime"), "{error}");
    }
}
