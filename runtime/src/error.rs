//! The two error types users see: [`CallError`] for calls, [`Error`] for the runtime itself.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

/// Why a call to an actor did not return the handler's value.
///
/// `E` is the handler's own error type (for handlers returning `Result<T, E>`); handlers that
/// cannot fail use the default `Infallible`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E = Infallible> {
    /// The handler ran and returned this error; its state changes were rolled back (committed,
    /// for a `#[handler(commit_errors)]` handler).
    #[error("handler failed: {0}")]
    Handler(E),
    /// The caller stopped waiting: no reply within its timeout (the handle's own, set with
    /// `handle.timeout(d)`, else the runtime's `call_timeout`). The turn stays whole: one
    /// that had started runs on and commits in full or not at all, one still queued does
    /// not run, and a handler still running past the runtime's `call_timeout` is cancelled
    /// and its actor reset to its last committed state. So a timed-out `&mut self` call may
    /// or may not have been applied; read the state (or retry an idempotent call) to know.
    #[error("call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A bound was reached ([`Overload`] says which); nothing was done; retry later.
    #[error("overloaded: {0}")]
    Overloaded(Overload),
    /// The handler panicked; the actor was reset to its last committed state.
    #[error(
        "handler `{handler}` of actor `{actor}` panicked; the actor was reset to its last committed state"
    )]
    Panicked {
        /// Storage name of the actor type.
        actor: &'static str,
        /// The handler that panicked.
        handler: &'static str,
    },
    /// The call would wait on an actor that is already waiting on this call (A → B → A).
    #[error("call cycle: {0} is already in this call chain and would deadlock")]
    Cycle(String),
    /// The store failed; nothing of this call was acknowledged and the actor was reset to its
    /// last durable state.
    #[error("storage failure: {0}")]
    Storage(StorageError),
    /// The actor's stored state could not be decoded.
    #[error(transparent)]
    Decode(DecodeError),
    /// The key is not acceptable (empty, or longer than 1 KiB).
    #[error(transparent)]
    InvalidKey(KeyError),
    /// The actor type was never registered with the runtime builder.
    #[error("actor type `{0}` is not registered: add `.register::<{0}>()` to the runtime builder")]
    NotRegistered(&'static str),
    /// The runtime is shutting down and accepts no new calls.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The turn asked for something that cannot be done (an event of the wrong type, a timer
    /// on another actor type, a subscription to a handler that does not take the event, an
    /// unencodable message); it was rolled back.
    #[error("refused: {0}")]
    Invalid(String),
    /// This node does not own the actor's shard (its [`Placement`](crate::Placement) says
    /// another node does); nothing was done here.
    #[error("this node does not own shard {0}")]
    NotOwner(u16),
    /// This node lost the actor's shard while the call ran: its turn's writes were refused
    /// (nothing of it was written) and the actor was reset. Retry: the shard's new owner
    /// answers.
    #[error("shard {0} moved to another owner while the call ran; nothing was written")]
    Fenced(u16),
    /// The actor's shard has no owner right now (it is moving between nodes); nothing was
    /// done. Retry shortly.
    #[error("shard {0} has no owner right now; retry shortly")]
    Unavailable(u16),
}

/// Which bound refused a call with [`CallError::Overloaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overload {
    /// The actor's mailbox is full: this one actor is busy (its other callers go first).
    Mailbox,
    /// The cap on live activations is reached and every live activation is busy.
    LiveActivations,
    /// The outbox holds as many undelivered messages as it may: the turn that would send
    /// more was rolled back.
    Outbox,
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overload::Mailbox => "the actor's mailbox is full",
            Overload::LiveActivations => {
                "the live activation cap is reached and no activation is idle"
            }
            Overload::Outbox => "the outbox is full: too many messages are waiting for delivery",
        })
    }
}

impl<E> CallError<E> {
    /// The handler's own error, if that is what this is.
    pub fn handler_error(&self) -> Option<&E> {
        match self {
            CallError::Handler(e) => Some(e),
            _ => None,
        }
    }

    /// Lets `?` carry a call's failure into the calling handler's own error type, which
    /// cannot implement `From<CallError<E>>` (the orphan rule forbids it, as `E` is the
    /// callee's): the handler's error `E` goes through `Into<U>` (a `From` you write between
    /// two error types of your own crate), and every other failure (timeout, overload,
    /// cycle, storage, ...: the call did not get an answer from the handler) through
    /// `unavailable`, typically a variant of your error that holds the [`CallError`]:
    ///
    /// ```
    /// use gears::CallError;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Insufficient;
    ///
    /// #[derive(Debug)]
    /// enum TransferError {
    ///     Account(Insufficient),
    ///     Unavailable(CallError),
    /// }
    ///
    /// impl From<Insufficient> for TransferError {
    ///     fn from(e: Insufficient) -> Self {
    ///         TransferError::Account(e)
    ///     }
    /// }
    ///
    /// // In a saga step: `ctx.get::<Account>(from).debit(5).await
    /// //     .map_err(|e| e.propagate(TransferError::Unavailable))?;`
    /// let refused: CallError<Insufficient> = CallError::Handler(Insufficient);
    /// assert!(matches!(
    ///     refused.propagate(TransferError::Unavailable),
    ///     TransferError::Account(Insufficient)
    /// ));
    /// let busy: CallError<Insufficient> = CallError::ShuttingDown;
    /// assert!(matches!(
    ///     busy.propagate(TransferError::Unavailable),
    ///     TransferError::Unavailable(CallError::ShuttingDown)
    /// ));
    /// ```
    ///
    /// A call to a handler that cannot fail has nothing to map: `.map_err(MyError::Unavailable)`.
    #[must_use]
    pub fn propagate<U>(self, unavailable: impl FnOnce(CallError) -> U) -> U
    where
        E: Into<U>,
    {
        match self.split() {
            Ok(failure) => unavailable(failure),
            Err(handler) => handler.into(),
        }
    }

