//! Actors and helpers shared by the integration tests in `tests/tests/` (most of them modules
//! of one binary, `tests/tests/behaviours/`).

use std::path::Path;
use std::time::Duration;

use gears::prelude::*;

pub mod bank;
pub mod child;
pub mod gate;
pub mod http_nodes;
pub mod latch;
/// Real nats-server processes (one, or a three-server JetStream cluster) for the scale-out tests.
pub mod nats;

/// A counter that also records how many times it was activated in this process.
#[derive(Actor, Default, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[actor(name = "counter")]
pub struct Counter {
    /// The count.
    pub value: u64,
}

/// Handler error of [`Counter::add_checked`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TooBig {
    /// The limit that would have been passed.
    pub limit: u64,
}

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the counter would pass {}", self.limit)
    }
}

#[handlers]
impl Counter {
    /// Adds `n`, returns the new value.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }

    /// Adds `n` unless that passes `limit`; the change is applied first and rolled back by
    /// the runtime on `Err`.
    pub async fn add_checked(&mut self, n: u64, limit: u64) -> Result<u64, TooBig> {
        self.value += n;
        if self.value > limit {
            Err(TooBig { limit })
        } else {
            Ok(self.value)
        }
    }

    /// The value.
    pub async fn get(&self) -> u64 {
        self.value
    }

    /// Adds `n`, then panics if `panic` is set (after mutating, so a reset is observable).
    pub async fn add_then_panic(&mut self, n: u64, panic: bool) -> u64 {
        self.value += n;
        if panic {
            panic!("injected panic");
        }
        self.value
    }

    /// Adds `n` after sleeping `ms` milliseconds (to hold the key busy).
    pub async fn slow_add(&mut self, n: u64, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.value += n;
        self.value
    }

    /// Adds `n` once the [`latch::Latch`] named `latch` opens: holds the key busy for as long
    /// as the test wants.
    pub async fn add_when_open(&mut self, n: u64, latch: String) -> u64 {
        latch::wait(&latch).await;
        self.value += n;
        self.value
    }

    /// Returns the key this turn ran for.
    pub async fn whoami(&self, ctx: &Context) -> String {
        ctx.key().to_string()
    }
}

/// An actor that calls another actor of its type: `A.forward(B)` calls `B.forward(A)`...
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "relay")]
pub struct Relay {
    hops: u32,
}

