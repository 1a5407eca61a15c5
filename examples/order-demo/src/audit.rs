//! The audit: reads every item, order and customer the catalog lists and checks that the
//! sagas left the books consistent.
//!
//! Per item: `available + reserved + shipped == initial + restocked`, no negative stock, no
//! commit that found no hold. Across actors: every `Shipping` order's lines are shipped by
//! their items; no hold is left by an order that shipped, and every other hold has an expiry
//! timer (so its stock comes back); customers received a notice for every shipped and
//! cancelled order; every acknowledged order is present, with a status at least as far along
//! as the one acknowledged.
//!
//! Orders are read first, then the outbox is drained, then items and customers: whatever an
//! order's state implies (commits, notices) was sent atomically with it, so it has arrived by
//! the time its targets are read. Work still pending (a backordered order, a hold waiting to
//! expire) may add more after that; only when none is pending must the counts match exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use gears::Runtime;

use crate::catalog::{CATALOG, Catalog, Contents};
use crate::customer::{Customer, NoticeCounts};
use crate::error::DemoError;
use crate::inventory::InventoryItem;
use crate::order::{Order, Status};
use crate::store::{read_all, settle};

/// Violations listed in full; further ones are only counted.
const MAX_LISTED: usize = 50;
/// Longest wait for the outbox to drain before reading items and customers.
const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// Orders by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Order numbers allocated in the catalog.
    pub allocated: u64,
    /// Never placed, or their placing never committed (never acknowledged).
    pub not_placed: u64,
    /// `Shipping`.
    pub shipping: u64,
    /// `Shipping` after at least one backorder: shipped on a restock.
    pub shipped_after_backorder: u64,
    /// `Backordered`.
    pub backordered: u64,
    /// `Cancelled`.
    pub cancelled: u64,
}

/// Units over all items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockTotals {
    /// Initial stock.
    pub initial: i64,
    /// Restocked.
    pub restocked: i64,
    /// Available.
    pub available: i64,
    /// Held for orders.
    pub reserved: i64,
    /// Shipped.
    pub shipped: i64,
}

/// The audit's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// What the catalog lists.
    pub contents: Contents,
    /// Orders by status.
    pub orders: OrderCounts,
    /// Units over all items.
    pub stock: StockTotals,
    /// Holds of unfinished orders whose expiry is pending (their stock comes back then).
    pub holds_pending: usize,
    /// Notices over all customers.
    pub notices: NoticeCounts,
    /// Acknowledged orders checked.
    pub acked_checked: usize,
    /// Nothing was pending (no backordered order, no hold): counts were checked exactly.
    pub quiescent: bool,
    /// What is wrong (the first 50 found).
    pub violations: Vec<String>,
    /// Violations found, listed or not.
    pub violation_count: usize,
}

impl Audit {
    /// Whether the audit found nothing wrong.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED {
            self.violations.push(what);
        }
    }
}

