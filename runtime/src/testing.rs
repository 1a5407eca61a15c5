//! Testing actors: [`TestRuntime`], a runtime on a temporary store for a test, and
//! [`TestContext`], a [`Context`] for one turn of an actor that a test hands to a handler
//! called directly on a plain value, then asks what the turn asked for ([`Recorded`]).
//!
//! A handler that takes no `ctx` is a plain method and needs none of this. One that takes
//! `&Context` gets a context from [`TestRuntime::context`]: calls made through it
//! (`ctx.get::<B>(key)`) go to the test runtime's actors, and what the handler records with it
//! (sends, timers, events, subscriptions, deletion) is kept on the context, never applied:
//! nothing is written and nothing is delivered, as if the turn had not committed yet.
//!
//! ```
//! use gears::prelude::*;
//! use gears::testing::TestRuntime;
//!
//! #[derive(Actor, Default, Serialize, Deserialize)]
//! pub struct Greeter {
//!     greeted: u32,
//!     friends: Vec<String>,
//! }
//!
//! #[handlers]
//! impl Greeter {
//!     pub async fn greet(&mut self, ctx: &Context, name: String) -> String {
//!         self.greeted += 1;
//!         ctx.send::<Greeter>(name.clone()).greeted_by(ctx.key().to_string());
//!         format!("hello {name}")
//!     }
//!
//!     pub async fn greeted_by(&mut self, other: String) {
//!         self.friends.push(other);
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let t = TestRuntime::new(|b| b.register::<Greeter>()).await?;
//! let ctx = t.context::<Greeter>("ann");
//! let mut ann = Greeter::default();
//! assert_eq!(ann.greet(&ctx, "bob".into()).await, "hello bob");
//! assert_eq!(ann.greeted, 1);
//! let sent = &ctx.recorded().sends[0];
//! assert_eq!((sent.actor.as_str(), sent.key.as_str()), ("Greeter", "bob"));
//! assert!(matches!(sent.message::<Greeter>(), Some(GreeterMessage::GreetedBy { other }) if other == "ann"));
//! t.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Virtual time
//!
//! A test runtime's clock is virtual: it stands still until the test moves it with
//! [`TestRuntime::advance`], which fires the timers that come due, in due order (moving
//! the clock to each one's time), delivers the sends they make, passivates the actors idle
//! for longer than their timeout, and returns once all of it has committed. A test of an
//! hour-long expiry takes milliseconds, and its outcome does not depend on the machine's
//! speed. [`TestRuntime::crash_and_reopen`] stops the runtime as a crash would and opens it
//! again on the same store, with the clock where it was. [`TestRuntime::state`] and
//! [`TestRuntime::timers`] read any actor without a handler.
//!
//! ```
//! use std::time::Duration;
//! use gears::prelude::*;
//! use gears::testing::TestRuntime;
//!
//! #[derive(Actor, Default, Serialize, Deserialize)]
//! pub struct Lease {
//!     holder: Option<String>,
//! }
//!
//! #[handlers]
//! impl Lease {
//!     pub async fn take(&mut self, ctx: &Context, who: String, ttl_s: u64) {
//!         self.holder = Some(who);
//!         ctx.timer::<Self>("expire", Timer::after(Duration::from_secs(ttl_s))).expire();
//!     }
//!
//!     pub async fn expire(&mut self) {
//!         self.holder = None;
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut t = TestRuntime::new(|b| b.register::<Lease>()).await?;
//! t.runtime().get::<Lease>("l").take("ann".into(), 3600).await?;
//! t.advance(Duration::from_secs(3599)).await?;
//! assert_eq!(t.state::<Lease>("l").await?.holder.as_deref(), Some("ann"));
//! assert_eq!(t.timers::<Lease>("l").await?.len(), 1);
//! t.crash_and_reopen().await?; // what was acknowledged is still there, the timer too
//! t.advance(Duration::from_secs(1)).await?;
//! assert_eq!(t.state::<Lease>("l").await?.holder, None);
//! t.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The test runtime owns the temporary store, the configuration and the virtual clock, so a
//! runtime can be opened on it again ([`TestRuntime::restart`],
//! [`TestRuntime::crash_and_reopen`]). It imports the runtime and the context; nothing
//! imports it, and the production path does not know it exists beyond the clock it reads
//! (the context lends it a read of the effects it already keeps).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::actor::Handlers;
use crate::builder::Builder;
use crate::clock::{VirtualTime, duration_ms};
use crate::codec::{Payload, TimerEntry};
use crate::context::{Context, Effects, SubscriptionOp, TimerOp, TurnType};
use crate::error::{CallError, Error, StorageError};
use crate::runtime::Runtime;

