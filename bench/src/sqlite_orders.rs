//! The SQLite side of the order workflow: the same business flow written the way a
//! stateless function would, one `BEGIN IMMEDIATE` transaction per order on a WAL database
//! (`synchronous=FULL` for `Sync`). One function per `--flow`:
//! - `demo`: [`place_and_ship`] takes each line off its item's stock into `shipped` (a
//!   conditional `UPDATE`), records the order as shipping with its lines, and files the
//!   customer's notice, as the demo's `Order`, `InventoryItem` and `Customer` actors do.
//! - `lean`: [`place`] reserves each line and records the order, as the stand-ins in
//!   `orders.rs` do.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::BenchResult;
use crate::durability::Mode;
use crate::order_workflow::Flow;

/// Opens a connection configured like the benchmark's database.
pub(crate) fn connect(path: &Path, mode: Mode) -> BenchResult<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", mode.sqlite_synchronous())?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// Creates `flow`'s tables and stocks `skus` items with `stock` each.
pub(crate) fn create(
    path: &Path,
    mode: Mode,
    flow: Flow,
    skus: &[String],
    stock: u32,
) -> BenchResult<()> {
    let mut conn = connect(path, mode)?;
    let (tables, stock_item) = match flow {
        Flow::Demo => (
            // Notices are read by customer, as the demo reads a `Customer`'s inbox.
            "CREATE TABLE items (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, \
                 shipped INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, \
                 status TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE order_lines (order_id TEXT NOT NULL, sku TEXT NOT NULL, \
                 qty INTEGER NOT NULL, PRIMARY KEY (order_id, sku)) WITHOUT ROWID;
             CREATE TABLE notices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, \
                 order_id TEXT NOT NULL, kind TEXT NOT NULL);
             CREATE INDEX notices_by_customer ON notices (customer);",
            "INSERT INTO items (sku, available, shipped) VALUES (?1, ?2, 0)",
        ),
        Flow::Lean => (
            "CREATE TABLE items (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, \
                 reserved INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE orders (id TEXT PRIMARY KEY, lines TEXT NOT NULL) WITHOUT ROWID;",
            "INSERT INTO items (sku, available, reserved) VALUES (?1, ?2, 0)",
        ),
    };
    conn.execute_batch(tables)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(stock_item)?;
        for sku in skus {
            insert.execute(params![sku, stock])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The lean flow: places one order in one transaction: reserve every line, record the
/// order, commit. Returns false (and rolls back) if a line is out of stock.
pub(crate) fn place(conn: &mut Connection, id: &str, lines: &[(String, u32)]) -> BenchResult<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let update = "UPDATE items SET available = available - ?1, reserved = reserved + ?1 \
                  WHERE sku = ?2 AND available >= ?1";
    if !take_stock(&tx, update, lines)? {
        return Ok(false);
    }
    let encoded: Vec<String> = lines
        .iter()
        .map(|(sku, qty)| format!("{sku}:{qty}"))
        .collect();
    tx.prepare_cached("INSERT INTO orders (id, lines) VALUES (?1, ?2)")?
        .execute(params![id, encoded.join(",")])?;
    tx.commit()?;
    Ok(true)
}

/// The demo flow: places order `id` of `customer` in one transaction: ship every line from
/// its item's stock, record the order as shipping with its lines, file the customer's
/// notice, commit. Returns false (and rolls back) if a line is out of stock.
pub(crate) fn place_and_ship(
    conn: &mut Connection,
    id: &str,
    customer: &str,
    lines: &[(String, u32)],
) -> BenchResult<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let update = "UPDATE items SET available = available - ?1, shipped = shipped + ?1 \
                  WHERE sku = ?2 AND available >= ?1";
    if !take_stock(&tx, update, lines)? {
        // Dropping the transaction rolls it back.
        return Ok(false);
    }
    tx.prepare_cached("INSERT INTO orders (id, customer, status) VALUES (?1, ?2, 'shipping')")?
        .execute(params![id, customer])?;
    {
        let mut insert_line =
            tx.prepare_cached("INSERT INTO order_lines (order_id, sku, qty) VALUES (?1, ?2, ?3)")?;
        for (sku, qty) in lines {
            insert_line.execute(params![id, sku, qty])?;
        }
    }
    tx.prepare_cached("INSERT INTO notices (customer, order_id, kind) VALUES (?1, ?2, 'shipped')")?
        .execute(params![customer, id])?;
    tx.commit()?;
    Ok(true)
}

/// Runs `update` (a conditional stock decrement taking `?1` = quantity, `?2` = SKU) for every
/// line; false as soon as a line finds too little stock.
fn take_stock(tx: &Transaction<'_>, update: &str, lines: &[(String, u32)]) -> BenchResult<bool> {
    let mut update = tx.prepare_cached(update)?;
    for (sku, qty) in lines {
        if update.execute(params![qty, sku])? != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}
