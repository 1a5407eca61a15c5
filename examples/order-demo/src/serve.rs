//! `order-demo serve`: the demo's actors behind the Gears HTTP ingress, the live page at `/`,
//! and (optionally) a simulation that keeps placing orders so the page moves.
//!
//! Besides the ingress' routes (`POST /order/{id}/place`, `GET /inventory_item/{sku}/events`,
//! ...), the demo adds:
//! - `GET /`: the live page (a static HTML file compiled in, no build step).
//! - `GET /demo/snapshot`: the current [`Snapshot`](crate::serve::Snapshot) as JSON.
//! - `GET /demo/live`: server-sent events, one `snapshot` event per tick.
//!
//! Why an aggregate stream: a browser keeps at most six HTTP/1.1 connections per host, so
//! it cannot hold one event stream per SKU open, and orders publish no events (their status
//! is read). So a sampler task reads every SKU's level, follows the orders it knows of, and
//! watches every SKU's `BackInStock` events (with `Runtime::watch`, the same stream the
//! ingress serves at `/inventory_item/{sku}/events`); it publishes one snapshot per tick
//! to every page. Orders counted are the catalog's: those the simulation (or `run`)
//! placed; an order placed by hand over HTTP with an id of your own is not listed there.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use gears::http::{HttpConfig, Server};
use gears::{Runtime, Watched};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{CATALOG, Catalog};
use crate::error::DemoError;
use crate::inventory::InventoryItem;
use crate::order::{Order, Status};
use crate::simulation::{Observer, Workload, place_orders, seed};
use crate::store::FAN_OUT;

/// The live page.
const LIVE_PAGE: &str = include_str!("../static/live.html");
/// Restock events kept in a snapshot.
const RECENT_EVENTS: usize = 12;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The ingress' settings (address, token, limits).
    pub http: HttpConfig,
    /// Place orders in the background; `None`: only what arrives over HTTP.
    pub simulation: Option<Simulation>,
    /// How often the live page is updated.
    pub tick: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            http: HttpConfig::default(),
            simulation: Some(Simulation::default()),
            tick: Duration::from_millis(500),
        }
    }
}

/// The background simulation of `serve`: the shop of [`Workload`], orders placed at a
/// steady rate instead of all at once, forever.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The shop and its orders (`orders` is ignored: it runs until stopped). Restocks come
    /// every `restock_every` orders, as in a run.
    pub workload: Workload,
    /// Orders placed per second.
    pub rate: u32,
}

impl Default for Simulation {
    fn default() -> Self {
        Simulation {
            workload: Workload {
                skus: 24,
                customers: 200,
                concurrency: 4,
                initial_stock: 60,
                restock_every: 8,
                restock_qty: 12,
                ..Workload::default()
            },
            rate: 20,
        }
    }
}

/// What the live page shows, once per tick.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Snapshots published so far (this one included).
    pub seq: u64,
    /// Every SKU of the catalog, in order.
    pub skus: Vec<SkuLevel>,
    /// Orders by status.
    pub orders: OrderTally,
    /// The runtime's counters.
    pub runtime: RuntimeView,
    /// Rates over the last tick.
    pub rates: Rates,
    /// The latest `BackInStock` events, newest first.
    pub events: Vec<RestockEvent>,
}

/// One SKU's stock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SkuLevel {
    /// The SKU.
    pub sku: String,
    /// Units free to reserve.
    pub available: i64,
    /// Units held for orders.
    pub reserved: i64,
    /// Units shipped.
    pub shipped: i64,
}

/// Orders by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrderTally {
    /// Acknowledged orders (the sum of the three statuses).
    pub placed: u64,
    /// `Shipping`.
    pub shipping: u64,
    /// `Backordered`, still waiting.
    pub backordered: u64,
    /// `Cancelled`.
    pub cancelled: u64,
    /// Orders the simulation could not place (after retries).
    pub failed: u64,
}

