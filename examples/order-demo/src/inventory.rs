//! [`InventoryItem`] (key = SKU): stock available, held for orders, and shipped.
//!
//! A hold is the item's half of an order's saga. It is keyed by order id, so reserving twice
//! for the same order holds the stock once. It is tagged with the order's *attempt* (an id
//! the order draws afresh each time it tries to reserve its lines), so a late `release` of an
//! earlier attempt never frees a hold the order took again since.
//!
//! A hold that its order neither commits nor releases (the order's turn was lost in a crash,
//! or its compensation failed) must not lock stock forever: each hold arms a durable timer.
//! When it fires the item does not free the stock blindly (the order may be `Shipping`, with
//! its `commit` still in the outbox after a restart); it asks the order with a durable send,
//! and the order, whose turns are serial, answers with a `release` unless it shipped with
//! that attempt. The item never *calls* an order, so no call chain can loop back into an
//! order that is waiting on an item.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use gears::prelude::*;
use schemars::JsonSchema;

use crate::order::Order;

/// The event of an [`InventoryItem`]: stock arrived (a restock), or came back to an item that
/// had none (a released hold). Backordered orders subscribe to it for the SKU they miss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackInStock {
    /// The item's SKU.
    pub sku: String,
    /// Units available after the change.
    pub available: i64,
}

/// Why [`InventoryItem::reserve`] refused: fewer units are available than requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutOfStock {
    /// The item's SKU.
    pub sku: String,
    /// Units the order asked for (beyond what it already holds here).
    pub requested: u32,
    /// Units that were available.
    pub available: i64,
}

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is out of stock: {} requested, {} available",
            self.sku, self.requested, self.available
        )
    }
}

impl std::error::Error for OutOfStock {}

/// Stock held for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hold {
    /// Units held.
    pub qty: u32,
    /// The order's attempt that took (or last renewed) the hold.
    pub attempt: u64,
}

/// One hold as [`InventoryItem::level`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldFor {
    /// The order holding the stock.
    pub order: String,
    /// The hold.
    pub hold: Hold,
    /// When its expiry timer fires; `None` if it has none (a hold that never comes back).
    pub expires: Option<SystemTime>,
}

/// What [`InventoryItem::level`] returns: every counter of the item and its holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Level {
    /// The item's SKU.
    pub sku: String,
    /// Units set by the first `seed`.
    pub initial: i64,
    /// Units added by `restock` since.
    pub restocked: i64,
    /// Units free to reserve.
    pub available: i64,
    /// Units held for orders (the sum of `holds`).
    pub reserved: i64,
    /// Units shipped (committed holds).
    pub shipped: i64,
    /// The holds, by order id.
    pub holds: Vec<HeldFor>,
    /// Commits that found no hold to take their units from (shipped from `available`
    /// instead): always 0 unless the saga has a bug.
    pub unheld_commits: u64,
}

/// An item of stock, keyed by SKU.
///
/// Counters are signed on purpose: an oversold item shows up as negative stock that the
/// audit reports, instead of a wrap-around or a panic inside a handler.
#[derive(Actor, Default, Debug, Serialize, Deserialize, JsonSchema)]
#[actor(name = "inventory_item", events = BackInStock)]
pub struct InventoryItem {
    seeded: bool,
    initial: i64,
    restocked: i64,
    available: i64,
    holds: BTreeMap<String, Hold>,
    shipped: i64,
    unheld_commits: u64,
}

/// Name of the expiry timer of `order`'s hold.
pub(crate) fn hold_timer(order: &str) -> String {
    // Not `format!`: this runs twice per line of every order, and the formatting machinery
    // costs several times a concatenation.
    ["hold:", order].concat()
}

/// Most units one [`InventoryItem::restock`] adds.
pub const MAX_RESTOCK: u32 = 1_000_000;

/// Why [`InventoryItem::restock`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestockError {
    /// The quantity is 0 or above [`MAX_RESTOCK`]; nothing changed.
    Invalid(String),
}

impl std::fmt::Display for RestockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestockError::Invalid(why) => write!(f, "invalid restock: {why}"),
        }
    }
}

impl std::error::Error for RestockError {}

#[handlers]
impl InventoryItem {
    /// Sets the initial stock the first time it is called; later calls change nothing (so
    /// seeding a store again is harmless). Returns the units available.
    #[handler(internal)]
    pub async fn seed(&mut self, qty: u32) -> i64 {
        if !self.seeded {
            self.seeded = true;
            self.initial = i64::from(qty);
            self.available += i64::from(qty);
        }
        self.available
    }