#[handlers]
impl Relay {
    /// Calls the first key of `route` with the rest as its onward route; returns the hop
    /// count of the last actor. A failed inner call comes back as its message.
    pub async fn forward(&mut self, ctx: &Context, route: Vec<String>) -> Result<u32, String> {
        self.hops += 1;
        match route.split_first() {
            None => Ok(self.hops),
            Some((next, rest)) => match ctx.get::<Relay>(next).forward(rest.to_vec()).await {
                Ok(hops) => Ok(hops),
                Err(CallError::Handler(inner)) => Err(inner),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Opens a runtime on `dir` with the test actors registered.
pub async fn open(dir: &Path) -> Runtime {
    builder(dir).open().await.expect("open runtime")
}

/// A builder on `dir` with the test actors registered.
pub fn builder(dir: &Path) -> gears::Builder {
    Runtime::builder()
        .path(dir)
        .register::<Counter>()
        .register::<Relay>()
        .register::<Sender>()
        .register::<Receiver>()
        .register::<Alarm>()
        .register::<Stock>()
        .register::<Listener>()
        .register::<Fragile>()
        .register::<Numberer>()
        .register::<Tally>()
        .register::<bank::Account>()
        .register::<bank::Transfer>()
}

/// Sends messages to [`Receiver`]s, and counts what it sent (committed with the sends).
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "sender")]
pub struct Sender {
    /// Sum of `n` over every committed send.
    pub sent: u64,
}

#[handlers]
impl Sender {
    /// Sends `receive(n)` to `Receiver(target)`; returns the running total sent.
    pub async fn send_to(&mut self, ctx: &Context, target: String, n: u64) -> u64 {
        self.sent += n;
        ctx.send::<Receiver>(target)
            .receive(ctx.key().to_string(), n);
        self.sent
    }

    /// Sends like `send_to`, then fails: the turn is rolled back and nothing is sent.
    pub async fn send_then_fail(
        &mut self,
        ctx: &Context,
        target: String,
        n: u64,
    ) -> Result<(), String> {
        self.sent += n;
        ctx.send::<Receiver>(target)
            .receive(ctx.key().to_string(), n);
        Err("refused after sending".into())
    }

    /// What this sender sent in total.
    pub async fn sent(&self) -> u64 {
        self.sent
    }
}

/// Receives messages and counts them.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "receiver")]
pub struct Receiver {
    /// Sum of `n` received.
    pub total: u64,
    /// Messages received.
    pub messages: u64,
}

#[handlers]
impl Receiver {
    /// Adds `n` to the total.
    pub async fn receive(&mut self, from: String, n: u64) {
        let _ = from;
        self.total += n;
        self.messages += 1;
    }

    /// `(total, messages)`.
    pub async fn totals(&self) -> (u64, u64) {
        (self.total, self.messages)
    }
}

/// An actor with durable timers that count their firings.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "alarm")]
pub struct Alarm {
    /// Firings per timer name.
    pub rings: std::collections::BTreeMap<String, u64>,
}

#[handlers]
impl Alarm {
    /// Schedules timer `name` to ring once after `ms` milliseconds.
    pub async fn arm(&mut self, ctx: &Context, name: String, ms: u64) {
        ctx.timer::<Self>(name.clone(), Timer::after(Duration::from_millis(ms)))
            .ring(name);
    }

    /// Schedules timer `name` to ring every `ms` milliseconds.
    pub async fn arm_every(&mut self, ctx: &Context, name: String, ms: u64) {
        ctx.timer::<Self>(name.clone(), Timer::every(Duration::from_millis(ms)))
            .ring(name);
    }

    /// Cancels timer `name`.
    pub async fn disarm(&mut self, ctx: &Context, name: String) {
        ctx.cancel_timer(name);
    }

    /// Called by the timers.
    pub async fn ring(&mut self, name: String) {
        *self.rings.entry(name).or_default() += 1;
    }

    /// How often timer `name` rang.
    pub async fn rings(&self, name: String) -> u64 {
        self.rings.get(&name).copied().unwrap_or(0)
    }

    /// Names of the pending timers, earliest first.
    pub async fn pending(&self, ctx: &Context) -> Vec<String> {
        ctx.timers().into_iter().map(|t| t.name).collect()
    }

    /// Deletes this actor (state and timers).
    pub async fn delete(&mut self, ctx: &Context) {
        ctx.delete();
    }
}

/// The event of [`Stock`]: its level after a change, numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    /// 1 for the first change of this stock, 2 for the next...
    pub seq: u64,
    /// The level after the change.
    pub level: u64,
}

/// A publisher of numbered events.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "stock", events = StockChanged)]
pub struct Stock {
    /// The level.
    pub level: u64,
    /// Events published.
    pub changes: u64,
}

#[handlers]
impl Stock {
    /// Adds `n` and publishes the change.
    pub async fn add(&mut self, ctx: &Context, n: u64) -> u64 {
        self.level += n;
        self.changes += 1;
        ctx.publish(StockChanged {
            seq: self.changes,
            level: self.level,
        });
        self.changes
    }

    /// Publishes like `add`, then fails: nothing is published.
    pub async fn add_then_fail(&mut self, ctx: &Context, n: u64) -> Result<(), String> {
        self.add(ctx, n).await;
        Err("refused after publishing".into())
    }

    /// Publishes an event of the wrong type (a misuse the turn is refused for).
    pub async fn publish_wrong_type(&mut self, ctx: &Context) {
        ctx.publish(42u32);
    }
}

/// A durable subscriber of [`Stock`] events.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "listener")]
pub struct Listener {
    /// Sequence numbers of the events received, in order.
    pub seen: Vec<u64>,
}

#[handlers]
impl Listener {
    /// Subscribes to `Stock(stock)`.
    pub async fn follow(&mut self, ctx: &Context, stock: String) {
        ctx.subscribe::<Stock>(stock, "on_stock");
    }

    /// Subscribes to `Stock(stock)` with a handler that does not take its events (refused).
    pub async fn follow_wrong_handler(&mut self, ctx: &Context, stock: String) {
        ctx.subscribe::<Stock>(stock, "seen");
    }

