//! [`Catalog`]: how many items and customers the simulated shop has, and the order numbers
//! it handed out, kept in Gears like everything else.
//!
//! The simulation names its keys by number (`sku-0007`, `o-0000042`, `c-00031`); the catalog
//! records how many items and customers it seeded and allocates order numbers before the
//! orders are placed, so two runs on one store never reuse an order id.
//!
//! The counts are never trusted for an allocation: a store written by an older demo, whose
//! handlers took any count, may claim 4 billion items or 10^12 orders. Whoever reads them
//! caps what it holds (the live page shows at most `serve::MAX_LIVE_SKUS` items)
//! or pages through the keys actually stored (the audit, the drain), never `0..count`.

use gears::prelude::*;
use schemars::JsonSchema;

/// The key of the one catalog actor.
pub const CATALOG: &str = "demo";

/// Most items [`Catalog::ensure`] lists.
pub const MAX_SKUS: u32 = 100_000;
/// Most customers [`Catalog::ensure`] lists.
pub const MAX_CUSTOMERS: u32 = 1_000_000;
/// Most order numbers one [`Catalog::allocate_orders`] hands out (a run's `--orders`).
pub const MAX_ORDERS_PER_RUN: u64 = 10_000_000;

/// The SKU of item number `n`.
pub fn sku_id(n: u32) -> String {
    format!("sku-{n:04}")
}

/// The id of order number `n`.
pub fn order_id(n: u64) -> String {
    format!("o-{n:07}")
}

/// The id of customer number `n`.
pub fn customer_id(n: u32) -> String {
    format!("c-{n:05}")
}

/// What [`Catalog::contents`] returns: how many of each key the simulation numbered.
///
/// Counts, not lists: read them as claims about the store, and never allocate by them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Contents {
    /// Items `sku_id(0..skus)`.
    pub skus: u32,
    /// Customers `customer_id(0..customers)`.
    pub customers: u32,
    /// Order numbers `order_id(0..orders)` allocated (placed or not).
    pub orders: u64,
}

/// Why [`Catalog`] refused a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CatalogError {
    /// A count is outside the range the demo accepts.
    OutOfRange(String),
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogError::OutOfRange(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CatalogError {}

/// The simulation's index of its keys (one actor, key [`CATALOG`]).
#[derive(Actor, Default, Debug, Serialize, Deserialize, JsonSchema)]
#[actor(name = "catalog")]
pub struct Catalog {
    contents: Contents,
}

#[handlers]
impl Catalog {
    /// Makes sure items `0..skus` and customers `0..customers` are listed (never shrinks).
    /// At most [`MAX_SKUS`] items and [`MAX_CUSTOMERS`] customers.
    #[handler(internal)]
    pub async fn ensure(&mut self, skus: u32, customers: u32) -> Result<Contents, CatalogError> {
        if skus > MAX_SKUS || customers > MAX_CUSTOMERS {
            return Err(CatalogError::OutOfRange(format!(
                "a shop has at most {MAX_SKUS} items and {MAX_CUSTOMERS} customers, not \
                 {skus} and {customers}"
            )));
        }
        self.contents.skus = self.contents.skus.max(skus);
        self.contents.customers = self.contents.customers.max(customers);
        Ok(self.contents)
    }

    /// Allocates `n` order numbers (at most [`MAX_ORDERS_PER_RUN`]); returns the first.
    /// Durable before it returns, so the orders placed with them never reuse an id.
    #[handler(internal)]
    pub async fn allocate_orders(&mut self, n: u64) -> Result<u64, CatalogError> {
        let first = self.contents.orders;
        let next = first.checked_add(n).filter(|_| n <= MAX_ORDERS_PER_RUN);
        let Some(next) = next else {
            return Err(CatalogError::OutOfRange(format!(
                "at most {MAX_ORDERS_PER_RUN} order numbers at once, and no more than {} in \
                 all; asked for {n} after {first}",
                u64::MAX
            )));
        };
        self.contents.orders = next;
        Ok(first)
    }

    /// How many of each key the simulation numbered.
    pub async fn contents(&self) -> Contents {
        self.contents
    }
}
