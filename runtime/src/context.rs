//! [`Context`]: what a handler can reach besides its own state: its key, calls and sends to
//! other actors, timers, events, subscriptions, deletion.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use serde::Serialize;

use crate::actor::{Deliver, Handlers};
use crate::codec::{ActorRef, OutboxRecord, Payload, TimerEntry};
use crate::error::Failure;
use crate::handle::{CallIds, Caller};
use crate::shared::Shared;

/// One link of a call chain: the actor whose turn made the call, and who called it.
pub(crate) struct ChainLink {
    pub(crate) actor: &'static str,
    pub(crate) key: Arc<str>,
    pub(crate) parent: Chain,
}

/// The actors waiting on a call, innermost first; `None` for calls from outside any actor.
pub(crate) type Chain = Option<Arc<ChainLink>>;

/// Finds `(actor, key)` in a chain, and renders the chain for the error message.
pub(crate) fn find_cycle(chain: &Chain, actor: &str, key: &str) -> Option<String> {
    let links = || std::iter::successors(chain.as_deref(), |l| l.parent.as_deref());
    if !links().any(|l| l.actor == actor && &*l.key == key) {
        return None;
    }
    let mut path: Vec<String> = links()
        .map(|l| format!("{}({:?})", l.actor, &*l.key))
        .collect();
    path.reverse();
    path.push(format!("{actor}({key:?})"));
    Some(path.join(" → "))
}

/// A timer's schedule: when it first fires and whether it repeats.
///
/// Timers are durable: they survive restarts. A timer that came due while the runtime was
/// down fires once when it starts again; a periodic timer then continues one period after
/// that firing (missed periods are not replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a `Timer` is only a schedule: pass it to `ctx.timer::<Self>(name, timer)` and \
              call a handler method on what that returns"]
pub struct Timer {
    due: Due,
    every: Option<Duration>,
}

/// When a timer first fires: "from now" is read from the runtime's clock when the timer is
/// set (a test runtime's clock is virtual).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    After(Duration),
    At(SystemTime),
}

impl Timer {
    /// Fires once, `delay` from now.
    pub fn after(delay: Duration) -> Timer {
        Timer {
            due: Due::After(delay),
            every: None,
        }
    }

    /// Fires once, at `time` (at once if that has passed).
    pub fn at(time: SystemTime) -> Timer {
        Timer {
            due: Due::At(time),
            every: None,
        }
    }

    /// Fires every `period` (at least 1 ms), the first time one period from now.
    pub fn every(period: Duration) -> Timer {
        let period = period.max(Duration::from_millis(1));
        Timer {
            due: Due::After(period),
            every: Some(period),
        }
    }

    /// When it first fires, if set now.
    fn due_at(&self, now: SystemTime) -> SystemTime {
        match self.due {
            Due::After(delay) => now + delay,
            Due::At(time) => time,
        }
    }
}

/// A pending timer of the actor, as listed by [`Context::timers`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimerInfo {
    /// The timer's name (unique per actor).
    pub name: String,
    /// When it fires next.
    pub due: SystemTime,
    /// Its period, if it repeats.
    pub every: Option<Duration>,
}

/// An actor's timers as users see them, earliest first.
pub(crate) fn timer_infos(timers: &[TimerEntry]) -> Vec<TimerInfo> {
    let mut list: Vec<TimerInfo> = timers
        .iter()
        .map(|t| TimerInfo {
            name: t.name.clone(),
            due: UNIX_EPOCH + Duration::from_millis(t.due_ms),
            every: t.every_ms.map(Duration::from_millis),
        })
        .collect();
    list.sort_by_key(|t| t.due);
    list
}

/// Milliseconds since the Unix epoch (the timers' clock).
pub(crate) use crate::clock::epoch_ms;

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A change to the actor's timers, applied when the turn commits.
pub(crate) enum TimerOp {
    Set {
        name: String,
        due_ms: u64,
        every_ms: Option<u64>,
        message: Payload,
    },
    Cancel(String),
}

/// A change to what the actor subscribes to, applied when the turn commits.
pub(crate) enum SubscriptionOp {
    Subscribe {
        publisher: ActorRef,
        handler: String,
    },
    Unsubscribe(ActorRef),
}

/// Everything a turn asked for besides its state change. Applied only if the turn commits;
/// dropped if it is rolled back.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) sends: Vec<OutboxRecord>,
    pub(crate) events: Vec<Box<dyn Any + Send>>,
    pub(crate) timers: Vec<TimerOp>,
    pub(crate) subscriptions: Vec<SubscriptionOp>,
    pub(crate) delete: bool,
    /// The first refused request: the turn fails with it.
    pub(crate) error: Option<Failure>,
}

