//! `order-demo serve`: the demo's actors behind the Gears HTTP ingress, the live page at `/`,
//! and (optionally) a simulation that keeps placing orders so the page moves.
//!
//! Besides the ingress' routes (`POST /order/{id}/place`, `GET /inventory_item/{sku}/events`,
//! ...), the demo adds:
//! - `GET /`: the live page (a static HTML file compiled in, no build step).
//! - `GET /demo/snapshot`: the current [`Snapshot`](crate::serve::Snapshot) as JSON.
//! - `GET /demo/live`: server-sent events, one `snapshot` event per tick.
//!
//! With a token that guards every route (`TokenScope::All`: the default off loopback), the
//! ingress guards these too: they need `Authorization: Bearer <token>`, or
//! `?access_token=<token>` (RFC 6750 section 2.3, which the ingress takes on a `GET`), since
//! a browser cannot send a header when it opens a page or an `EventSource`. The page takes the token from its own address once, keeps it for the tab,
//! drops it from the address bar, and passes it to its event stream.
//!
//! Why an aggregate stream: a browser keeps at most six HTTP/1.1 connections per host, so
//! it cannot hold one event stream per SKU open, and orders publish no events (their status
//! is read). So a sampler task reads every SKU's level, follows the orders it knows of, and
//! watches every SKU's `BackInStock` events (with `Runtime::watch`, the same stream the
//! ingress serves at `/inventory_item/{sku}/events`); it publishes one snapshot per tick
//! to every page. It shows the catalog's first [`MAX_LIVE_SKUS`] items at most, whatever
//! count the catalog claims. Orders counted are those stored when the server started
//! (paged through, holding only the backordered ones, at most [`MAX_TRACKED`]) and those
//! the simulation places since; an order placed over HTTP while it runs is not counted.

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

use crate::acks::AckLog;
use crate::catalog::{CATALOG, Catalog};
use crate::error::DemoError;
use crate::inventory::InventoryItem;
use crate::order::{Order, Status};
use crate::simulation::{Observer, Workload, place_orders, seed};
use crate::store::{FAN_OUT, Pages};

/// The live page.
const LIVE_PAGE: &str = include_str!("../static/live.html");
/// Restock events kept in a snapshot.
const RECENT_EVENTS: usize = 12;
/// Most items a snapshot shows (and the sampler reads and watches): the catalog's first.
pub const MAX_LIVE_SKUS: usize = 256;
/// Most backordered orders the sampler follows; past it, more are counted as backordered
/// until the server restarts.
pub const MAX_TRACKED: usize = 100_000;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The ingress' settings (address, limits). Set the token in [`token`](Self::token),
    /// not here: the demo's own routes need it too.
    pub http: HttpConfig,
    /// The bearer token: set on the ingress, and required by the page's routes when it
    /// guards every route (see the module docs).
    pub token: Option<String>,
    /// Place orders in the background; `None`: only what arrives over HTTP.
    pub simulation: Option<Simulation>,
    /// How often the live page is updated.
    pub tick: Duration,
    /// Where the simulation records the orders it got acknowledged (see [`crate::acks`]).
    pub acks: Option<Arc<AckLog>>,
}