/// The runtime's counters the page shows.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RuntimeView {
    /// Activations in memory.
    pub live_activations: u64,
    /// Handler turns run.
    pub turns: u64,
    /// Commit batches written.
    pub commit_batches: u64,
    /// Keys written.
    pub writes: u64,
    /// Events published.
    pub events: u64,
    /// Outbox messages not yet processed.
    pub outbox_backlog: u64,
}

/// Per-second rates over the last tick.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    /// Handler turns per second.
    pub turns_per_s: f64,
    /// Orders acknowledged per second.
    pub orders_per_s: f64,
    /// Commit batches per second.
    pub commits_per_s: f64,
}

/// A `BackInStock` event as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RestockEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The SKU.
    pub sku: String,
    /// Units available after it.
    pub available: i64,
}

/// A running `serve`: the ingress, the sampler and the simulation.
#[derive(Debug)]
pub struct Live {
    server: Server,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Live {
    /// The address the ingress listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the simulation, the sampler and the ingress. The runtime keeps running.
    pub async fn stop(self) -> Result<(), DemoError> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await
                .map_err(|e| DemoError::call("stopping the live view", e))?;
        }
        self.server.shutdown().await.map_err(|error| DemoError::Io {
            doing: "stopping the HTTP server".into(),
            error,
        })
    }
}

