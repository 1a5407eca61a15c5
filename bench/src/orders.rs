//! The lean flow of the order workflow (`order-workflow --flow lean`): inventory items and
//! orders as minimal actors. An order reserves its lines on the items, then records itself:
//! one turn per line and one for the order, no timer, no outbox message. The default flow
//! (`demo`) uses the order demo's own actors instead; this one shows what the runtime costs
//! with the demo's holds, timers and notices taken out.

use gears::prelude::*;

/// Stock of one SKU.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "inventory_item")]
pub(crate) struct InventoryItem {
    available: u32,
    reserved: u32,
}

/// A reservation asked for more than is available.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OutOfStock {
    /// What was available.
    pub(crate) available: u32,
}

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "only {} left", self.available)
    }
}

impl std::error::Error for OutOfStock {}

#[handlers]
impl InventoryItem {
    /// Adds stock; returns what is available.
    pub(crate) async fn restock(&mut self, qty: u32) -> u32 {
        self.available = self.available.saturating_add(qty);
        self.available
    }

    /// Sets `qty` aside for an order; returns what is left.
    pub(crate) async fn reserve(&mut self, qty: u32) -> Result<u32, OutOfStock> {
        if qty > self.available {
            return Err(OutOfStock {
                available: self.available,
            });
        }
        self.available -= qty;
        self.reserved += qty;
        Ok(self.available)
    }

    /// Gives back a reservation of an order that failed.
    pub(crate) async fn release(&mut self, qty: u32) {
        let qty = qty.min(self.reserved);
        self.reserved -= qty;
        self.available += qty;
    }
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Line {
    /// The item's key.
    pub(crate) sku: String,
    /// How many.
    pub(crate) qty: u32,
}

/// An order: its lines, once placed.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "order")]
pub(crate) struct Order {
    lines: Vec<Line>,
    placed: bool,
}

/// Why an order was not placed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PlaceError {
    /// The order was placed before.
    AlreadyPlaced,
    /// A line could not be reserved (earlier lines were released).
    OutOfStock {
        /// The item.
        sku: String,
        /// What it had.
        available: u32,
    },
    /// Calling an item failed.
    Item(String),
}

impl std::fmt::Display for PlaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceError::AlreadyPlaced => write!(f, "the order was already placed"),
            PlaceError::OutOfStock { sku, available } => {
                write!(f, "{sku} is out of stock ({available} left)")
            }
            PlaceError::Item(e) => write!(f, "an item call failed: {e}"),
        }
    }
}

impl std::error::Error for PlaceError {}

#[handlers]
impl Order {
    /// Reserves every line on its item, then records the order (committed with this turn).
    pub(crate) async fn place(
        &mut self,
        ctx: &Context,
        lines: Vec<Line>,
    ) -> Result<(), PlaceError> {
        if self.placed {
            return Err(PlaceError::AlreadyPlaced);
        }
        for (i, line) in lines.iter().enumerate() {
            let failed = match ctx.get::<InventoryItem>(&line.sku).reserve(line.qty).await {
                Ok(_) => continue,
                Err(CallError::Handler(OutOfStock { available })) => PlaceError::OutOfStock {
                    sku: line.sku.clone(),
                    available,
                },
                Err(e) => PlaceError::Item(e.to_string()),
            };
            for done in &lines[..i] {
                // Best effort: a release that fails leaves stock reserved, never oversold.
                let _ = ctx.get::<InventoryItem>(&done.sku).release(done.qty).await;
            }
            return Err(failed);
        }
        self.lines = lines;
        self.placed = true;
        Ok(())
    }
}