impl ServeOptions {
    /// On a free loopback port, without the simulation, sampling every 50 ms: the ingress
    /// and the live page only, as tests and embedders start it.
    pub fn loopback() -> Self {
        ServeOptions {
            http: HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
            simulation: None,
            tick: Duration::from_millis(50),
            ..ServeOptions::default()
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            http: HttpConfig::default(),
            token: None,
            simulation: Some(Simulation::default()),
            tick: Duration::from_millis(500),
            acks: None,
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
    let mut http = options.http;
    if let Some(token) = &options.token {
        http = http.bearer_token(token.clone());
    }
    let (stop, stopped) = watch::channel(false);
    let (snapshots, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let (counted_tx, counted) = watch::channel(false);
    let tally = Arc::new(Tally::default());
    let mut tasks = vec![tokio::spawn(sample(
        rt.clone(),
        options.tick,
        tally.clone(),
        snapshots,
        counted_tx,
        stopped.clone(),
    ))];
    if let Some(simulation) = options.simulation {
        tasks.push(tokio::spawn(simulate(
            rt.clone(),
            simulation,
            tally,
            options.acks,
            counted,
            stopped.clone(),
        )));
    }
    let page = Router::new()
        .route("/", get(|| async { Html(LIVE_PAGE) }))
        .route("/demo/snapshot", get(current_snapshot))
        .route("/demo/live", get(live_stream))
        .with_state(Page { snapshot, stopped });
    let server = gears::http::serve_with(rt.clone(), http, page)
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
    /// Backordered orders followed, by id (at most [`MAX_TRACKED`]).
    open: BTreeMap<String, Status>,
    /// Backordered orders past [`MAX_TRACKED`]: counted, not followed.
    untracked: u64,
    shipping: u64,
    cancelled: u64,
    failed: u64,
}

impl TallyState {
    fn record(&mut self, order: &str, status: Status) {
        match status {
            Status::Backordered if self.open.len() < MAX_TRACKED => {
                self.open.insert(order.to_string(), status);
            }
            Status::Backordered => self.untracked += 1,
            Status::Shipping => self.shipping += 1,
            Status::Cancelled => self.cancelled += 1,
        }
    }

    fn counts(&self) -> OrderTally {
        let backordered = self.open.len() as u64 + self.untracked;
        OrderTally {
            placed: self.shipping + self.cancelled + backordered,
            shipping: self.shipping,
            backordered,
            cancelled: self.cancelled,
            failed: self.failed,
        }
    }
}

/// The simulation hears of each order placed: counts it, and records its acknowledgement.
struct TallyObserver {
    tally: Arc<Tally>,
    acks: Option<Arc<AckLog>>,
}

impl Observer for TallyObserver {
    fn placed(&self, order: &str, status: Status) {
        if let Some(acks) = &self.acks
            && let Err(e) = acks.record(order, status)
        {
            tracing::warn!(%e, "cannot record an acknowledgement");
        }
        self.tally.lock().record(order, status);
    }

    fn failed(&self, _order: &str, _error: &str) {
        self.tally.lock().failed += 1;
    }
}

/// Places orders at `rate` per second, in small batches, until stopped; starts once the
/// sampler counted the orders stored before (so none is counted twice).
async fn simulate(
    rt: Runtime,
    simulation: Simulation,
    tally: Arc<Tally>,
    acks: Option<Arc<AckLog>>,
    mut counted: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = counted.wait_for(|counted| *counted) => {}
        () = stopped(stop.clone()) => return,
    }
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
    let observer: Arc<dyn Observer> = Arc::new(TallyObserver { tally, acks });
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopped(stop.clone()) => return,
        }
        workload.seed = workload.seed.wrapping_add(1);
        // A batch in flight when the server stops is finished, not dropped: its orders are
        // answered (and acknowledged) rather than left holding stock until holds expire.
        let placed = place_orders(&rt, &workload, observer.clone()).await;
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

/// Publishes a snapshot every `tick` until stopped. First counts the orders stored before
/// (then says so on `counted`).
async fn sample(
    rt: Runtime,
    tick: Duration,
    tally: Arc<Tally>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    counted: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched = 0usize;
    let mut restocks = futures::stream::SelectAll::new();
    let mut recent: VecDeque<RestockEvent> = VecDeque::new();
    let mut last: Option<(Instant, gears::Stats, u64)> = None;
    let mut seq = 0;
    tokio::select! {
        earlier = count_stored_orders(&rt, &tally) => {
            if let Err(e) = earlier {
                tracing::warn!(%e, "cannot read the statuses of earlier orders");
            }
        }
        () = stopped(stop.clone()) => return,
    }
    let _ = counted.send(true);
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
        // The catalog's count is a claim (an old store may say 4 billion): cap it.
        let shown = usize::try_from(contents.skus).map_or(MAX_LIVE_SKUS, |n| n.min(MAX_LIVE_SKUS));
        let skus: Vec<String> = (0..shown)
            .map(|n| crate::catalog::sku_id(n as u32))
            .collect();
        // Watch the SKUs that appeared since the last tick.
        while watched < shown {
            match rt.watch::<InventoryItem>(&skus[watched]) {
                Ok(events) => restocks.push(events),
                Err(e) => tracing::warn!(%e, "cannot watch an item"),
            }
            watched += 1;
        }
        if let Err(e) = follow_open_orders(&rt, &tally).await {
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

/// Re-reads the backordered orders followed: a restock ships them, a deadline cancels them.
async fn follow_open_orders(rt: &Runtime, tally: &Tally) -> Result<(), DemoError> {
    let open: Vec<String> = tally.lock().open.keys().cloned().collect();
    let open = statuses(rt, open).await?;
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
    Ok(())
}

/// Counts every order stored, a page at a time.
async fn count_stored_orders(rt: &Runtime, tally: &Tally) -> Result<(), DemoError> {
    let mut pages = Pages::<Order>::new(rt);
    while let Some(ids) = pages.next_page().await? {
        let read = statuses(rt, ids).await?;
        let mut state = tally.lock();
        for (id, status) in read {
            if let Some(status) = status {
                state.record(&id, status);
            }
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