impl Effects {
    fn refuse(&mut self, failure: Failure) {
        self.error.get_or_insert(failure);
    }
}

/// What a context knows of the actor type running the turn.
pub(crate) struct TurnType {
    pub(crate) actor: &'static str,
    pub(crate) type_id: TypeId,
    pub(crate) event_type: TypeId,
    pub(crate) event_type_name: &'static str,
    pub(crate) event_handler: fn(&str) -> Option<TypeId>,
}

impl TurnType {
    pub(crate) fn of<A: Handlers>() -> TurnType {
        TurnType {
            actor: A::NAME,
            type_id: TypeId::of::<A>(),
            event_type: TypeId::of::<A::Event>(),
            event_type_name: std::any::type_name::<A::Event>(),
            event_handler: A::__event_handler,
        }
    }
}

/// Given to handlers that ask for it (`ctx: &Context` right after the receiver): the actor's
/// key, calls and sends to other actors, timers, events and subscriptions.
///
/// Sends, timers, events, subscriptions and deletion take effect only if the turn commits,
/// atomically with the state change, and leave only once that is durable. A turn that is
/// rolled back (the handler returned `Err`, panicked or timed out) does none of them.
pub struct Context {
    shared: Arc<Shared>,
    turn: TurnType,
    key: Arc<str>,
    caller: Chain,
    timers: Arc<Vec<TimerEntry>>,
    /// A turn that may run again: the ids that make its calls exactly once.
    calls: Option<Arc<CallIds>>,
    /// Allocated by the first effect: most turns have none.
    effects: Mutex<Option<Box<Effects>>>,
    /// [`Context::turn_id`] of a turn that runs once (drawn when first asked).
    once_id: OnceLock<u128>,
}

impl Context {
    pub(crate) fn new(
        shared: Arc<Shared>,
        turn: TurnType,
        key: Arc<str>,
        caller: Chain,
        timers: Arc<Vec<TimerEntry>>,
        calls: Option<Arc<CallIds>>,
    ) -> Self {
        Context {
            shared,
            turn,
            key,
            caller,
            timers,
            calls,
            effects: Mutex::new(None),
            once_id: OnceLock::new(),
        }
    }

    /// What the turn asked for; `None` if nothing.
    pub(crate) fn into_effects(self) -> Option<Box<Effects>> {
        self.effects.into_inner()
    }

    /// Reads the turn's effects so far without taking them (`None` if there are none): how
    /// the test contexts of `testing.rs` show a test what a handler asked for.
    pub(crate) fn read_effects<R>(&self, read: impl FnOnce(Option<&Effects>) -> R) -> R {
        read(self.effects.lock().as_deref())
    }

