//! The simulated shop: seeds the items, then many customers place orders concurrently while
//! stock is restocked, then the demo waits for backordered orders to be decided.
//!
//! Item popularity is skewed (low SKU numbers sell most), so popular items run out, orders
//! are backordered, restocks (of the same skew, one every few orders) bring them back, and
//! the orders that waited either ship or reach their deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gears::{CallError, Runtime};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::catalog::{
    CATALOG, Catalog, MAX_CUSTOMERS, MAX_ORDERS_PER_RUN, MAX_SKUS, customer_id, order_id, sku_id,
};
use crate::error::DemoError;
use crate::inventory::InventoryItem;
use crate::inventory::MAX_RESTOCK;
use crate::order::{Line, MAX_LINES, MAX_QTY, Order, PlaceError, Policy, Status};
use crate::store::{Pages, read_all, settle};

/// Times a worker retries an order whose items were busy before giving up on it.
const MAX_TRIES: u32 = 8;
/// Highest latency the histogram records, in microseconds (higher values are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

/// The shape of a simulated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Orders to place.
    pub orders: u64,
    /// Items in the shop.
    pub skus: u32,
    /// Customers placing orders.
    pub customers: u32,
    /// Orders being placed at once.
    pub concurrency: usize,
    /// Most lines per order (at least 1).
    pub max_lines: u32,
    /// Most units per line (at least 1).
    pub max_qty: u32,
    /// Units each item starts with.
    pub initial_stock: u32,
    /// One restock after every this many orders (0: never).
    pub restock_every: u64,
    /// Units per restock.
    pub restock_qty: u32,
    /// Timing of each order's saga.
    pub policy: Policy,
    /// Seed of the order generator.
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            orders: 20_000,
            skus: 200,
            customers: 2_000,
            concurrency: 64,
            max_lines: 3,
            max_qty: 3,
            initial_stock: 120,
            restock_every: 10,
            restock_qty: 30,
            policy: Policy::default(),
            seed: 42,
        }
    }
}

/// Most orders a simulation places at once.
pub const MAX_CONCURRENCY: usize = 4096;

impl Workload {
    /// Every count within the range the demo accepts (the actors check the same ranges;
    /// checking here first gives one clear message instead of thousands of refused orders).
    pub fn check(&self) -> Result<(), DemoError> {
        let ranges: [(&str, u64, u64, u64); 8] = [
            ("orders", self.orders, 0, MAX_ORDERS_PER_RUN),
            ("skus", self.skus.into(), 1, MAX_SKUS.into()),
            ("customers", self.customers.into(), 1, MAX_CUSTOMERS.into()),
            (
                "concurrency",
                self.concurrency as u64,
                1,
                MAX_CONCURRENCY as u64,
            ),
            ("max_lines", self.max_lines.into(), 1, MAX_LINES as u64),
            ("max_qty", self.max_qty.into(), 1, MAX_QTY.into()),
            (
                "restock_qty",
                self.restock_qty.into(),
                u64::from(self.restock_every > 0),
                MAX_RESTOCK.into(),
            ),
            (
                "initial_stock",
                self.initial_stock.into(),
                0,
                MAX_RESTOCK.into(),
            ),
        ];
        for (what, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(DemoError::Refused(format!(
                    "{what} must be {min} to {max}, not {value}"
                )));
            }
        }
        self.policy
            .check()
            .map_err(|e| DemoError::Refused(e.to_string()))
    }
}

/// Hears about the run's progress (a progress bar, the crash test's acknowledgements).
pub trait Observer: Send + Sync {
    /// Order numbers `first..first + count` are about to be placed.
    fn started(&self, first: u64, count: u64) {
        let _ = (first, count);
    }

    /// `order` was placed and acknowledged with `status` (durable by now).
    fn placed(&self, order: &str, status: Status) {
        let _ = (order, status);
    }

