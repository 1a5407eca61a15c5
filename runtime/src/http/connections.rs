//! The accept loop of [`serve`](super::serve): HTTP/1 connections on hyper, each bounded
//! in number and in time, and drained on shutdown.
//!
//! - At most `max_connections` at once: a slot is taken *before* `accept`, so past the
//!   limit new connections wait in the kernel's listen backlog; the server never holds
//!   more sockets, tasks or buffers than the limit.
//! - hyper's header-read timeout (its timer starts whenever the connection waits for a
//!   request head: at its opening and after each response) cuts slowloris clients, and
//!   with them connections kept alive with no next request; heads are at most
//!   [`MAX_HEAD_LEN`](super::MAX_HEAD_LEN).
//! - The idle timeout closes a connection on which no byte moved either way for that
//!   long (a client that stopped reading, a route that sends nothing), [`Tracked`] noting
//!   when bytes last moved.
//! - On shutdown: stop accepting, then hyper-util's `GracefulShutdown` lets each
//!   connection finish the response in flight and closes it.
//!
//! Body-read timeouts and the early 413 are per request, in `admission.rs`. Imports hyper
//! and hyper-util (nothing else names them) and the ingress' counters.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{Counts, MAX_HEAD_LEN, closed};

/// The connection-level settings of an [`HttpConfig`](super::HttpConfig).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_connections: usize,
}

/// Serves `app` on `listener` until `closing` turns true, then waits for the open
/// connections to finish their responses.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counts: Arc<Counts>,
    closing: watch::Receiver<bool>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut closing = std::pin::pin!(closed(closing));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed; stop serving rather than spin if it were.
                Err(_) => break,
            },
            () = &mut closing => break,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => socket,
                Err(e) => {
                    tokio::select! {
                        () = accept_failed(e) => {}
                        () = &mut closing => break,
                    }
                    continue;
                }
            },
            () = &mut closing => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: socket,
            activity: activity.clone(),
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_HEAD_LEN)
            .serve_connection(io, TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        let counts = counts.clone();
        counts.connections_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        if e.is_timeout() {
                            counts.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                () = idle(&activity, limits.idle_timeout) => {
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("closed an idle HTTP connection");
                }
            }
            counts.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // New connections are refused from here on; the open ones finish their responses.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// After a failed `accept`: a connection reset before it was accepted is nothing; any
/// other error (out of file descriptors, say) is logged and retried after a second, as
/// hyper's and axum's servers do, since closing connections may free what was missing.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "the HTTP listener failed to accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// When bytes last moved on a connection.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last read or write that moved bytes.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Resolves once no byte has moved for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let deadline = activity.last() + timeout;
        if deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// A socket that notes in its [`Activity`] each read or write that moved bytes.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    fn moved<E>(&self, result: Poll<Result<usize, E>>) -> Poll<Result<usize, E>> {
        if let Poll::Ready(Ok(1..)) = result {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_a_quiet_stretch_as_long_as_the_timeout() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(10);
        let started = Instant::now();
        let watch = idle(&activity, timeout);
        tokio::pin!(watch);
        // Bytes move at 6 s: the quiet stretch starts over.
        tokio::select! {
            () = &mut watch => panic!("idle before the timeout"),
            () = tokio::time::sleep(Duration::from_secs(6)) => activity.touch(),
        }
        watch.await;
        assert_eq!(started.elapsed(), Duration::from_secs(16));
    }
}
