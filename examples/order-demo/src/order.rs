//! [`Order`] (key = order id): the saga that turns a customer's lines into shipped stock.
//!
//! `place` reserves the lines one by one with calls to their [`InventoryItem`]s:
//! - every line held: the order becomes `Shipping` and, in the same atomic turn, sends each
//!   item a `commit` and the customer a notice. Sends are exactly-once and leave only if the
//!   turn commits, so either the order is `Shipping` and every item will ship, or neither.
//! - a line out of stock: the order becomes `Backordered` and sends a `release` of this
//!   attempt to every item it reserved at. It subscribes to the missing item's
//!   [`BackInStock`] events and tries again when one arrives; a durable deadline timer
//!   cancels it if none helps in time.
//! - an item unreachable (overloaded, timed out): it fails with [`PlaceError::Unavailable`];
//!   its turn is rolled back and the caller may retry. What the attempt held stays held
//!   until a retry takes it over (holds are per order) or it expires.
//!
//! **Compensations are sends, never calls.** A turn that may run again (a delivered event,
//! a request retried under its idempotency key) makes the same calls when it does, and its
//! calls are answered from the results the items kept. A call can fail in one run (an item
//! was unreachable) and succeed in the next. Had the first run *called* `release`, the items
//! would have freed the holds that the second run, told by the kept results that they are
//! held, ships: a `commit` without its hold. Sends leave only with the turn's commit, so a
//! run that is lost takes its releases with it.
//!
//! A hold that expires before its attempt committed is released by the order (see
//! [`Order::confirm_hold`]), which remembers the attempt: if the lost turn runs again
//! later, it must not ship with holds that are gone. Items never call an order (they send),
//! so no call cycle can form.

use futures::future::join_all;
use gears::prelude::*;
use schemars::JsonSchema;

use crate::customer::{Customer, Notice};
use crate::inventory::{BackInStock, InventoryItem};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    /// The item's SKU.
    pub sku: String,
    /// Units ordered (at least 1).
    pub qty: u32,
}

/// Most lines in one order.
pub const MAX_LINES: usize = 32;
/// Most units in one line.
pub const MAX_QTY: u32 = 10_000;
/// Longest [`Policy::hold_ms`] and [`Policy::wait_ms`]: one day. A hold must come back in
/// a time anyone can wait for, and a deadline due in 31,700 years is a typo.
pub const MAX_POLICY_MS: u64 = 24 * 60 * 60 * 1000;

/// Timing of an order's saga, chosen when it is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// How long an item holds stock for the order before asking whether it still needs it.
    pub hold_ms: u64,
    /// How long a backordered order waits for stock before it is cancelled.
    pub wait_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            hold_ms: 10_000,
            wait_ms: 2_000,
        }
    }
}

impl Policy {
    /// Both durations are 1 to [`MAX_POLICY_MS`] milliseconds.
    pub fn check(&self) -> Result<(), PlaceError> {
        for (name, ms) in [("hold_ms", self.hold_ms), ("wait_ms", self.wait_ms)] {
            if !(1..=MAX_POLICY_MS).contains(&ms) {
                return Err(PlaceError::Invalid(format!(
                    "{name} must be 1 to {MAX_POLICY_MS} ms, not {ms}"
                )));
            }
        }
        Ok(())
    }
}

/// Where an order's saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Status {
    /// Every line is held and committed: the items ship it.
    Shipping,
    /// A line is out of stock; the order waits for it to come back.
    Backordered,
    /// No stock came back before the deadline; nothing is held or shipped.
    Cancelled,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Shipping => "shipping",
            Status::Backordered => "backordered",
            Status::Cancelled => "cancelled",
        })
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shipping" => Ok(Status::Shipping),
            "backordered" => Ok(Status::Backordered),
            "cancelled" => Ok(Status::Cancelled),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

/// Why [`Order::place`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PlaceError {
    /// The order is unacceptable, and nothing was held for it: no line or too many, a
    /// quantity of 0 or too large, a SKU twice, a key (customer, SKU, the order's id) that
    /// is empty, too long or holds control characters, a `hold_ms` or `wait_ms` out of range.
    Invalid(String),
    /// The order id was already placed with other lines or for another customer.
    Conflict,
    /// An item could not be reached; nothing was placed and nothing stays held. Retry.
    Unavailable(String),
}

