//! The audit: visits every order, item and customer stored (a page of keys at a time, so a
//! store of any size, or one whose catalog claims absurd counts, is audited in bounded
//! memory) and checks that the sagas left the books consistent.
//!
//! Per item: `available + reserved + shipped == initial + restocked`, no negative stock, no
//! commit that found no hold. Across actors: every `Shipping` order's lines are shipped by
//! their items; no hold is left by an order that shipped, and every other hold has an expiry
//! timer (so its stock comes back); customers received a notice for every shipped and
//! cancelled order; every acknowledged order is present, with a status at least as far along
//! as the one acknowledged ([`Audit::check_acks`]).
//!
//! Orders are read first, then the outbox is drained, then items and customers: whatever an
//! order's state implies (commits, notices) was sent atomically with it, so it has arrived by
//! the time its targets are read. Work still pending (a backordered order, a hold waiting to
//! expire) may add more after that, and so may an order whose turn was still running when
//! the orders were listed; only when none is pending and nothing was written while the audit
//! ran must the counts match exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gears::Runtime;

use crate::acks::AckReader;
use crate::catalog::{CATALOG, Catalog, Contents};
use crate::customer::{Customer, NoticeCounts};
use crate::error::DemoError;
use crate::inventory::{InventoryItem, Level};
use crate::order::{Order, Status};
use crate::store::{Pages, read_all, settle};

/// Violations listed in full; further ones are only counted.
const MAX_LISTED: usize = 50;
/// Longest wait for the outbox to drain before reading items and customers.
const SETTLE_BOUND: Duration = Duration::from_secs(30);
/// Acknowledgements read from a log and checked at once.
const ACK_CHUNK: usize = 4096;

/// Orders by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Order numbers the simulation allocated in the catalog (a claim, not a list: an
    /// allocated order may never have been placed, and orders placed over HTTP with ids of
    /// their own are not numbered).
    pub allocated: u64,
    /// Orders stored with a status: `shipping + backordered + cancelled`.
    pub placed: u64,
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
    /// What the catalog claims (shown, never used to find keys).
    pub contents: Contents,
    /// Items stored (visited).
    pub items: u64,
    /// Customers stored (visited).
    pub customers: u64,
    /// Orders by status.
    pub orders: OrderCounts,
    /// Units over all items.
    pub stock: StockTotals,
    /// Holds of unfinished orders whose expiry is pending (their stock comes back then).
    pub holds_pending: usize,
    /// Notices over all customers.
    pub notices: NoticeCounts,
    /// Acknowledged orders checked (see [`Audit::check_acks`]); 0 when none were recorded.
    pub acked_checked: usize,
    /// Nothing was pending (no backordered order, no hold) and nothing was written while
    /// the audit ran: counts were checked exactly.
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

    /// Checks that every order in `acked` (acknowledged to whoever placed it, by this
    /// process or a crashed one, with the status it was acknowledged with) is present, at
    /// least as far along as acknowledged. Call it as often as needed, with the
    /// acknowledgements a chunk at a time if there are many; each is counted in
    /// [`acked_checked`](Self::acked_checked).
    pub async fn check_acks(
        &mut self,
        rt: &Runtime,
        acked: &[(String, Status)],
    ) -> Result<(), DemoError> {
        let ids: Vec<&String> = acked.iter().map(|(id, _)| id).collect();
        let now = read_all(&ids, |id| {
            let order = rt.get::<Order>(id.as_str());
            async move { order.status().await }
        })
        .await
        .map_err(|e| DemoError::call("reading acknowledged orders", e))?;
        for ((id, acked_as), now) in acked.iter().zip(now) {
            self.acked_checked += 1;
            let consistent = match (acked_as, now) {
                (_, None) => false,
                (Status::Shipping, Some(now)) => now == Status::Shipping,
                (Status::Cancelled, Some(now)) => now == Status::Cancelled,
                (Status::Backordered, Some(_)) => true,
            };
            if !consistent {
                let now = now.map_or("missing".to_string(), |s| s.to_string());
                self.violation(format!("{id}: acknowledged as {acked_as}, now {now}"));
            }
        }
        Ok(())
    }
}