    /// Ends the subscription to `Stock(stock)`.
    pub async fn unfollow(&mut self, ctx: &Context, stock: String) {
        ctx.unsubscribe::<Stock>(stock);
    }

    /// Receives the events.
    pub async fn on_stock(&mut self, event: StockChanged) {
        self.seen.push(event.seq);
    }

    /// The sequence numbers received.
    pub async fn seen(&self) -> Vec<u64> {
        self.seen.clone()
    }

    /// Deletes this listener (state and subscriptions).
    pub async fn delete(&mut self, ctx: &Context) {
        ctx.delete();
    }
}

/// The end of a test whose last two messages rang `Alarm("a")` with `"x"` and then deleted
/// it, with the frontier written only at shutdown: both are delivered, the ring is gone
/// with the deleted record, and after a crash neither message comes back to a fresh actor
/// (a deleted actor keeps no record of what it processed: it marks its messages processed in
/// the outbox instead). Shuts `rt` down.
pub async fn assert_a_deleted_alarm_gets_nothing_again_after_a_crash(
    mut rt: gears::testing::TestRuntime,
) {
    let rings = |rt: &gears::testing::TestRuntime| {
        let alarm = rt.runtime().get::<Alarm>("a");
        async move { alarm.rings("x".into()).await.unwrap() }
    };
    rt.advance(Duration::ZERO).await.unwrap();
    assert_eq!(rt.runtime().stats().delivered, 2);
    assert_eq!(rings(&rt).await, 0);
    rt.crash_and_reopen().await.unwrap();
    rt.advance(Duration::ZERO).await.unwrap();
    assert_eq!(rt.runtime().stats().delivered, 0);
    assert_eq!(rings(&rt).await, 0);
    rt.shutdown().await.unwrap();
}

/// Waits until every outbox message has been processed (panics after 30 s).
pub async fn settle(rt: &Runtime) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rt.stats().outbox_backlog > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox did not drain: {:?}",
            rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the runtime's counters until `done` holds (panics after 20 s, naming `what` and
/// showing the counters).
pub async fn wait_for_stats(rt: &Runtime, what: &str, done: impl Fn(&gears::Stats) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = rt.stats();
        if done(&stats) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting for {what} after 20 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `probe` (usually a call) until it returns `Ok(want)` (panics after 30 s with the
/// last result).
pub async fn eventually<T, E, F, Fut>(want: T, mut probe: F) -> T
where
    T: PartialEq + std::fmt::Debug,
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = probe().await;
        if got.as_ref().is_ok_and(|got| *got == want) {
            return want;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {got:?}, waiting for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the next encoding of a [`Fragile`] state does instead of encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFault {
    /// Fails with an error.
    Fail,
    /// Panics (outside any handler).
    Panic,
}

/// Faults armed per [`Fragile`] key, with how many encodings are left to fault: keyed, so
/// tests running in parallel never take each other's.
static ENCODING_FAULTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (EncodingFault, u32)>>,
> = std::sync::LazyLock::new(Default::default);

/// Makes the next `times` encodings of `Fragile(key)`'s state (after a handler ran on it)
/// fail or panic.
pub fn arm_encoding_fault(key: &str, fault: EncodingFault, times: u32) {
    encoding_faults().insert(key.to_string(), (fault, times));
}

/// Takes one armed fault of `Fragile(key)`, if any is left.
fn take_encoding_fault(key: &str) -> Option<EncodingFault> {
    let mut faults = encoding_faults();
    let (fault, left) = faults.get_mut(key)?;
    let fault = *fault;
    *left -= 1;
    if *left == 0 {
        faults.remove(key);
    }
    Some(fault)
}

fn encoding_faults()
-> std::sync::MutexGuard<'static, std::collections::HashMap<String, (EncodingFault, u32)>> {
    ENCODING_FAULTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An actor whose state encoding can be made to fail or panic once, from outside
/// ([`arm_encoding_fault`]).
#[derive(Actor, Default, Deserialize)]
#[actor(name = "fragile")]
pub struct Fragile {
    /// Sum of what was added.
    pub total: u64,
    /// The actor's key, set by its handlers (not stored): what its faults are armed under.
    #[serde(skip)]
    key: String,
}

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match take_encoding_fault(&self.key) {
            Some(EncodingFault::Fail) => {
                return Err(serde::ser::Error::custom("injected encoding failure"));
            }
            Some(EncodingFault::Panic) => panic!("injected panic while encoding"),
            None => {}
        }
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Fragile", 1)?;
        s.serialize_field("total", &self.total)?;
        s.end()
    }
}

#[handlers]
impl Fragile {
    /// Adds `n` and sends `receive(n)` to `Receiver(target)`.
    pub async fn add_and_send(&mut self, ctx: &Context, n: u64, target: String) -> u64 {
        self.key = ctx.key().to_string();
        self.total += n;
        ctx.send::<Receiver>(target)
            .receive(ctx.key().to_string(), n);
        self.total
    }

    /// Adds `n`.
    pub async fn add(&mut self, ctx: &Context, n: u64) -> u64 {
        self.key = ctx.key().to_string();
        self.total += n;
        self.total
    }

    /// The total.
    pub async fn total(&self) -> u64 {
        self.total
    }
}

/// Numbers what it sends and arms: each committed send and timer carries the next number of
/// its kind (the number is committed with the outbox entry or timer that carries it), so a
/// receiver can check that every number arrived exactly once, in order.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "numberer")]
pub struct Numberer {
    /// Sends committed (the last number sent).
    pub sent: u64,
    /// One-shot timers armed (the last number armed).
    pub armed: u64,
    /// Numbers of the timers that fired here, in firing order.
    pub fired: Vec<u64>,
}

#[handlers]
impl Numberer {
    /// Sends `record(<this key>, n)` to `Tally(target)` with the next number `n`; returns `n`.
    pub async fn send_next(&mut self, ctx: &Context, target: String) -> u64 {
        self.sent += 1;
        ctx.send::<Tally>(target)
            .record(ctx.key().to_string(), self.sent);
        self.sent
    }

    /// Sends `record(<this key>, tag)` to `Tally(target)` and counts it like `send_next`:
    /// a caller that gives every call its own tag can tell which of its calls were delivered,
    /// and how often. Returns the count.
    pub async fn send_tagged(&mut self, ctx: &Context, target: String, tag: u64) -> u64 {
        self.sent += 1;
        ctx.send::<Tally>(target).record(ctx.key().to_string(), tag);
        self.sent
    }

    /// Arms a one-shot timer due in `ms` that calls `fired(n)` with the next number `n`;
    /// returns `n`. Timers armed later are due no earlier, so they fire in number order.
    pub async fn arm_next(&mut self, ctx: &Context, ms: u64) -> u64 {
        self.armed += 1;
        let n = self.armed;
        ctx.timer::<Self>(format!("t{n:012}"), Timer::after(Duration::from_millis(ms)))
            .fired(n);
        n
    }

    /// Called by the timers.
    pub async fn fired(&mut self, n: u64) {
        self.fired.push(n);
    }

    /// `(sent, armed, fired)`.
    pub async fn numbers(&self) -> (u64, u64, Vec<u64>) {
        (self.sent, self.armed, self.fired.clone())
    }
}

/// An actor type [`builder`] does not register: a test registers it in some runs only, and
/// its messages are parked in the others.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "elsewhere")]
pub struct Elsewhere {
    /// What it took, in order.
    pub got: Vec<u64>,
}

#[handlers]
impl Elsewhere {
    /// Records `n`.
    pub async fn take(&mut self, n: u64) {
        self.got.push(n);
    }

    /// What was recorded.
    pub async fn got(&self) -> Vec<u64> {
        self.got.clone()
    }
}

/// Records numbered messages per sender, in arrival order.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "tally")]
pub struct Tally {
    /// Numbers received, per sender.
    pub received: std::collections::BTreeMap<String, Vec<u64>>,
}

#[handlers]
impl Tally {
    /// Records number `n` from `from`.
    pub async fn record(&mut self, from: String, n: u64) {
        self.received.entry(from).or_default().push(n);
    }

    /// The numbers received from `from`, in arrival order.
    pub async fn received(&self, from: String) -> Vec<u64> {
        self.received.get(&from).cloned().unwrap_or_default()
    }
}