impl std::fmt::Display for PlaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceError::Invalid(why) => write!(f, "invalid order: {why}"),
            PlaceError::Conflict => {
                f.write_str("this order id was already placed with different contents")
            }
            PlaceError::Unavailable(why) => write!(f, "an item is unavailable, retry: {why}"),
        }
    }
}

impl std::error::Error for PlaceError {}

/// What [`Order::details`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderView {
    /// `None` if the order was never placed (or its placing never committed).
    pub status: Option<Status>,
    /// The customer who placed it.
    pub customer: String,
    /// Its lines.
    pub lines: Vec<Line>,
    /// The SKU it waits for while backordered.
    pub missing: Option<String>,
    /// Times it tried to reserve its lines.
    pub attempts: u32,
}

/// An order, keyed by order id.
#[derive(Actor, Default, Debug, Serialize, Deserialize, JsonSchema)]
#[actor(name = "order", version = 2, previous = OrderV1)]
pub struct Order {
    customer: String,
    lines: Vec<Line>,
    policy: Policy,
    status: Option<Status>,
    /// The SKU subscribed to while backordered.
    missing: Option<String>,
    attempts: u32,
    /// The attempt whose holds were committed, once `Shipping`.
    shipped_attempt: Option<u64>,
    /// Attempts whose holds expired, and were released, before the order shipped or was
    /// cancelled: none of them may ship (see the module docs). At most
    /// [`MAX_EXPIRED_ATTEMPTS`], the latest; emptied when the order ships or is cancelled.
    expired_attempts: Vec<u64>,
}

/// What version 1 of [`Order`] stored: no expired attempts.
#[derive(Debug, Serialize, Deserialize, StateVersion)]
#[state(version = 1)]
pub struct OrderV1 {
    customer: String,
    lines: Vec<Line>,
    policy: Policy,
    status: Option<Status>,
    missing: Option<String>,
    attempts: u32,
    shipped_attempt: Option<u64>,
}

impl From<OrderV1> for Order {
    fn from(v1: OrderV1) -> Self {
        Order {
            customer: v1.customer,
            lines: v1.lines,
            policy: v1.policy,
            status: v1.status,
            missing: v1.missing,
            attempts: v1.attempts,
            shipped_attempt: v1.shipped_attempt,
            expired_attempts: Vec::new(),
        }
    }
}

/// Most expired attempts an [`Order`] remembers. A turn runs again within its delivery's
/// retries, while later attempts are rare (one per back-in-stock event that finds stock),
/// so the latest few are all that can still run.
pub const MAX_EXPIRED_ATTEMPTS: usize = 64;

/// Name of the deadline timer of a backordered order.
const DEADLINE: &str = "deadline";

/// How one attempt to reserve every line ended.
enum Attempt {
    Held,
    Short(String),
    Unreachable(String),
}

#[handlers]
impl Order {
    /// Places the order: reserves every line, then ships or backorders it. Placing an order
    /// id again with the same customer and lines returns its current status and changes
    /// nothing.
    pub async fn place(
        &mut self,
        ctx: &Context,
        customer: String,
        lines: Vec<Line>,
        policy: Policy,
    ) -> Result<Status, PlaceError> {
        if let Some(status) = self.status {
            return if self.customer == customer && self.lines == lines {
                Ok(status)
            } else {
                Err(PlaceError::Conflict)
            };
        }
        // Everything is checked before anything is held: a refusal after the first
        // reservation would leave stock held until the hold expires.
        check_order(ctx.key(), &customer, &lines, &policy)?;
        self.customer = customer;
        self.lines = lines;
        self.policy = policy;
        match self.try_lines(ctx).await {
            Attempt::Held => Ok(Status::Shipping),
            Attempt::Short(sku) => {
                self.backorder(ctx, sku);
                Ok(Status::Backordered)
            }
            Attempt::Unreachable(why) => Err(PlaceError::Unavailable(why)),
        }
    }

    /// The order's status; `None` if it was never placed.
    pub async fn status(&self) -> Option<Status> {
        self.status
    }

    /// The order's status and contents.
    pub async fn details(&self) -> OrderView {
        OrderView {
            status: self.status,
            customer: self.customer.clone(),
            lines: self.lines.clone(),
            missing: self.missing.clone(),
            attempts: self.attempts,
        }
    }