/// Audits the store `rt` runs on, and checks the acknowledged orders in `acked` (see
/// [`Audit::check_acks`]; pass `&[]` if none were recorded, and the audit says so).
pub async fn audit(rt: &Runtime, acked: &[(String, Status)]) -> Result<Audit, DemoError> {
    let contents = rt
        .get::<Catalog>(CATALOG)
        .contents()
        .await
        .map_err(|e| DemoError::call("reading the catalog", e))?;
    let mut audit = Audit {
        contents,
        ..Audit::default()
    };
    audit.orders.allocated = contents.orders;
    // Keys written by turns: the removal of a timer index entry whose timers are gone
    // (upkeep the runtime does when it comes due) changes no actor.
    let turn_writes = || rt.stats().turn_writes();
    let writes_before = turn_writes();
    let mut expected_shipped = audit_orders(rt, &mut audit).await?;
    if !settle(rt, SETTLE_BOUND).await {
        return Err(DemoError::Refused(format!(
            "the outbox did not drain within {SETTLE_BOUND:?}; cannot audit a moving store"
        )));
    }
    let items = audit_items(rt, &mut audit, &mut expected_shipped).await?;
    audit_customers(rt, &mut audit).await?;
    // A write while auditing (an order's turn that was still running, a timer) may have
    // added effects whose cause was listed before it existed.
    let still = turn_writes() == writes_before;
    audit.quiescent = still && items.holds == 0 && audit.orders.backordered == 0;
    if audit.quiescent {
        for (sku, shipped, expected) in items.excess {
            audit.violation(format!(
                "{sku}: shipped {shipped} units, but shipping orders have {expected} on it"
            ));
        }
    }

    // What shipping orders promised was shipped, by items that exist.
    for (sku, expected) in expected_shipped {
        audit.violation(format!(
            "{sku}: shipping orders have {expected} units on it, but no such item is stored"
        ));
    }
    // Customers heard of every shipped and cancelled order (exactly once, once quiet).
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
    audit.check_acks(rt, acked).await?;
    Ok(audit)
}

