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
//!   `place`, which checks everything (keys, quantities, durations) before it holds anything.
//! - [`Customer`] (`customer.rs`): an inbox of [`Notice`]s.
//! - [`Catalog`] (`catalog.rs`): how many items and customers the simulation seeded and the
//!   order numbers it allocated; counts the demo never allocates by.
//! - The simulation (`simulation.rs`): [`seed`], [`place_orders`], [`drain`],
//!   [`drain_store`].
//! - The audit (`audit.rs`): [`audit()`], [`audit_logged`], the invariants the books must
//!   satisfy, checked over every stored key a page at a time.
//! - The acknowledgement log (`acks.rs`): [`AckLog`], what the demo acknowledged, for the
//!   audit to check.
//! - The store (`store.rs`): [`open`] with every actor registered, [`wipe`], [`settle`],
//!   [`Pages`] of stored keys.
//! - The report (`report.rs`): [`RunReport`] and the audit's `Display`.
//! - Serving (`serve.rs`, feature `http`): the actors behind `gears::http`, a background
//!   simulation, and the live page (`static/live.html`) fed by one aggregate event stream.
//!
//! ## What is reachable from outside
//! Over HTTP, only what a shop's client may do: `Order::place` (checked), the reads
//! (`status`, `details`, `level`, `inbox`, `contents`) and `InventoryItem::restock`
//! (checked). The saga's steps between actors (`reserve`, `release`, `commit`, `expire`,
//! `confirm_hold`, `on_back_in_stock`, `give_up`, `notify`) and the catalog's maintenance
//! (`ensure`, `allocate_orders`, `seed`) are internal: actors, sends, timers and in-process
//! handles call them; the ingress answers 404 and does not list them.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod acks;
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
#[cfg(feature = "otel")]
pub mod telemetry;

pub use acks::{ACK_LOG, AckLog, AckReader, ack_log_path, format_ack, parse_ack};
pub use audit::{Audit, OrderCounts, StockTotals, audit, audit_logged};
pub use catalog::{
    CATALOG, Catalog, CatalogError, CatalogHandle, Contents, MAX_CUSTOMERS, MAX_ORDERS_PER_RUN,
    MAX_SKUS, customer_id, order_id, sku_id,
};
pub use customer::{Customer, CustomerHandle, INBOX_SIZE, Inbox, Notice, NoticeCounts};
pub use error::DemoError;
pub use inventory::{
    BackInStock, HeldFor, Hold, InventoryItem, InventoryItemHandle, InventoryItemMessage, Level,
    MAX_RESTOCK, OutOfStock, RestockError,
};
pub use order::{
    Line, MAX_EXPIRED_ATTEMPTS, MAX_LINES, MAX_POLICY_MS, MAX_QTY, Order, OrderHandle, OrderV1,
    OrderView, PlaceError, Policy, Status,
};
pub use report::RunReport;
pub use simulation::{
    Drained, MAX_CONCURRENCY, Observer, Placement, Silent, Workload, drain, drain_store,
    place_orders, seed,
};
#[cfg(feature = "cluster")]
pub use store::open_node;
pub use store::{
    FAN_OUT, PAGE, Pages, StoreOptions, default_dir, is_store, open, read_all, register, settle,
    wipe,
};