type Configure = Box<dyn Fn(Builder) -> Builder + Send + Sync>;

/// A runtime for a test, on a store in a temporary folder that is removed when the test
/// runtime is shut down or dropped.
///
/// Open it with the types the test needs (`TestRuntime::new(|b| b.register::<A>())`); call
/// its actors through [`runtime`](Self::runtime), and make contexts for handlers called
/// directly with [`context`](Self::context). End a test with [`shutdown`](Self::shutdown);
/// dropping it instead shuts the runtime down too when it can block (inside a multi-threaded
/// Tokio runtime, as Gears needs, and not while a panic unwinds), then removes the folder.
pub struct TestRuntime {
    runtime: Runtime,
    configure: Configure,
    /// The virtual clock of every runtime opened on this store.
    time: Arc<VirtualTime>,
    /// The runtime was shut down: dropping has nothing to stop.
    stopped: bool,
    // Last, so the folder is removed after the runtime is gone.
    dir: tempfile::TempDir,
}

impl TestRuntime {
    /// Opens a runtime on a new temporary store, configured by `configure` (the store's path
    /// is the test runtime's: a path set there is replaced). `configure` is kept to open the
    /// runtime again on the same store ([`restart`](Self::restart)).
    pub async fn new<F>(configure: F) -> Result<TestRuntime, Error>
    where
        F: Fn(Builder) -> Builder + Send + Sync + 'static,
    {
        let dir = tempfile::Builder::new()
            .prefix("gears-test-")
            .tempdir()
            .map_err(|e| {
                Error::Storage(StorageError::new(format!(
                    "cannot create a temporary store folder: {e}"
                )))
            })?;
        let configure: Configure = Box::new(configure);
        let time = Arc::new(VirtualTime::new());
        let runtime = open(&configure, dir.path(), &time).await?;
        Ok(TestRuntime {
            runtime,
            configure,
            time,
            stopped: false,
            dir,
        })
    }

    /// The runtime, for calls, sends, reads and watches as in production.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The folder of the temporary store.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A context for a turn of `A(key)`, to pass to a handler of `A` called directly on a
    /// value of `A` (`state.handler(&ctx, args).await`).
    ///
    /// It is the context of a plain call from outside: `ctx.key()` is `key`, calls made
    /// through `ctx.get::<B>(..)` go to this runtime's actors (with `A(key)` in their call
    /// chain, so a call back to it fails with `CallError::Cycle` as it would in a turn), and
    /// `ctx.timers()` lists no pending timers. Sends, timers, events, subscriptions and
    /// deletion are recorded on it and never applied: read them with
    /// [`TestContext::recorded`]. A fresh context is a fresh turn.
    ///
    /// # Panics
    ///
    /// If `key` is not a valid key (empty, or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)
    /// bytes): no turn of such an actor can run.
    pub fn context<A: Handlers>(&self, key: impl AsRef<str>) -> TestContext<A> {
        let key = key.as_ref();
        if let Err(e) = crate::codec::validate_key(key) {
            panic!("`TestRuntime::context::<{}>({key:?})`: {e}", A::NAME);
        }
        let ctx = Context::new(
            self.runtime.shared.clone(),
            TurnType::of::<A>(),
            key.into(),
            None,
            Arc::new(Vec::<TimerEntry>::new()),
            None,
        );
        TestContext {
            ctx,
            _actor: PhantomData,
        }
    }

