//! The SQLite side of the order workflow: the same flow written the way a stateless function
//! would, one transaction per order on a WAL database (`synchronous=FULL` for `Sync`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use crate::BenchResult;
use crate::durability::Mode;

/// Opens a connection configured like the benchmark's database.
pub(crate) fn connect(path: &Path, mode: Mode) -> BenchResult<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", mode.sqlite_synchronous())?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// Creates the tables and stocks `skus` items with `stock` each.
pub(crate) fn create(path: &Path, mode: Mode, skus: &[String], stock: u32) -> BenchResult<()> {
    let mut conn = connect(path, mode)?;
    conn.execute_batch(
        "CREATE TABLE items (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, \
             reserved INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE orders (id TEXT PRIMARY KEY, lines TEXT NOT NULL) WITHOUT ROWID;",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT INTO items (sku, available, reserved) VALUES (?1, ?2, 0)")?;
        for sku in skus {
            insert.execute(params![sku, stock])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Places one order in one transaction: reserve every line, record the order, commit.
/// Returns false (and rolls back) if a line is out of stock.
pub(crate) fn place(conn: &mut Connection, id: &str, lines: &[(String, u32)]) -> BenchResult<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (sku, qty) in lines {
        let changed = tx
            .prepare_cached(
                "UPDATE items SET available = available - ?1, reserved = reserved + ?1 \
                 WHERE sku = ?2 AND available >= ?1",
            )?
            .execute(params![qty, sku])?;
        if changed != 1 {
            return Ok(false);
        }
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