    /// The turn's effects so far, to add one.
    fn effects(&self) -> MappedMutexGuard<'_, Effects> {
        MutexGuard::map(self.effects.lock(), |e| &mut **e.get_or_insert_default())
    }

    /// The key of the actor running this turn.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// An id of this turn that is the same every time the turn runs, and different for
    /// every other turn: what a handler can tag a saga step's effects with (a hold, a
    /// reservation) so that a later step or compensation names exactly this turn's.
    ///
    /// A turn that may run again (a delivered send or timer firing, a request with an
    /// idempotency key: see [`Context::get`]) gets the id its exactly-once calls derive from,
    /// so when it runs again it makes the same calls with the same arguments. A plain call's
    /// turn runs once: its id is drawn at random (unique across turns and restarts with
    /// overwhelming probability). Ids of different turns never depend on each other, so a
    /// stale effect of one turn can never be mistaken for another's.
    pub fn turn_id(&self) -> u128 {
        match &self.calls {
            Some(calls) => calls.turn(),
            None => *self.once_id.get_or_init(crate::codec::unique_id),
        }
    }

    /// The storage name of the actor type running this turn.
    pub fn actor_name(&self) -> &'static str {
        self.turn.actor
    }

    /// A typed handle to another actor (or another key of the same type). Calls made through
    /// it carry this turn's call chain: calling back into an actor that is waiting on this
    /// turn fails at once with `CallError::Cycle` instead of deadlocking.
    ///
    /// **Calls from a turn that may run again are made exactly once.** A turn runs again when
    /// it delivers a send or a timer firing that is retried (it failed, or the process died
    /// before it committed), or serves an HTTP request retried with the same
    /// `Idempotency-Key`. Each call such a turn makes to a handler that may change its
    /// actor's state (`&mut self`) gets an id from what identifies the turn and the call's
    /// position in it; the callee keeps the call's result under that id in the same batch as
    /// its state change, for the runtime's idempotency retention (24 h by default), and
    /// answers a repeat from it without running the handler. A saga step called this way
    /// needs no bookkeeping of its own. So a turn that runs again must make the same calls in
    /// the same order (a different handler or arguments at a position fails that call with
    /// `CallError::Invalid`). Not covered: read-only handlers (they run again), handlers whose
    /// result or error type is not `Serialize` and `Deserialize` (no result can be kept), and
    /// calls from a plain call's turn (nothing runs it again but its caller).
    ///
    /// A call that failed on its way in one run (`Timeout`, `Unavailable`: it may or may not
    /// have run) can succeed in the next, so a turn that may run again must not decide on a
    /// compensating *call* from such a failure: the next run can take the other branch,
    /// after the compensation already happened. Compensate with [`send`](Self::send)s,
    /// which leave only if the turn commits (the order demo's `Order::try_lines` does).
    pub fn get<B: Handlers>(&self, key: impl AsRef<str>) -> B::Handle {
        let link = Arc::new(ChainLink {
            actor: self.turn.actor,
            key: self.key.clone(),
            parent: self.caller.clone(),
        });
        B::__handle(
            Caller::new(&self.shared, key.as_ref(), Some(link)).with_ids(self.calls.clone()),
        )
    }

    /// Sends a message to another actor (or this one), fire-and-forget and exactly once:
    /// `ctx.send::<Order>("o-1").ship(lines)`. It is written to the outbox in the same atomic
    /// batch as this turn's state, delivered once that is durable, retried until the target
    /// has committed it, and processed once even across crashes.
    ///
    /// An invalid key or unregistered type fails this turn (rolled back) with that error.
    pub fn send<B: Handlers>(&self, key: impl Into<String>) -> B::Mail<TurnSend<'_, B>> {
        B::__mail(TurnSend {
            ctx: self,
            key: key.into(),
            _target: PhantomData,
        })
    }

    /// Schedules a durable timer on this actor that calls one of its own handlers:
    /// `ctx.timer::<Self>("expire", Timer::after(ttl)).expire(order)`. A timer of the same
    /// name replaces the earlier one. The type must be the actor running this turn.
    pub fn timer<A: Handlers>(
        &self,
        name: impl Into<String>,
        when: Timer,
    ) -> A::Mail<TimerSet<'_, A>> {
        A::__mail(TimerSet {
            ctx: self,
            name: name.into(),
            when,
            _actor: PhantomData,
        })
    }

    /// Cancels this actor's timer `name`, if there is one.
    pub fn cancel_timer(&self, name: impl Into<String>) {
        self.effects().timers.push(TimerOp::Cancel(name.into()));
    }

    /// The runtime's time now: the system's, or a test runtime's virtual time (which
    /// `gears::testing::TestRuntime::advance` moves). Use it, not
    /// `SystemTime::now()`, for times a handler compares with its timers' (a deadline it
    /// stores, say).
    pub fn now(&self) -> SystemTime {
        self.shared.clock.now()
    }

    /// This actor's pending timers as of the start of the turn, earliest first.
    pub fn timers(&self) -> Vec<TimerInfo> {
        timer_infos(&self.timers)
    }

    /// Publishes an event of this actor (its `#[actor(events = ...)]` type). Watchers and
    /// subscribers receive it once the turn is durable, in publication order.
    pub fn publish<E: Serialize + Send + 'static>(&self, event: E) {
        let mut effects = self.effects();
        if TypeId::of::<E>() == self.turn.event_type {
            effects.events.push(Box::new(event));
        } else {
            effects.refuse(Failure::Invalid(format!(
                "`{}` publishes events of type `{}`, not `{}` (set it with \
                 `#[actor(events = ...)]`)",
                self.turn.actor,
                self.turn.event_type_name,
                std::any::type_name::<E>()
            )));
        }
    }

    /// Subscribes this actor to the events of `B(key)`, durably: each event `B` publishes
    /// from now on reaches this actor's `handler` (a handler taking `B`'s event type as its
    /// one argument) exactly once, in order, also across restarts.
    pub fn subscribe<B: Handlers>(&self, key: impl Into<String>, handler: &str) {
        let key = key.into();
        let mut effects = self.effects();
        if let Err(failure) = check_target::<B>(&self.shared, &key) {
            return effects.refuse(failure);
        }
        if (self.turn.event_handler)(handler) != Some(TypeId::of::<B::Event>()) {
            return effects.refuse(Failure::Invalid(format!(
                "`{}` has no handler `{handler}` taking one argument of `{}`'s event type `{}`",
                self.turn.actor,
                B::NAME,
                std::any::type_name::<B::Event>()
            )));
        }
        effects.subscriptions.push(SubscriptionOp::Subscribe {
            publisher: ActorRef {
                actor: B::NAME.to_string(),
                key,
            },
            handler: handler.to_string(),
        });
    }

    /// Ends this actor's subscription to the events of `B(key)`.
    pub fn unsubscribe<B: Handlers>(&self, key: impl Into<String>) {
        self.effects()
            .subscriptions
            .push(SubscriptionOp::Unsubscribe(ActorRef {
                actor: B::NAME.to_string(),
                key: key.into(),
            }));
    }

    /// Deletes this actor when the turn commits: its state (it reads as `Default` again),
    /// its timers and its subscriptions. Timers and subscriptions requested in the same turn
    /// are dropped with it; its sends and events still go out.
    pub fn delete(&self) {
        self.effects().delete = true;
    }
}

