//! [`Catalog`]: the demo's index of its own keys, kept in Gears like everything else.
//!
//! The runtime has no way to list the keys of an actor type, and the audit must visit every
//! item, order and customer. So the demo names its keys by number (`sku-0007`, `o-0000042`,
//! `c-00031`) and the catalog records how many of each exist. Order numbers are allocated
//! before the orders are placed, so every order that was ever acknowledged is in the range
//! (some allocated ones may never have been placed: a run was killed first).

use gears::prelude::*;

/// The key of the one catalog actor.
pub const CATALOG: &str = "demo";

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

/// What [`Catalog::contents`] returns: how many of each key exist, numbered from 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// Items `sku_id(0..skus)`.
    pub skus: u32,
    /// Customers `customer_id(0..customers)`.
    pub customers: u32,
    /// Orders `order_id(0..orders)` allocated (placed or not).
    pub orders: u64,
}

impl Contents {
    /// Every SKU.
    pub fn sku_ids(&self) -> Vec<String> {
        (0..self.skus).map(sku_id).collect()
    }

    /// Every allocated order id.
    pub fn order_ids(&self) -> Vec<String> {
        (0..self.orders).map(order_id).collect()
    }

    /// Every customer id.
    pub fn customer_ids(&self) -> Vec<String> {
        (0..self.customers).map(customer_id).collect()
    }
}

/// The index of the demo's keys (one actor, key [`CATALOG`]).
#[derive(Actor, Default, Debug, Serialize, Deserialize)]
#[actor(name = "catalog")]
pub struct Catalog {
    contents: Contents,
}

#[handlers]
impl Catalog {
    /// Makes sure items `0..skus` and customers `0..customers` are listed (never shrinks).
    pub async fn ensure(&mut self, skus: u32, customers: u32) -> Contents {
        self.contents.skus = self.contents.skus.max(skus);
        self.contents.customers = self.contents.customers.max(customers);
        self.contents
    }

    /// Allocates `n` order numbers; returns the first. Durable before it returns, so the
    /// orders placed with them are always within the catalog's range.
    pub async fn allocate_orders(&mut self, n: u64) -> u64 {
        let first = self.contents.orders;
        self.contents.orders = first.saturating_add(n);
        first
    }

    /// How many of each key exist.
    pub async fn contents(&self) -> Contents {
        self.contents
    }
}