    /// Subscription handler: the SKU this order waits for is back; if there is enough of
    /// it for this order's line, try again.
    #[handler(internal)]
    pub async fn on_back_in_stock(&mut self, ctx: &Context, event: BackInStock) {
        if self.status != Some(Status::Backordered) || self.missing.as_ref() != Some(&event.sku) {
            return;
        }
        let needed = self
            .lines
            .iter()
            .find(|l| l.sku == event.sku)
            .map_or(0, |l| l.qty);
        if event.available < i64::from(needed) {
            return;
        }
        self.notify(
            ctx,
            Notice::BackInStock {
                order: ctx.key().to_string(),
                sku: event.sku,
            },
        );
        match self.try_lines(ctx).await {
            Attempt::Held => {}
            Attempt::Short(sku) => self.backorder(ctx, sku),
            // Still backordered; the next event or the deadline decides.
            Attempt::Unreachable(why) => {
                tracing::warn!(order = ctx.key(), %why, "retry failed; still backordered");
            }
        }
    }

    /// Asked by an item whose hold for this order expired: releases it unless this order
    /// shipped with that attempt (its `commit` is then on its way to the item). An order
    /// still placing or backordered remembers the attempt: its turn may have been lost and
    /// run again later, and must then not ship.
    #[handler(internal)]
    pub async fn confirm_hold(&mut self, ctx: &Context, sku: String, attempt: u64) {
        let keep = self.status == Some(Status::Shipping) && self.shipped_attempt == Some(attempt);
        if keep {
            return;
        }
        ctx.send::<InventoryItem>(sku)
            .release(ctx.key().to_string(), attempt);
        let pending = matches!(self.status, None | Some(Status::Backordered));
        if pending && !self.expired_attempts.contains(&attempt) {
            if self.expired_attempts.len() == MAX_EXPIRED_ATTEMPTS {
                self.expired_attempts.remove(0);
            }
            self.expired_attempts.push(attempt);
        }
    }

    /// The deadline timer: a backordered order gives up and is cancelled.
    #[handler(internal)]
    pub async fn give_up(&mut self, ctx: &Context) {
        if self.status == Some(Status::Backordered) {
            self.status = Some(Status::Cancelled);
            self.expired_attempts.clear();
            self.stop_waiting(ctx);
            self.notify(
                ctx,
                Notice::Cancelled {
                    order: ctx.key().to_string(),
                },
            );
        }
    }
}

impl Order {
    /// Reserves every line under this turn's attempt id, all at once (the items are
    /// different actors: their turns run in parallel). All held: ships. Otherwise sends a
    /// release to every item that may hold for this attempt, and says why (the first line,
    /// in order, that could not be held). An attempt whose holds expired never ships.
    ///
    /// The attempt id is the turn's id: the same when the turn runs again (a retried event,
    /// a place retried under its idempotency key), so it makes the same calls, which the
    /// items answer from the results they kept; and different for every other turn, so a
    /// release of an earlier attempt still on its way can never free a later attempt's hold.
    /// (A random id per run made a turn that ran again call with other arguments, which the
    /// runtime refuses; a counter would repeat the id of a rolled-back attempt.)
    ///
    /// Calls awaited together from a turn stay exactly-once: each gets its id when it is
    /// first polled, and `join_all` polls them in order.
    async fn try_lines(&mut self, ctx: &Context) -> Attempt {
        // Any 64 bits of the turn's id are as unique as the id needs.
        let attempt = ctx.turn_id() as u64;
        self.attempts += 1;
        let order = ctx.key().to_string();
        let items: Vec<_> = self
            .lines
            .iter()
            .map(|line| ctx.get::<InventoryItem>(&line.sku))
            .collect();
        let reserved = join_all(items.iter().zip(&self.lines).map(|(item, line)| {
            item.reserve(order.clone(), attempt, line.qty, self.policy.hold_ms)
        }))
        .await;
        let mut failed = None;
        for (item, reserved) in items.iter().zip(&reserved) {
            match reserved {
                Ok(()) => {}
                Err(CallError::Handler(short)) => {
                    failed.get_or_insert(Attempt::Short(short.sku.clone()));
                }
                Err(e) => {
                    failed.get_or_insert_with(|| {
                        Attempt::Unreachable(format!("{}: {e}", item.key()))
                    });
                }
            }
        }
        if failed.is_none() && self.expired_attempts.contains(&attempt) {
            // This turn ran before and was lost; its holds expired and were released since.
            failed = Some(Attempt::Unreachable(
                "the holds of this attempt expired before it committed".into(),
            ));
        }
        let Some(failed) = failed else {
            self.ship(ctx, attempt);
            return Attempt::Held;
        };
        // Released with this turn's commit (see the module docs): every item that held, or
        // may have held (its call failed on the way), for this attempt.
        for (item, reserved) in items.iter().zip(&reserved) {
            if !matches!(reserved, Err(CallError::Handler(_))) {
                ctx.send::<InventoryItem>(item.key().to_string())
                    .release(order.clone(), attempt);
            }
        }
        failed
    }