/// Seeds the shop (if simulating), starts the sampler and the simulation, and serves the
/// ingress with the live page on `options.http`'s address.
pub async fn start(rt: &Runtime, options: ServeOptions) -> Result<Live, DemoError> {
    if let Some(simulation) = &options.simulation {
        if simulation.rate == 0 {
            return Err(DemoError::Refused(
                "the order rate must be at least 1".into(),
            ));
        }
        seed(rt, &simulation.workload).await?;
    }
    // Orders placed before this process are read once; later ones are the simulation's.
    let existing = rt
        .get::<Catalog>(CATALOG)
        .contents()
        .await
        .map_err(|e| DemoError::call("reading the catalog", e))?
        .orders;
    let (stop, stopped) = watch::channel(false);
    let (snapshots, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let tally = Arc::new(Tally::default());
    let mut tasks = vec![tokio::spawn(sample(
        rt.clone(),
        existing,
        options.tick,
        tally.clone(),
        snapshots,
        stopped.clone(),
    ))];
    if let Some(simulation) = options.simulation {
        tasks.push(tokio::spawn(simulate(
            rt.clone(),
            simulation,
            tally,
            stopped.clone(),
        )));
    }
    let page = Router::new()
        .route("/", get(|| async { Html(LIVE_PAGE) }))
        .route("/demo/snapshot", get(current_snapshot))
        .route("/demo/live", get(live_stream))
        .with_state(Page { snapshot, stopped });
    let server = gears::http::serve_with(rt.clone(), options.http, page)
        .await
        .map_err(|error| DemoError::Io {
            doing: "starting the HTTP server".into(),
            error,
        })?;
    Ok(Live {
        server,
        stop,
        tasks,
    })
}

/// What the page's routes share.
#[derive(Clone)]
struct Page {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    stopped: watch::Receiver<bool>,
}

async fn current_snapshot(axum::extract::State(page): axum::extract::State<Page>) -> Response {
    let snapshot = page.snapshot.borrow().clone();
    axum::Json(&*snapshot).into_response()
}

async fn live_stream(axum::extract::State(page): axum::extract::State<Page>) -> Response {
    let snapshots = tokio_stream::wrappers::WatchStream::new(page.snapshot);
    let stream = snapshots
        .filter(|s| std::future::ready(s.seq > 0))
        .map(|s| {
            let data = serde_json::to_string(&*s).unwrap_or_else(|_| "{}".into());
            Ok::<_, std::convert::Infallible>(Event::default().event("snapshot").data(data))
        })
        .take_until(stopped(page.stopped));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Orders the sampler follows: the final ones counted, the backordered ones re-read.
#[derive(Default)]
struct Tally(std::sync::Mutex<TallyState>);

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        // Counters only: a panic elsewhere while holding the lock leaves them usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
struct TallyState {
    /// Orders seen placed, by id: the latest status read.
    open: BTreeMap<String, Status>,
    shipping: u64,
    cancelled: u64,
    failed: u64,
}

impl TallyState {
    fn record(&mut self, order: &str, status: Status) {
        match status {
            Status::Backordered => {
                self.open.insert(order.to_string(), status);
            }
            Status::Shipping => self.shipping += 1,
            Status::Cancelled => self.cancelled += 1,
        }
    }

    fn counts(&self) -> OrderTally {
        let backordered = self.open.len() as u64;
        OrderTally {
            placed: self.shipping + self.cancelled + backordered,
            shipping: self.shipping,
            backordered,
            cancelled: self.cancelled,
            failed: self.failed,
        }
    }
}

/// The simulation hears of each order placed.
struct TallyObserver(Arc<Tally>);

impl Observer for TallyObserver {
    fn placed(&self, order: &str, status: Status) {
        self.0.lock().record(order, status);
    }

    fn failed(&self, _order: &str, _error: &str) {
        self.0.lock().failed += 1;
    }
}

/// Places orders at `rate` per second, in small batches, until stopped.
async fn simulate(
    rt: Runtime,
    simulation: Simulation,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) {
    // Batches of about a tenth of a second of orders. `place_orders` counts restocks within
    // its batch, so with batches this small the restocks are done here, across batches.
    let batch = u64::from(simulation.rate.div_ceil(10)).max(1);
    let period = Duration::from_secs_f64(batch as f64 / f64::from(simulation.rate));
    let mut workload = simulation.workload;
    let restock_every = workload.restock_every;
    workload.orders = batch;
    workload.restock_every = 0;
    let mut rng = SmallRng::seed_from_u64(workload.seed);
    let mut placed_total = 0u64;
    let observer: Arc<dyn Observer> = Arc::new(TallyObserver(tally));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        ticker.tick().await;
        workload.seed = workload.seed.wrapping_add(1);
        let placed = tokio::select! {
            placed = place_orders(&rt, &workload, observer.clone()) => placed,
            () = stopped(stop.clone()) => return,
        };
        if let Err(e) = placed {
            tracing::warn!(%e, "simulated orders failed; the simulation goes on");
        }
        let before = placed_total;
        placed_total += batch;
        if restock_every == 0 {
            continue;
        }
        for _ in before / restock_every..placed_total / restock_every {
            // Popular (low-numbered) items sell most, so they are restocked most.
            let u: f64 = rng.random();
            let n =
                ((u * u * f64::from(workload.skus)) as u32).min(workload.skus.saturating_sub(1));
            let sku = crate::catalog::sku_id(n);
            let restocked = rt
                .get::<InventoryItem>(&sku)
                .restock(workload.restock_qty)
                .await;
            if let Err(e) = restocked {
                tracing::warn!(sku, %e, "restock failed");
            }
        }
    }
}

/// Publishes a snapshot every `tick` until stopped.
async fn sample(
    rt: Runtime,
    existing: u64,
    tick: Duration,
    tally: Arc<Tally>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched = 0u32;
    let mut restocks = futures::stream::SelectAll::new();
    let mut recent: VecDeque<RestockEvent> = VecDeque::new();
    let mut last: Option<(Instant, gears::Stats, u64)> = None;
    let mut seq = 0;
    let earlier: Vec<String> = (0..existing).map(crate::catalog::order_id).collect();
    if let Err(e) = scan(&rt, &tally, earlier).await {
        tracing::warn!(%e, "cannot read the statuses of earlier orders");
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(event) = restocks.next(), if watched > 0 => {
                if let Watched::Event(crate::inventory::BackInStock { sku, available }) = event {
                    recent.push_front(RestockEvent { at_ms: now_ms(), sku, available });
                    recent.truncate(RECENT_EVENTS);
                }
                continue;
            }
            () = stopped(stop.clone()) => return,
        }
        let contents = match rt.get::<Catalog>(CATALOG).contents().await {
            Ok(contents) => contents,
            Err(e) => {
                tracing::warn!(%e, "cannot read the catalog; snapshot skipped");
                continue;
            }
        };
        let skus = contents.sku_ids();
        // Watch the SKUs that appeared since the last tick.
        while watched < contents.skus {
            match rt.watch::<InventoryItem>(crate::catalog::sku_id(watched)) {
                Ok(events) => restocks.push(events),
                Err(e) => tracing::warn!(%e, "cannot watch an item"),
            }
            watched += 1;
        }
        if let Err(e) = scan(&rt, &tally, Vec::new()).await {
            tracing::warn!(%e, "cannot read order statuses");
        }
        let skus = match levels(&rt, skus).await {
            Ok(skus) => skus,
            Err(e) => {
                tracing::warn!(%e, "cannot read item levels; snapshot skipped");
                continue;
            }
        };
        let orders = tally.lock().counts();
        let stats = rt.stats();
        let now = Instant::now();
        let rates = match last {
            Some((then, before, placed)) => {
                let secs = now.duration_since(then).as_secs_f64().max(1e-3);
                let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                Rates {
                    turns_per_s: per_s(stats.turns, before.turns),
                    orders_per_s: per_s(orders.placed + orders.failed, placed),
                    commits_per_s: per_s(stats.commit_batches, before.commit_batches),
                }
            }
            None => Rates::default(),
        };
        last = Some((now, stats, orders.placed + orders.failed));
        seq += 1;
        let snapshot = Snapshot {
            at_ms: now_ms(),
            seq,
            skus,
            orders,
            runtime: RuntimeView {
                live_activations: stats.live_activations,
                turns: stats.turns,
                commit_batches: stats.commit_batches,
                writes: stats.writes,
                events: stats.events,
                outbox_backlog: stats.outbox_backlog,
            },
            rates,
            events: recent.iter().cloned().collect(),
        };
        snapshots.send_replace(Arc::new(snapshot));
    }
}