/// Records a send with the turn: what [`Context::send`]'s methods deliver to.
#[doc(hidden)]
pub struct TurnSend<'a, B> {
    ctx: &'a Context,
    key: String,
    _target: PhantomData<fn() -> B>,
}

impl<B: Handlers> Deliver<B> for TurnSend<'_, B> {
    type Output = ();

    fn deliver(self, message: B::Message) {
        let ctx = self.ctx;
        let record = message_record::<B>(&ctx.shared, self.key, &message, None);
        let mut effects = ctx.effects();
        match record {
            Ok(record) => effects.sends.push(record),
            Err(failure) => effects.refuse(failure),
        }
    }
}

/// Records a timer with the turn: what [`Context::timer`]'s methods deliver to.
#[doc(hidden)]
pub struct TimerSet<'a, A> {
    ctx: &'a Context,
    name: String,
    when: Timer,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Handlers> Deliver<A> for TimerSet<'_, A> {
    type Output = ();

    fn deliver(self, message: A::Message) {
        let ctx = self.ctx;
        let op = if TypeId::of::<A>() != ctx.turn.type_id {
            Err(Failure::Invalid(format!(
                "a timer of `{}` must call its own handlers, not `{}`'s",
                ctx.turn.actor,
                A::NAME
            )))
        } else if self.name.is_empty() || self.name.len() > MAX_TIMER_NAME_LEN {
            Err(Failure::Invalid(format!(
                "timer names are 1 to {MAX_TIMER_NAME_LEN} bytes, not {}",
                self.name.len()
            )))
        } else {
            encode_message::<A>(&message).map(|message| TimerOp::Set {
                name: self.name,
                due_ms: epoch_ms(self.when.due_at(self.ctx.shared.clock.now())),
                every_ms: self.when.every.map(duration_ms),
                message,
            })
        };
        let mut effects = ctx.effects();
        match op {
            Ok(op) => effects.timers.push(op),
            Err(failure) => effects.refuse(failure),
        }
    }
}

/// Longest timer name, in bytes: room for any actor key (names are often derived from one,
/// e.g. `hold:{order}`) plus a prefix or suffix of up to 256 bytes.
pub const MAX_TIMER_NAME_LEN: usize = crate::codec::MAX_KEY_LEN + 256;

/// A message as sends and timers store it: its handler's name and its arguments.
pub(crate) fn encode_message<B: Handlers>(message: &B::Message) -> Result<Payload, Failure> {
    match B::__encode_message(message) {
        Ok((handler, args)) => Ok(Payload::Message {
            handler: std::borrow::Cow::Borrowed(handler),
            args,
        }),
        Err(e) => Err(Failure::Invalid(format!(
            "cannot encode a message to `{}`: {e}",
            B::NAME
        ))),
    }
}

/// The outbox record of a message to `B(key)`, sent from a turn or from outside, after
/// checking the target.
pub(crate) fn message_record<B: Handlers>(
    shared: &Shared,
    key: String,
    message: &B::Message,
    idempotency: Option<String>,
) -> Result<OutboxRecord, Failure> {
    check_target::<B>(shared, &key)?;
    Ok(OutboxRecord {
        target: ActorRef {
            actor: B::NAME.to_string(),
            key,
        },
        payload: encode_message::<B>(message)?,
        idempotency,
        cause: crate::trace::Cause::current(),
        group: None,
    })
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("actor", &self.turn.actor)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Checks that `key` is acceptable and `B` registered, before a message to `B(key)` is
/// recorded.
fn check_target<B: Handlers>(shared: &Shared, key: &str) -> Result<(), Failure> {
    crate::codec::validate_key(key).map_err(Failure::InvalidKey)?;
    if !shared.registered(std::any::TypeId::of::<B>()) {
        return Err(Failure::NotRegistered(B::NAME));
    }
    Ok(())
}