    /// Shuts the runtime down cleanly (as [`Runtime::shutdown`]) and opens it again on the
    /// same store with the same configuration: what survives a restart is what was durable.
    /// Handles and clones of the old [`runtime`](Self::runtime) answer `ShuttingDown`; take
    /// new ones.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stopped = true;
        self.runtime.shutdown().await?;
        self.runtime = open(&self.configure, self.dir.path(), &self.time).await?;
        self.stopped = false;
        Ok(())
    }

    /// Stops the runtime as a crash (a SIGKILL) would and opens it again on the same store,
    /// with the same configuration and the virtual clock where it was: what survives is
    /// what was durable. Calls not answered yet are abandoned (their callers get
    /// `ShuttingDown`), nothing is drained and the store gets no final sync; the new runtime
    /// redelivers the outbox and fires the timers that came due, as a real restart does.
    /// Handles and clones of the old [`runtime`](Self::runtime) answer `ShuttingDown`.
    pub async fn crash_and_reopen(&mut self) -> Result<(), Error> {
        self.stopped = true;
        self.runtime.crash().await;
        self.runtime = open(&self.configure, self.dir.path(), &self.time).await?;
        self.stopped = false;
        Ok(())
    }

    /// The test runtime's time now: virtual, it moves only with [`advance`](Self::advance)
    /// (handlers read it with [`Context::now`]; timers are due by it).
    pub fn now(&self) -> SystemTime {
        self.time.now()
    }

    /// Moves the virtual clock forward by `by` and lets everything due by then happen:
    /// timers fire in due order (the clock is moved to each one's due time in turn, so a
    /// periodic timer fires once per period), sends made by their turns are delivered, and
    /// activations idle for longer than their timeout are passivated. Returns when nothing
    /// is left to do at the new time: every resulting turn has committed.
    /// `advance(Duration::ZERO)` just lets what is due now happen (sends in flight, say).
    ///
    /// Timeouts that bound waiting (the call timeout, delivery backoffs after a failure)
    /// run on real time; so does this wait, which fails with `Error::Config` if the
    /// runtime is still busy after a minute of real time.
    pub async fn advance(&self, by: Duration) -> Result<(), Error> {
        let target = self.time.elapsed_ms().saturating_add(duration_ms(by));
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            let settled = self.settle(deadline).await?;
            self.runtime.passivate_idle();
            let now = self.time.elapsed_ms();
            if now >= target {
                return Ok(());
            }
            // Quiet means nothing is due now: the next due time is later (or never).
            let next = self.time.elapsed_at(settled.next_due_ms);
            self.time.set_elapsed_ms(next.clamp(now + 1, target));
        }
    }

    /// Settles the runtime at the current virtual time (see [`advance`](Self::advance)).
    async fn settle(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<crate::shared::Settled, Error> {
        loop {
            let settled = self
                .runtime
                .settle()
                .await
                .map_err(|f| Error::Config(format!("the test runtime cannot settle: {f}")))?;
            if settled.quiet {
                return Ok(settled);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Config(format!(
                    "the test runtime was still busy after {SETTLE_LIMIT:?} of real time \
                     (stats: {:?})",
                    self.runtime.stats()
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The stored state of `A(key)`, read without a handler (a read-only turn: once its
    /// writes are durable); a key never written reads as `Default`.
    pub async fn state<A: Handlers>(&self, key: impl AsRef<str>) -> Result<A, CallError> {
        let bytes = self
            .runtime
            .read::<A, _>(key, |state| postcard::to_stdvec(state))
            .await?
            .map_err(|e| copy_failed(&e))?;
        postcard::from_bytes(&bytes).map_err(|e| copy_failed(&e))
    }

    /// The pending timers of `A(key)`, earliest first (due times by the virtual clock).
    pub async fn timers<A: Handlers>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Vec<crate::TimerInfo>, CallError> {
        self.runtime.timers::<A>(key).await
    }

    /// Shuts the runtime down cleanly and removes its store.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.stopped = true;
        self.runtime.shutdown().await
    }
}

/// A state that does not go through its own serde round trip (a serde attribute that is not
/// symmetric, say).
fn copy_failed(e: &postcard::Error) -> CallError {
    CallError::Storage(StorageError::new(format!(
        "cannot copy the state through postcard: {e}"
    )))
}

/// How long (real time) `advance` waits for the runtime to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

async fn open(
    configure: &Configure,
    path: &Path,
    time: &Arc<VirtualTime>,
) -> Result<Runtime, Error> {
    configure(Runtime::builder())
        .path(path)
        .virtual_time(time.clone())
        .open()
        .await
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if self.stopped || std::thread::panicking() {
            return;
        }
        // A clean shutdown needs the Tokio runtime's other workers while this one blocks.
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if tokio.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let runtime = self.runtime.clone();
        let stopped = tokio::task::block_in_place(|| tokio.block_on(runtime.shutdown()));
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "a dropped test runtime did not shut down cleanly");
        }
    }
}

impl fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRuntime")
            .field("path", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A [`Context`] for one turn of `A(key)`, made by [`TestRuntime::context`]: pass `&ctx` to a
/// handler taking `&Context` (it dereferences to one), then read what the handler asked of
/// it with [`recorded`](Self::recorded).
pub struct TestContext<A: Handlers> {
    ctx: Context,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Handlers> Deref for TestContext<A> {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl<A: Handlers> fmt::Debug for TestContext<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TestContext").field(&self.ctx).finish()
    }
}

impl<A: Handlers> TestContext<A> {
    /// What the turn has asked for so far, in the order it asked: what would be applied, in
    /// one atomic batch with the state, if the turn committed now.
    pub fn recorded(&self) -> Recorded<A> {
        self.ctx.read_effects(|effects| match effects {
            Some(effects) => Recorded::of(effects),
            None => Recorded::default(),
        })
    }
}

/// What a turn asked of its [`Context`], as [`TestContext::recorded`] reads it.
#[non_exhaustive]
pub struct Recorded<A: Handlers> {
    /// Messages sent with `ctx.send`, in order.
    pub sends: Vec<RecordedSend>,
    /// Timers set and cancelled with `ctx.timer` and `ctx.cancel_timer`, in order.
    pub timers: Vec<TimerRequest>,
    /// Events published with `ctx.publish`, in order.
    pub events: Vec<A::Event>,
    /// Subscriptions and unsubscriptions, in order.
    pub subscriptions: Vec<SubscriptionRequest>,
    /// `ctx.delete()` was called.
    pub deleted: bool,
    /// The first request the runtime refused (an event of another type, a send to an
    /// unregistered type or an invalid key, a timer on another actor type...): a real turn
    /// fails with this error and is rolled back.
    pub refused: Option<CallError>,
}

impl<A: Handlers> Default for Recorded<A> {
    fn default() -> Self {
        Recorded {
            sends: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
            subscriptions: Vec::new(),
            deleted: false,
            refused: None,
        }
    }
}

impl<A: Handlers> Recorded<A> {
    fn of(effects: &Effects) -> Self {
        let sends = effects
            .sends
            .iter()
            .map(|send| RecordedSend {
                actor: send.target.actor.clone(),
                key: send.target.key.clone(),
                message: RecordedMessage::of(&send.payload),
            })
            .collect();
        let timers = effects
            .timers
            .iter()
            .map(|op| match op {
                TimerOp::Set {
                    name,
                    due_ms,
                    every_ms,
                    message,
                } => TimerRequest::Set {
                    name: name.clone(),
                    due: UNIX_EPOCH + Duration::from_millis(*due_ms),
                    every: every_ms.map(Duration::from_millis),
                    message: RecordedMessage::of(message),
                },
                TimerOp::Cancel(name) => TimerRequest::Cancel { name: name.clone() },
            })
            .collect();
        // `publish` records only events of the turn's type (others are refused).
        let events = effects
            .events
            .iter()
            .filter_map(|event| event.downcast_ref::<A::Event>().cloned())
            .collect();
        let subscriptions = effects
            .subscriptions
            .iter()
            .map(|op| match op {
                SubscriptionOp::Subscribe { publisher, handler } => {
                    SubscriptionRequest::Subscribe {
                        actor: publisher.actor.clone(),
                        key: publisher.key.clone(),
                        handler: handler.clone(),
                    }
                }
                SubscriptionOp::Unsubscribe(publisher) => SubscriptionRequest::Unsubscribe {
                    actor: publisher.actor.clone(),
                    key: publisher.key.clone(),
                },
            })
            .collect();
        Recorded {
            sends,
            timers,
            events,
            subscriptions,
            deleted: effects.delete,
            refused: effects.error.clone().map(CallError::from_failure),
        }
    }
}

impl<A: Handlers> fmt::Debug for Recorded<A>
where
    A::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("sends", &self.sends)
            .field("timers", &self.timers)
            .field("events", &self.events)
            .field("subscriptions", &self.subscriptions)
            .field("deleted", &self.deleted)
            .field("refused", &self.refused)
            .finish()
    }
}

/// A message recorded with a turn (by `ctx.send` or `ctx.timer`): its handler's name and its
/// arguments, as they would be stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// The handler it calls (its stable name).
    pub handler: String,
    arguments: Vec<u8>,
}