    /// Adds `qty` units (1 to [`MAX_RESTOCK`]) and publishes [`BackInStock`]. Returns the
    /// units available.
    pub async fn restock(&mut self, ctx: &Context, qty: u32) -> Result<i64, RestockError> {
        if !(1..=MAX_RESTOCK).contains(&qty) {
            return Err(RestockError::Invalid(format!(
                "quantity {qty}, not 1 to {MAX_RESTOCK}"
            )));
        }
        self.restocked += i64::from(qty);
        self.available += i64::from(qty);
        ctx.publish(BackInStock {
            sku: ctx.key().to_string(),
            available: self.available,
        });
        Ok(self.available)
    }

    /// Holds `qty` units for `order` until it commits or releases them, or `hold_ms` pass
    /// (see the module docs). Idempotent per order: an order that already holds stock here
    /// keeps one hold, renewed for this `attempt` and resized to `qty`.
    #[handler(internal)]
    pub async fn reserve(
        &mut self,
        ctx: &Context,
        order: String,
        attempt: u64,
        qty: u32,
        hold_ms: u64,
    ) -> Result<(), OutOfStock> {
        let held = self.holds.get(&order).map_or(0, |h| h.qty);
        let extra = i64::from(qty) - i64::from(held);
        if extra > self.available {
            return Err(OutOfStock {
                sku: ctx.key().to_string(),
                requested: u32::try_from(extra).unwrap_or(u32::MAX),
                available: self.available,
            });
        }
        self.available -= extra;
        ctx.timer::<Self>(
            hold_timer(&order),
            Timer::after(Duration::from_millis(hold_ms)),
        )
        .expire(order.clone());
        self.holds.insert(order, Hold { qty, attempt });
        Ok(())
    }

    /// Frees `order`'s hold if it was taken by `attempt`; returns whether it did.
    #[handler(internal)]
    pub async fn release(&mut self, ctx: &Context, order: String, attempt: u64) -> bool {
        match self.holds.get(&order) {
            Some(hold) if hold.attempt == attempt => {
                let qty = hold.qty;
                self.holds.remove(&order);
                ctx.cancel_timer(hold_timer(&order));
                self.give_back(ctx, qty);
                true
            }
            _ => false,
        }
    }

    /// Ships `order`'s hold (`qty` units, taken by `attempt`). Sent by an order once it is
    /// `Shipping`, exactly once. A commit that finds no such hold still ships (the order has
    /// promised the goods) from `available`, and is counted in `unheld_commits`.
    #[handler(internal)]
    pub async fn commit(&mut self, ctx: &Context, order: String, attempt: u64, qty: u32) {
        match self.holds.get(&order) {
            Some(hold) if hold.attempt == attempt && hold.qty == qty => {
                self.holds.remove(&order);
                ctx.cancel_timer(hold_timer(&order));
            }
            other => {
                tracing::error!(sku = ctx.key(), order, attempt, qty, hold = ?other, "commit without its hold");
                self.unheld_commits += 1;
                self.available -= i64::from(qty);
            }
        }
        self.shipped += i64::from(qty);
    }

    /// The expiry timer of `order`'s hold: asks the order whether it still needs it.
    #[handler(internal)]
    pub async fn expire(&mut self, ctx: &Context, order: String) {
        if let Some(hold) = self.holds.get(&order) {
            ctx.send::<Order>(order)
                .confirm_hold(ctx.key().to_string(), hold.attempt);
        }
    }

    /// Every counter and hold of the item.
    pub async fn level(&self, ctx: &Context) -> Level {
        let timers = ctx.timers();
        let holds = self
            .holds
            .iter()
            .map(|(order, hold)| {
                let name = hold_timer(order);
                HeldFor {
                    order: order.clone(),
                    hold: *hold,
                    expires: timers.iter().find(|t| t.name == name).map(|t| t.due),
                }
            })
            .collect();
        Level {
            sku: ctx.key().to_string(),
            initial: self.initial,
            restocked: self.restocked,
            available: self.available,
            reserved: self.holds.values().map(|h| i64::from(h.qty)).sum(),
            shipped: self.shipped,
            holds,
            unheld_commits: self.unheld_commits,
        }
    }
}

impl InventoryItem {
    /// Returns released units to `available`; an item that had none is back in stock.
    fn give_back(&mut self, ctx: &Context, qty: u32) {
        let was_empty = self.available <= 0;
        self.available += i64::from(qty);
        if was_empty && self.available > 0 {
            ctx.publish(BackInStock {
                sku: ctx.key().to_string(),
                available: self.available,
            });
        }
    }
}
