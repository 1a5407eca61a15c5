//! [`Customer`] (key = customer id): an inbox of the notices its orders send.
//!
//! Orders send notices with durable, exactly-once sends, so the per-kind counts equal the
//! orders' transitions (the audit checks it); the inbox itself keeps only the latest few.

use std::collections::VecDeque;

use gears::prelude::*;
use schemars::JsonSchema;

/// Notices kept in a customer's inbox (older ones are dropped, still counted).
pub const INBOX_SIZE: usize = 20;

/// A notification to a customer about one of their orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Notice {
    /// The order is shipping.
    Shipped {
        /// The order id.
        order: String,
    },
    /// A line of the order is out of stock; the order waits for it.
    Backordered {
        /// The order id.
        order: String,
        /// The missing SKU.
        sku: String,
    },
    /// The item the order waits for is back in stock; the order tries again.
    BackInStock {
        /// The order id.
        order: String,
        /// The SKU back in stock.
        sku: String,
    },
    /// The order waited too long and was cancelled.
    Cancelled {
        /// The order id.
        order: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Shipped { order } => write!(f, "order {order} shipped"),
            Notice::Backordered { order, sku } => {
                write!(f, "order {order} is backordered: {sku} is out of stock")
            }
            Notice::BackInStock { order, sku } => {
                write!(f, "{sku} is back in stock; retrying order {order}")
            }
            Notice::Cancelled { order } => write!(f, "order {order} was cancelled"),
        }
    }
}

/// Notices received, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeCounts {
    /// [`Notice::Shipped`] received.
    pub shipped: u64,
    /// [`Notice::Backordered`] received.
    pub backordered: u64,
    /// [`Notice::BackInStock`] received.
    pub back_in_stock: u64,
    /// [`Notice::Cancelled`] received.
    pub cancelled: u64,
}

impl std::ops::AddAssign for NoticeCounts {
    fn add_assign(&mut self, other: NoticeCounts) {
        self.shipped += other.shipped;
        self.backordered += other.backordered;
        self.back_in_stock += other.back_in_stock;
        self.cancelled += other.cancelled;
    }
}

/// What [`Customer::inbox`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Inbox {
    /// The latest notices, oldest first (at most [`INBOX_SIZE`]).
    pub recent: Vec<Notice>,
    /// Every notice ever received, by kind.
    pub counts: NoticeCounts,
}

/// A customer, keyed by customer id.
#[derive(Actor, Default, Debug, Serialize, Deserialize, JsonSchema)]
#[actor(name = "customer")]
pub struct Customer {
    recent: VecDeque<Notice>,
    counts: NoticeCounts,
}

#[handlers]
impl Customer {
    /// Files a notice in the inbox.
    #[handler(internal)]
    pub async fn notify(&mut self, notice: Notice) {
        let count = match &notice {
            Notice::Shipped { .. } => &mut self.counts.shipped,
            Notice::Backordered { .. } => &mut self.counts.backordered,
            Notice::BackInStock { .. } => &mut self.counts.back_in_stock,
            Notice::Cancelled { .. } => &mut self.counts.cancelled,
        };
        *count += 1;
        if self.recent.len() == INBOX_SIZE {
            self.recent.pop_front();
        }
        self.recent.push_back(notice);
    }

    /// The inbox: the latest notices and the counts of all.
    pub async fn inbox(&self) -> Inbox {
        Inbox {
            recent: self.recent.iter().cloned().collect(),
            counts: self.counts,
        }
    }
}
