//! # The Gears order demo
//!
//! A shop as durable virtual actors: items hold stock for orders, orders run a small saga
//! (reserve every line, then ship, or wait for a restock, or give up), customers get
//! notices. `cargo run --release -p order-demo` seeds a store, places thousands of orders
//! concurrently while restocking, and audits the result; `order-demo audit --data DIR`
//! audits a store again (after a crash, say).
//!
//! ## Where each part lives
//! - [`InventoryItem`] (`inventory.rs`): stock per SKU; holds per order, idempotent per order
//!   id; a typed [`OutOfStock`] error; holds that expire by durable timer; the
//!   [`BackInStock`] event.
//! - [`Order`] (`order.rs`): the saga: `Shipping`, `Backordered` (subscribed to the missing
//!   SKU, retried on restock, cancelled by a deadline timer), `Cancelled`; idempotent
//!   `place`.
//! - [`Customer`] (`customer.rs`): an inbox of [`Notice`]s.
//! - [`Catalog`] (`catalog.rs`): how many items, orders and customers exist, so the audit can
//!   visit them all in order.
//! - The simulation (`simulation.rs`): [`seed`], [`place_orders`], [`drain`].
//! - The audit (`audit.rs`): [`audit()`], the invariants the books must satisfy.
//! - The store (`store.rs`): [`open`] with every actor registered, [`wipe`], [`settle`].
//! - The report (`report.rs`): [`RunReport`] and the audit's `Display`.
//! - Serving (`serve.rs`, feature `http`): the actors behind `gears::http`, a background
//!   simulation, and the live page (`static/live.html`) fed by one aggregate event stream.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod audit;
mod catalog;
mod customer;
mod error;
mod inventory;
mod order;
mod report;
/// `order-demo serve`: the HTTP ingress, the live page and a background simulation.
#[cfg(feature = "http")]
pub mod serve;
mod simulation;
mod store;

pub use audit::{Audit, OrderCounts, StockTotals, audit};
pub use catalog::{CATALOG, Catalog, CatalogHandle, Contents, customer_id, order_id, sku_id};
pub use customer::{Customer, CustomerHandle, INBOX_SIZE, Inbox, Notice, NoticeCounts};
pub use error::DemoError;
pub use inventory::{
    BackInStock, HeldFor, Hold, InventoryItem, InventoryItemHandle, Level, OutOfStock,
};
pub use order::{Line, Order, OrderHandle, OrderView, PlaceError, Policy, Status};
pub use report::RunReport;
pub use simulation::{Drained, Observer, Placement, Silent, Workload, drain, place_orders, seed};
pub use store::{FAN_OUT, StoreOptions, default_dir, is_store, open, read_all, settle, wipe};