/// Re-reads the backordered orders (a restock ships them, a deadline cancels them), and
/// counts the `earlier` ones (placed before this process).
async fn scan(rt: &Runtime, tally: &Tally, earlier: Vec<String>) -> Result<(), DemoError> {
    let open: Vec<String> = tally.lock().open.keys().cloned().collect();
    let open = statuses(rt, open).await?;
    let earlier = statuses(rt, earlier).await?;
    let mut state = tally.lock();
    for (id, status) in open {
        if status != Some(Status::Backordered) && state.open.remove(&id).is_some() {
            match status {
                Some(Status::Shipping) => state.shipping += 1,
                Some(Status::Cancelled) => state.cancelled += 1,
                _ => {}
            }
        }
    }
    for (id, status) in earlier {
        if let Some(status) = status {
            state.record(&id, status);
        }
    }
    Ok(())
}

/// The status of each order in `ids`, [`FAN_OUT`] reads at a time.
async fn statuses(
    rt: &Runtime,
    ids: Vec<String>,
) -> Result<Vec<(String, Option<Status>)>, DemoError> {
    futures::stream::iter(ids)
        .map(|id| {
            let order = rt.get::<Order>(&id);
            async move { order.status().await.map(|status| (id, status)) }
        })
        .buffered(FAN_OUT)
        .try_collect()
        .await
        .map_err(|e| DemoError::call("reading order statuses", e))
}

/// The level of each SKU in `skus`, [`FAN_OUT`] reads at a time.
async fn levels(rt: &Runtime, skus: Vec<String>) -> Result<Vec<SkuLevel>, DemoError> {
    futures::stream::iter(skus)
        .map(|sku| {
            let item = rt.get::<InventoryItem>(&sku);
            async move {
                item.level().await.map(|l| SkuLevel {
                    sku: l.sku,
                    available: l.available,
                    reserved: l.reserved,
                    shipped: l.shipped,
                })
            }
        })
        .buffered(FAN_OUT)
        .try_collect()
        .await
        .map_err(|e| DemoError::call("reading item levels", e))
}