    /// Every line is held by `attempt`: commit them all, atomically with this turn.
    fn ship(&mut self, ctx: &Context, attempt: u64) {
        let order = ctx.key().to_string();
        for line in &self.lines {
            ctx.send::<InventoryItem>(line.sku.clone())
                .commit(order.clone(), attempt, line.qty);
        }
        if self.status == Some(Status::Backordered) {
            self.stop_waiting(ctx);
        }
        self.status = Some(Status::Shipping);
        self.shipped_attempt = Some(attempt);
        self.expired_attempts.clear();
        self.notify(ctx, Notice::Shipped { order });
    }

    /// A line is short: wait for `sku` (subscribed to its events), until the deadline.
    fn backorder(&mut self, ctx: &Context, sku: String) {
        if self.status != Some(Status::Backordered) {
            self.status = Some(Status::Backordered);
            ctx.timer::<Self>(
                DEADLINE,
                Timer::after(std::time::Duration::from_millis(self.policy.wait_ms)),
            )
            .give_up();
            self.notify(
                ctx,
                Notice::Backordered {
                    order: ctx.key().to_string(),
                    sku: sku.clone(),
                },
            );
        }
        if self.missing.as_ref() != Some(&sku) {
            if let Some(old) = self.missing.take() {
                ctx.unsubscribe::<InventoryItem>(old);
            }
            ctx.subscribe::<InventoryItem>(sku.clone(), "on_back_in_stock");
            self.missing = Some(sku);
        }
    }

    /// No longer backordered: drop the subscription and the deadline.
    fn stop_waiting(&mut self, ctx: &Context) {
        if let Some(sku) = self.missing.take() {
            ctx.unsubscribe::<InventoryItem>(sku);
        }
        ctx.cancel_timer(DEADLINE);
    }

    fn notify(&self, ctx: &Context, notice: Notice) {
        ctx.send::<Customer>(self.customer.clone()).notify(notice);
    }
}

/// Every check [`Order::place`] makes before it holds anything.
fn check_order(
    order: &str,
    customer: &str,
    lines: &[Line],
    policy: &Policy,
) -> Result<(), PlaceError> {
    check_key("the order id", order)?;
    if crate::inventory::hold_timer(order).len() > gears::MAX_TIMER_NAME_LEN {
        return Err(PlaceError::Invalid(format!(
            "the order id is {} bytes; its holds' timer names would be longer than {} bytes",
            order.len(),
            gears::MAX_TIMER_NAME_LEN
        )));
    }
    check_key("the customer", customer)?;
    check_lines(lines)?;
    policy.check()
}

/// Keys are 1 to [`gears::MAX_KEY_LEN`] bytes without control characters (as the HTTP
/// ingress requires of keys in paths), so every key an order names can be called.
fn check_key(what: &str, key: &str) -> Result<(), PlaceError> {
    let why = if key.is_empty() {
        "is empty".to_string()
    } else if key.len() > gears::MAX_KEY_LEN {
        format!(
            "is {} bytes, longer than {} bytes",
            key.len(),
            gears::MAX_KEY_LEN
        )
    } else if key.chars().any(char::is_control) {
        "holds control characters".to_string()
    } else {
        return Ok(());
    };
    Err(PlaceError::Invalid(format!("{what} {why}")))
}

fn check_lines(lines: &[Line]) -> Result<(), PlaceError> {
    if lines.is_empty() {
        return Err(PlaceError::Invalid(
            "an order needs at least one line".into(),
        ));
    }
    if lines.len() > MAX_LINES {
        return Err(PlaceError::Invalid(format!(
            "an order has at most {MAX_LINES} lines, not {}",
            lines.len()
        )));
    }
    for (i, line) in lines.iter().enumerate() {
        check_key("a line's SKU", &line.sku)?;
        if !(1..=MAX_QTY).contains(&line.qty) {
            return Err(PlaceError::Invalid(format!(
                "{}: quantity {}, not 1 to {MAX_QTY}",
                line.sku, line.qty
            )));
        }
        if lines[..i].iter().any(|l| l.sku == line.sku) {
            return Err(PlaceError::Invalid(format!("{} appears twice", line.sku)));
        }
    }
    Ok(())
}