/// Audits the store `rt` runs on. `acked` lists orders acknowledged to their customers (by
/// this process, or a crashed one), with the status they were acknowledged with.
pub async fn audit(rt: &Runtime, acked: &[(String, Status)]) -> Result<Audit, DemoError> {
    let contents = rt
        .get::<Catalog>(CATALOG)
        .contents()
        .await
        .map_err(|e| DemoError::call("reading the catalog", e))?;
    let order_ids = contents.order_ids();
    let orders = read_all(&order_ids, |id| {
        let h = rt.get::<Order>(id);
        async move { h.details().await }
    })
    .await
    .map_err(|e| DemoError::call("reading orders", e))?;
    if !settle(rt, SETTLE_BOUND).await {
        return Err(DemoError::Refused(format!(
            "the outbox did not drain within {SETTLE_BOUND:?}; cannot audit a moving store"
        )));
    }
    let skus = contents.sku_ids();
    let levels = read_all(&skus, |sku| {
        let h = rt.get::<InventoryItem>(sku);
        async move { h.level().await }
    })
    .await
    .map_err(|e| DemoError::call("reading items", e))?;
    let customer_ids = contents.customer_ids();
    let inboxes = read_all(&customer_ids, |id| {
        let h = rt.get::<Customer>(id);
        async move { h.inbox().await }
    })
    .await
    .map_err(|e| DemoError::call("reading customers", e))?;

    let mut audit = Audit {
        contents,
        ..Audit::default()
    };
    audit.orders.allocated = contents.orders;

    // Orders: count them, and what their shipping lines take from each item.
    let status: HashMap<&str, Option<Status>> = order_ids
        .iter()
        .zip(&orders)
        .map(|(id, o)| (id.as_str(), o.status))
        .collect();
    let known_skus: HashSet<&str> = skus.iter().map(String::as_str).collect();
    let known_customers: HashSet<&str> = customer_ids.iter().map(String::as_str).collect();
    let mut expected_shipped: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, order) in order_ids.iter().zip(&orders) {
        let Some(status) = order.status else {
            audit.orders.not_placed += 1;
            continue;
        };
        match status {
            Status::Shipping => {
                audit.orders.shipping += 1;
                if order.attempts > 1 {
                    audit.orders.shipped_after_backorder += 1;
                }
                for line in &order.lines {
                    *expected_shipped.entry(line.sku.as_str()).or_default() += i64::from(line.qty);
                }
            }
            Status::Backordered => audit.orders.backordered += 1,
            Status::Cancelled => audit.orders.cancelled += 1,
        }
        if let Some(sku) = order
            .lines
            .iter()
            .find(|l| !known_skus.contains(l.sku.as_str()))
        {
            audit.violation(format!(
                "{id}: line for {} which is not in the catalog",
                sku.sku
            ));
        }
        if !known_customers.contains(order.customer.as_str()) {
            audit.violation(format!(
                "{id}: customer {} is not in the catalog",
                order.customer
            ));
        }
    }

    // Items: conservation, sign, holds.
    let mut holds = 0;
    for level in &levels {
        let sku = &level.sku;
        let t = &mut audit.stock;
        t.initial += level.initial;
        t.restocked += level.restocked;
        t.available += level.available;
        t.reserved += level.reserved;
        t.shipped += level.shipped;
        let have = level.available + level.reserved + level.shipped;
        let got = level.initial + level.restocked;
        if have != got {
            audit.violation(format!(
                "{sku}: available {} + reserved {} + shipped {} = {have}, but initial {} + \
                 restocked {} = {got}",
                level.available, level.reserved, level.shipped, level.initial, level.restocked
            ));
        }
        if level.available < 0 || level.reserved < 0 || level.shipped < 0 {
            audit.violation(format!(
                "{sku}: negative stock (available {}, reserved {}, shipped {})",
                level.available, level.reserved, level.shipped
            ));
        }
        if level.unheld_commits > 0 {
            audit.violation(format!(
                "{sku}: {} commits found no hold to ship from",
                level.unheld_commits
            ));
        }
        for held in &level.holds {
            holds += 1;
            let order = &held.order;
            match status.get(order.as_str()) {
                None => audit.violation(format!(
                    "{sku}: holds {} units for {order}, which is not in the catalog",
                    held.hold.qty
                )),
                Some(Some(Status::Shipping)) => audit.violation(format!(
                    "{sku}: still holds {} units for {order}, which is shipping",
                    held.hold.qty
                )),
                Some(_) if held.expires.is_none() => audit.violation(format!(
                    "{sku}: holds {} units for {order} with no expiry: they never come back",
                    held.hold.qty
                )),
                Some(_) => audit.holds_pending += 1,
            }
        }
    }
    audit.quiescent = holds == 0 && audit.orders.backordered == 0;

    // Across actors: what shipping orders promised was shipped (exactly, once quiet).
    for level in &levels {
        let expected = expected_shipped
            .get(level.sku.as_str())
            .copied()
            .unwrap_or(0);
        if level.shipped < expected || (audit.quiescent && level.shipped != expected) {
            audit.violation(format!(
                "{}: shipped {} units, but shipping orders have {expected} on it",
                level.sku, level.shipped
            ));
        }
    }

    // Customers heard of every shipped and cancelled order (exactly once, once quiet).
    for inbox in &inboxes {
        audit.notices += inbox.counts;
    }
    let (shipped, cancelled) = (audit.orders.shipping, audit.orders.cancelled);
    let notices = audit.notices;
    let exact = audit.quiescent;
    for (what, heard, happened) in [
        ("shipped", notices.shipped, shipped),
        ("cancelled", notices.cancelled, cancelled),
    ] {
        if heard < happened || (exact && heard != happened) {
            audit.violation(format!(
                "customers received {heard} \"{what}\" notices for {happened} {what} orders"
            ));
        }
    }

    // Every acknowledged order is there, at least as far along as acknowledged.
    for (id, acked_as) in acked {
        audit.acked_checked += 1;
        let now = status.get(id.as_str()).copied().flatten();
        let consistent = match (acked_as, now) {
            (_, None) => false,
            (Status::Shipping, Some(now)) => now == Status::Shipping,
            (Status::Cancelled, Some(now)) => now == Status::Cancelled,
            (Status::Backordered, Some(_)) => true,
        };
        if !consistent {
            let now = now.map_or("missing".to_string(), |s| s.to_string());
            audit.violation(format!("{id}: acknowledged as {acked_as}, now {now}"));
        }
    }
    Ok(audit)
}