    /// `order` could not be placed, even after retries.
    fn failed(&self, order: &str, error: &str) {
        let _ = (order, error);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

/// What placing the orders did.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Number of the first order placed.
    pub first: u64,
    /// Every acknowledged order with the status it was acknowledged with.
    pub acked: Vec<(String, Status)>,
    /// Orders that could not be placed, with the last error.
    pub failed: Vec<(String, String)>,
    /// Calls to `place` retried because an item was busy.
    pub retries: u64,
    /// Restocks done during the run, and the units they added.
    pub restocks: (u64, u64),
    /// Time from the first order to the last acknowledgement.
    pub elapsed: Duration,
    /// Latency of each order as its customer saw it (retries included), in microseconds.
    pub latency: Histogram<u64>,
}

impl Placement {
    /// Acknowledged orders per second.
    pub fn throughput(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// How many orders were acknowledged with `status`.
    pub fn acked_with(&self, status: Status) -> usize {
        self.acked.iter().filter(|(_, s)| *s == status).count()
    }

    /// The ids of the orders acknowledged with `status`.
    pub fn ids_with(&self, status: Status) -> Vec<String> {
        self.acked
            .iter()
            .filter(|(_, s)| *s == status)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Lists the items and customers in the catalog and seeds every item (idempotent: a store
/// seeded before keeps its stock).
pub async fn seed(rt: &Runtime, workload: &Workload) -> Result<(), DemoError> {
    workload.check()?;
    rt.get::<Catalog>(CATALOG)
        .ensure(workload.skus, workload.customers)
        .await
        .map_err(|e| DemoError::call("listing items and customers in the catalog", e))?;
    let skus: Vec<String> = (0..workload.skus).map(sku_id).collect();
    let qty = workload.initial_stock;
    read_all(&skus, |sku| {
        let item = rt.get::<InventoryItem>(sku);
        async move { item.seed(qty).await }
    })
    .await
    .map_err(|e| DemoError::call("seeding the items", e))?;
    Ok(())
}

/// Places `workload.orders` new orders, `workload.concurrency` at a time, restocking as it
/// goes. Order numbers are allocated in the catalog first.
pub async fn place_orders(
    rt: &Runtime,
    workload: &Workload,
    observer: Arc<dyn Observer>,
) -> Result<Placement, DemoError> {
    workload.check()?;
    let first = rt
        .get::<Catalog>(CATALOG)
        .allocate_orders(workload.orders)
        .await
        .map_err(|e| DemoError::call("allocating order numbers", e))?;
    observer.started(first, workload.orders);
    let shared = Arc::new(Shared {
        rt: rt.clone(),
        workload: workload.clone(),
        first,
        next: AtomicU64::new(0),
        observer,
    });
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..workload.concurrency {
        workers.spawn(work(shared.clone(), worker as u64, new_histogram()?));
    }
    let mut placement = Placement {
        first,
        acked: Vec::new(),
        failed: Vec::new(),
        retries: 0,
        restocks: (0, 0),
        elapsed: Duration::ZERO,
        latency: new_histogram()?,
    };
    while let Some(done) = workers.join_next().await {
        let done = done.map_err(|e| DemoError::call("an order worker", e))?;
        placement.acked.extend(done.acked);
        placement.failed.extend(done.failed);
        placement.retries += done.retries;
        placement.restocks.0 += done.restocks.0;
        placement.restocks.1 += done.restocks.1;
        placement
            .latency
            .add(&done.latency)
            .map_err(|e| DemoError::call("merging latencies", e))?;
    }
    placement.elapsed = started.elapsed();
    Ok(placement)
}

/// What the workers share.
struct Shared {
    rt: Runtime,
    workload: Workload,
    first: u64,
    /// The next order (relative to `first`) to place.
    next: AtomicU64,
    observer: Arc<dyn Observer>,
}

/// What one worker did.
struct Done {
    acked: Vec<(String, Status)>,
    failed: Vec<(String, String)>,
    retries: u64,
    restocks: (u64, u64),
    latency: Histogram<u64>,
}

fn new_histogram() -> Result<Histogram<u64>, DemoError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| DemoError::call("creating a latency histogram", e))
}

/// Places orders until there are none left.
async fn work(shared: Arc<Shared>, worker: u64, latency: Histogram<u64>) -> Done {
    let w = &shared.workload;
    let mut rng = SmallRng::seed_from_u64(w.seed.wrapping_mul(1_000_003).wrapping_add(worker));
    let mut done = Done {
        acked: Vec::new(),
        failed: Vec::new(),
        retries: 0,
        restocks: (0, 0),
        latency,
    };
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= w.orders {
            return done;
        }
        let id = order_id(shared.first + n);
        let customer = customer_id(rng.random_range(0..w.customers));
        let lines = random_lines(&mut rng, w);
        let started = Instant::now();
        let mut tries = 1;
        let placed = loop {
            let result = shared
                .rt
                .get::<Order>(&id)
                .place(customer.clone(), lines.clone(), w.policy)
                .await;
            match result {
                Err(e) if retryable(&e) && tries < MAX_TRIES => {
                    done.retries += 1;
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                    tries += 1;
                }
                other => break other,
            }
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        done.latency
            .saturating_record(micros.clamp(1, MAX_LATENCY_US));
        match placed {
            Ok(status) => {
                shared.observer.placed(&id, status);
                done.acked.push((id, status));
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(order = id, %error, "order not placed");
                shared.observer.failed(&id, &error);
                done.failed.push((id, error));
            }
        }
        if w.restock_every > 0 && (n + 1).is_multiple_of(w.restock_every) {
            let sku = sku_id(popular(&mut rng, w.skus));
            match shared
                .rt
                .get::<InventoryItem>(&sku)
                .restock(w.restock_qty)
                .await
            {
                Ok(_) => {
                    done.restocks.0 += 1;
                    done.restocks.1 += u64::from(w.restock_qty);
                }
                Err(e) => tracing::warn!(sku, %e, "restock failed"),
            }
        }
    }
}

/// Errors after which placing the same order again may succeed.
fn retryable(e: &CallError<PlaceError>) -> bool {
    matches!(
        e,
        CallError::Overloaded(_)
            | CallError::Timeout(_)
            | CallError::Handler(PlaceError::Unavailable(_))
    )
}

/// An item number, low numbers more likely (a quadratic skew).
fn popular(rng: &mut SmallRng, skus: u32) -> u32 {
    let u: f64 = rng.random();
    ((u * u * f64::from(skus)) as u32).min(skus - 1)
}

/// 1 to `max_lines` lines of distinct popular items, 1 to `max_qty` units each.
fn random_lines(rng: &mut SmallRng, w: &Workload) -> Vec<Line> {
    let count = rng.random_range(1..=w.max_lines.min(w.skus));
    let mut lines: Vec<Line> = Vec::with_capacity(count as usize);
    while lines.len() < count as usize {
        let sku = sku_id(popular(rng, w.skus));
        if lines.iter().all(|l| l.sku != sku) {
            let qty = rng.random_range(1..=w.max_qty);
            lines.push(Line { sku, qty });
        }
    }
    lines
}

/// How the wait for pending work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Time spent waiting.
    pub waited: Duration,
    /// Orders still backordered when the wait ended.
    pub backordered: usize,
    /// Holds still in place when the wait ended.
    pub holds: usize,
    /// Whether the outbox was empty when the wait ended.
    pub outbox_empty: bool,
}

impl Drained {
    /// Nothing was pending any more.
    pub fn is_complete(&self) -> bool {
        self.backordered == 0 && self.holds == 0 && self.outbox_empty
    }
}

/// Waits (at most `bound`) until none of `orders` is backordered any more, no item in
/// `skus` holds stock, and the outbox is empty: backordered orders ship on restocks or reach
/// their deadline, holds of lost orders expire.
pub async fn drain(
    rt: &Runtime,
    orders: Vec<String>,
    skus: &[String],
    bound: Duration,
) -> Result<Drained, DemoError> {
    wait_until_drained(rt, orders, Some(skus), Instant::now(), bound).await
}

/// Like [`drain`], for every order and item stored (a store this process did not fill:
/// after a crash, or for `order-demo audit`), paging through their keys: it holds the ids of
/// the orders still backordered, never one entry per stored or claimed key.
pub async fn drain_store(rt: &Runtime, bound: Duration) -> Result<Drained, DemoError> {
    let started = Instant::now();
    let mut backordered = Vec::new();
    let mut pages = Pages::<Order>::new(rt);
    while let Some(ids) = pages.next_page().await? {
        let statuses = read_statuses(rt, &ids).await?;
        backordered.extend(
            ids.into_iter()
                .zip(statuses)
                .filter(|(_, s)| *s == Some(Status::Backordered))
                .map(|(id, _)| id),
        );
    }
    wait_until_drained(rt, backordered, None, started, bound).await
}

/// The loop of [`drain`] and [`drain_store`]: `skus` `None` means every stored item.
async fn wait_until_drained(
    rt: &Runtime,
    mut orders: Vec<String>,
    skus: Option<&[String]>,
    started: Instant,
    bound: Duration,
) -> Result<Drained, DemoError> {
    loop {
        let left = bound.saturating_sub(started.elapsed());
        let outbox_empty = settle(rt, left).await;
        let statuses = read_statuses(rt, &orders).await?;
        orders = orders
            .into_iter()
            .zip(statuses)
            .filter(|(_, s)| *s == Some(Status::Backordered))
            .map(|(id, _)| id)
            .collect();
        let holds = match skus {
            Some(skus) => count_holds(rt, skus).await?,
            None => {
                let mut holds = 0;
                let mut pages = Pages::<InventoryItem>::new(rt);
                while let Some(skus) = pages.next_page().await? {
                    holds += count_holds(rt, &skus).await?;
                }
                holds
            }
        };
        let drained = Drained {
            waited: started.elapsed(),
            backordered: orders.len(),
            holds,
            outbox_empty,
        };
        if drained.is_complete() || started.elapsed() >= bound {
            return Ok(drained);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_statuses(rt: &Runtime, orders: &[String]) -> Result<Vec<Option<Status>>, DemoError> {
    read_all(orders, |id| {
        let h = rt.get::<Order>(id);
        async move { h.status().await }
    })
    .await
    .map_err(|e| DemoError::call("reading order statuses", e))
}

/// Holds over the items `skus`.
async fn count_holds(rt: &Runtime, skus: &[String]) -> Result<usize, DemoError> {
    let levels = read_all(skus, |sku| {
        let h = rt.get::<InventoryItem>(sku);
        async move { h.level().await }
    })
    .await
    .map_err(|e| DemoError::call("reading item levels", e))?;
    Ok(levels.iter().map(|l| l.holds.len()).sum())
}