/// Audits the store `rt` runs on, and checks every acknowledgement recorded in the logs at
/// `logs` (see [`crate::acks`]), a chunk at a time.
pub async fn audit_logged(rt: &Runtime, logs: &[PathBuf]) -> Result<Audit, DemoError> {
    let mut audit = audit(rt, &[]).await?;
    for path in logs {
        let mut log = AckReader::open(path)?;
        loop {
            let chunk = log.next_chunk(ACK_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            audit.check_acks(rt, &chunk).await?;
        }
    }
    Ok(audit)
}

/// Counts every stored order by status; returns the units shipping orders take from each
/// SKU (as many entries as SKUs that shipped: items that exist).
async fn audit_orders(rt: &Runtime, audit: &mut Audit) -> Result<BTreeMap<String, i64>, DemoError> {
    let mut expected_shipped: BTreeMap<String, i64> = BTreeMap::new();
    let mut pages = Pages::<Order>::new(rt);
    while let Some(ids) = pages.next_page().await? {
        let orders = read_all(&ids, |id| {
            let h = rt.get::<Order>(id);
            async move { h.details().await }
        })
        .await
        .map_err(|e| DemoError::call("reading orders", e))?;
        for order in orders {
            let Some(status) = order.status else {
                continue;
            };
            audit.orders.placed += 1;
            match status {
                Status::Shipping => {
                    audit.orders.shipping += 1;
                    if order.attempts > 1 {
                        audit.orders.shipped_after_backorder += 1;
                    }
                    for line in order.lines {
                        *expected_shipped.entry(line.sku).or_default() += i64::from(line.qty);
                    }
                }
                Status::Backordered => audit.orders.backordered += 1,
                Status::Cancelled => audit.orders.cancelled += 1,
            }
        }
    }
    Ok(expected_shipped)
}

/// What [`audit_items`] leaves for checks that need to know whether the store is quiet.
#[derive(Default)]
struct ItemsSeen {
    /// Holds found.
    holds: usize,
    /// Items that shipped more than the shipping orders have on them: (SKU, shipped,
    /// expected). Fine while orders move, a violation once quiet.
    excess: Vec<(String, i64, i64)>,
}

/// Checks every stored item (conservation, sign, holds, shipped units against
/// `expected_shipped`, whose entries it removes as it visits their items).
async fn audit_items(
    rt: &Runtime,
    audit: &mut Audit,
    expected_shipped: &mut BTreeMap<String, i64>,
) -> Result<ItemsSeen, DemoError> {
    let mut holds = 0;
    let mut excess = Vec::new();
    // Holds for orders that were shipping when read: their `commit` may have been on its
    // way; they are checked again once the outbox is empty.
    let mut suspect: Vec<(String, String)> = Vec::new();
    let mut pages = Pages::<InventoryItem>::new(rt);
    while let Some(skus) = pages.next_page().await? {
        let levels = read_levels(rt, &skus).await?;
        for level in &levels {
            audit.items += 1;
            check_item(audit, level);
            let expected = expected_shipped.remove(&level.sku).unwrap_or(0);
            // More shipped than shipping orders account for is fine while orders are still
            // moving (one shipped after it was read); exactness is checked once quiet.
            if level.shipped < expected {
                audit.violation(format!(
                    "{}: shipped {} units, but shipping orders have {expected} on it",
                    level.sku, level.shipped
                ));
            }
            if level.shipped > expected {
                excess.push((level.sku.clone(), level.shipped, expected));
            }
        }
        let held: Vec<(String, String, u32, bool)> = levels
            .iter()
            .flat_map(|l| {
                l.holds.iter().map(|h| {
                    let expiring = h.expires.is_some();
                    (l.sku.clone(), h.order.clone(), h.hold.qty, expiring)
                })
            })
            .collect();
        holds += held.len();
        let statuses = read_all(&held, |(_, order, _, _)| {
            let h = rt.get::<Order>(order);
            async move { h.status().await }
        })
        .await
        .map_err(|e| DemoError::call("reading orders that hold stock", e))?;
        for ((sku, order, qty, expiring), status) in held.into_iter().zip(statuses) {
            match status {
                Some(Status::Shipping) => suspect.push((sku, order)),
                _ if !expiring => audit.violation(format!(
                    "{sku}: holds {qty} units for {order} with no expiry: they never come back"
                )),
                _ => audit.holds_pending += 1,
            }
        }
    }
    if !suspect.is_empty() {
        if !settle(rt, SETTLE_BOUND).await {
            return Err(DemoError::Refused(format!(
                "the outbox did not drain within {SETTLE_BOUND:?}; cannot audit a moving store"
            )));
        }
        for (sku, order) in suspect {
            let level = rt
                .get::<InventoryItem>(&sku)
                .level()
                .await
                .map_err(|e| DemoError::call("reading an item again", e))?;
            if let Some(held) = level.holds.iter().find(|h| h.order == order) {
                audit.violation(format!(
                    "{sku}: still holds {} units for {order}, which is shipping",
                    held.hold.qty
                ));
            }
        }
    }
    Ok(ItemsSeen { holds, excess })
}

/// Per-item books: conservation, no negative stock, no commit without its hold.
fn check_item(audit: &mut Audit, level: &Level) {
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
}

async fn read_levels(rt: &Runtime, skus: &[String]) -> Result<Vec<Level>, DemoError> {
    read_all(skus, |sku| {
        let h = rt.get::<InventoryItem>(sku);
        async move { h.level().await }
    })
    .await
    .map_err(|e| DemoError::call("reading items", e))
}

/// Sums the notices of every stored customer.
async fn audit_customers(rt: &Runtime, audit: &mut Audit) -> Result<(), DemoError> {
    let mut pages = Pages::<Customer>::new(rt);
    while let Some(ids) = pages.next_page().await? {
        let inboxes = read_all(&ids, |id| {
            let h = rt.get::<Customer>(id);
            async move { h.inbox().await }
        })
        .await
        .map_err(|e| DemoError::call("reading customers", e))?;
        for inbox in inboxes {
            audit.customers += 1;
            audit.notices += inbox.counts;
        }
    }
    Ok(())
}