impl RecordedMessage {
    fn of(payload: &Payload) -> Self {
        match payload {
            Payload::Message { handler, args } => RecordedMessage {
                handler: handler.to_string(),
                arguments: args.clone(),
            },
            // A context records only messages; the other payloads are made when a turn
            // commits or by the runtime.
            _ => RecordedMessage {
                handler: String::new(),
                arguments: Vec::new(),
            },
        }
    }

    /// The message as `B`'s message type (`<B>Message`, one variant per handler, with the
    /// arguments as named fields), decoded as its receiver would decode it. Fails if `B` has
    /// no handler of that name or the arguments are not its handler's.
    pub fn decode<B: Handlers>(&self) -> Result<B::Message, String> {
        B::__decode_message(&self.handler, &self.arguments)
    }
}

impl fmt::Debug for RecordedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedMessage")
            .field("handler", &self.handler)
            .field("arguments", &format_args!("{} bytes", self.arguments.len()))
            .finish()
    }
}

/// A send recorded with a turn: `ctx.send::<B>(key).handler(args)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedSend {
    /// The receiver's type (its storage name, `B::NAME`).
    pub actor: String,
    /// The receiver's key.
    pub key: String,
    /// The message.
    pub message: RecordedMessage,
}

impl RecordedSend {
    /// The message as `B`'s message type, if it is sent to an actor of type `B` and decodes
    /// as `B`'s (see [`RecordedMessage::decode`]).
    pub fn message<B: Handlers>(&self) -> Option<B::Message> {
        if self.actor != B::NAME {
            return None;
        }
        self.message.decode::<B>().ok()
    }
}

/// A timer request recorded with a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerRequest {
    /// `ctx.timer::<Self>(name, when).handler(args)`.
    Set {
        /// The timer's name.
        name: String,
        /// When it would fire first (to the millisecond, as timers are stored).
        due: SystemTime,
        /// Its period, if it repeats.
        every: Option<Duration>,
        /// The message it would deliver to the actor.
        message: RecordedMessage,
    },
    /// `ctx.cancel_timer(name)`.
    Cancel {
        /// The timer's name.
        name: String,
    },
}

/// A subscription change recorded with a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionRequest {
    /// `ctx.subscribe::<B>(key, handler)`.
    Subscribe {
        /// The publisher's type (its storage name).
        actor: String,
        /// The publisher's key.
        key: String,
        /// The handler of this actor its events would reach.
        handler: String,
    },
    /// `ctx.unsubscribe::<B>(key)`.
    Unsubscribe {
        /// The publisher's type (its storage name).
        actor: String,
        /// The publisher's key.
        key: String,
    },
}
