//! Which handler panics print a report: every one, except a retried delivery's.
//!
//! A send or timer firing whose handler panics is retried (see `dead_letters.rs`); the
//! process' panic hook would print its message (and, with `RUST_BACKTRACE`, a backtrace) at
//! every attempt. The runtime wraps the hook once, the first time a runtime opens: the
//! previous hook (std's, or the application's) still runs for every panic, except while a
//! turn marked quiet polls its handler, on the thread polling it. So a failing message prints
//! one report, at its first failure, however often it is retried; its later failures are
//! logged at debug level and it is logged at error level again when it is parked.
//!
//! An application that sets its own hook after opening a runtime replaces the wrapper: every
//! panic then goes to its hook, retries included.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Once;
use std::task::Poll;

thread_local! {
    /// Whether the handler being polled on this thread is a retry whose panic stays quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static WRAP: Once = Once::new();

/// Wraps the process' panic hook (once per process).
pub(crate) fn wrap_hook() {
    WRAP.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Polls `handler` with panics quiet (`quiet`) or reported. Every turn sets the flag for its
/// own polls, so a call that runs another actor's turn inside this poll (an idle callee runs
/// in its caller's task) reports or not by its own turn, and the caller's is restored after.
pub(crate) async fn polled<F: Future>(quiet: bool, handler: F) -> F::Output {
    let mut handler = pin!(handler);
    std::future::poll_fn(|cx| {
        let _restore = Restore(QUIET.with(|q| q.replace(quiet)));
        match handler.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(output),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Puts the flag back when a poll returns or unwinds (the hook has run by then).
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(self.0));
    }
}