    /// Maps the handler's error with `f`, keeping every other failure as it is.
    #[must_use]
    pub fn map_handler<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self.split() {
            Ok(failure) => failure,
            Err(handler) => CallError::Handler(f(handler)),
        }
    }

    /// The handler's error as `Err`, or any other failure as `Ok`, typed with any handler
    /// error type (it holds none).
    fn split<F>(self) -> Result<CallError<F>, E> {
        Ok(match self {
            CallError::Handler(e) => return Err(e),
            CallError::Timeout(d) => CallError::Timeout(d),
            CallError::Overloaded(w) => CallError::Overloaded(w),
            CallError::Panicked { actor, handler } => CallError::Panicked { actor, handler },
            CallError::Cycle(c) => CallError::Cycle(c),
            CallError::Storage(e) => CallError::Storage(e),
            CallError::Decode(e) => CallError::Decode(e),
            CallError::InvalidKey(e) => CallError::InvalidKey(e),
            CallError::NotRegistered(n) => CallError::NotRegistered(n),
            CallError::ShuttingDown => CallError::ShuttingDown,
            CallError::Invalid(why) => CallError::Invalid(why),
            CallError::NotOwner(s) => CallError::NotOwner(s),
            CallError::Fenced(s) => CallError::Fenced(s),
            CallError::Unavailable(s) => CallError::Unavailable(s),
        })
    }

    /// Turns a runtime failure (never a handler error) into a `CallError` of any `E`.
    pub(crate) fn from_failure(failure: Failure) -> Self {
        match failure {
            Failure::Timeout(d) => CallError::Timeout(d),
            Failure::Overloaded(what) => CallError::Overloaded(what),
            Failure::Panicked { actor, handler } => CallError::Panicked { actor, handler },
            Failure::Cycle(chain) => CallError::Cycle(chain),
            Failure::Storage(e) => CallError::Storage(e),
            Failure::Decode(e) => CallError::Decode(e),
            Failure::InvalidKey(e) => CallError::InvalidKey(e),
            Failure::NotRegistered(name) => CallError::NotRegistered(name),
            Failure::ShuttingDown => CallError::ShuttingDown,
            Failure::Invalid(why) => CallError::Invalid(why),
            Failure::NotOwner(shard) => CallError::NotOwner(shard),
            Failure::Fenced(shard) => CallError::Fenced(shard),
            Failure::Unavailable(shard) => CallError::Unavailable(shard),
        }
    }
}

impl CallError<Infallible> {
    /// Widens an infallible call's error to any handler error type, so `?` works across
    /// handlers with different error types.
    pub fn widen<E>(self) -> CallError<E> {
        match self.split() {
            Ok(failure) => failure,
            Err(never) => match never {},
        }
    }
}

/// A runtime failure of a call, before it is typed with the handler's error.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Failure {
    Timeout(std::time::Duration),
    Overloaded(Overload),
    Panicked {
        actor: &'static str,
        handler: &'static str,
    },
    Cycle(String),
    Storage(StorageError),
    Decode(DecodeError),
    InvalidKey(KeyError),
    NotRegistered(&'static str),
    ShuttingDown,
    Invalid(String),
    NotOwner(u16),
    Fenced(u16),
    Unavailable(u16),
}

/// Worded as the `CallError` it becomes (for logs where no caller will see it).
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        CallError::<Infallible>::from_failure(self.clone()).fmt(f)
    }
}

impl Failure {
    /// Retrying later may succeed without the message having been processed (the runtime was
    /// busy or stopping); such retries do not count as failed attempts.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(
            self,
            Failure::Overloaded(_)
                | Failure::ShuttingDown
                | Failure::NotOwner(_)
                | Failure::Fenced(_)
                | Failure::Unavailable(_)
        )
    }
}

/// A failure of the underlying store (I/O, a poisoned journal, an injected fault).
#[derive(Clone)]
pub struct StorageError(Arc<str>);

impl StorageError {
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        StorageError(message.to_string().into())
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageError({:?})", &*self.0)
    }
}

impl std::error::Error for StorageError {}

/// A stored value that could not be decoded: names the actor type and key so it can be found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot decode stored state of actor `{actor}` key {key:?}: {reason}")]
pub struct DecodeError {
    /// Storage name of the actor type.
    pub actor: &'static str,
    /// The actor's key.
    pub key: String,
    /// What is wrong with the bytes.
    pub reason: String,
}

/// Why a key was refused before it reached the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Keys must not be empty.
    #[error("invalid key: keys must not be empty")]
    Empty,
    /// Keys are at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    #[error("invalid key: {len} bytes is longer than the limit of {max} bytes")]
    TooLong {
        /// Length of the refused key in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// An error of the runtime itself: opening, configuring or shutting down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened or written.
    #[error("storage failure: {0}")]
    Storage(StorageError),
    /// The store was written by an incompatible version of Gears.
    #[error("the store at {path} has format version {found}; this build reads version {supported}")]
    IncompatibleStore {
        /// Where the store is.
        path: String,
        /// The version found on disk.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// The builder was given an invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster (feature `cluster`) could not be joined or its configuration disagrees.
    #[error("cluster: {0}")]
    Cluster(String),
    /// Opening or shutting down needs a Tokio runtime.
    #[error("Gears must run inside a Tokio runtime (multi-threaded): {0}")]
    NoTokio(String),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}
