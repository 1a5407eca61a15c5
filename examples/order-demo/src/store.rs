//! The demo's store: opening a runtime with every actor registered, wiping a store, waiting
//! for the outbox to drain, reading many actors at once, and paging through the keys of a
//! type (how the audit and the live page visit what is stored, whatever counts the catalog
//! claims).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use gears::{Builder, Durability, Handlers, Runtime};

use crate::catalog::Catalog;
use crate::customer::Customer;
use crate::error::DemoError;
use crate::inventory::InventoryItem;
use crate::order::Order;

/// Calls in flight at once when the demo reads or seeds many actors.
pub const FAN_OUT: usize = 64;
/// Keys per page when the demo walks every stored key of a type.
pub const PAGE: usize = 1024;

/// How the demo's runtime is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Idle time after which an order is passivated (orders are many and short-lived).
    pub order_idle: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Sync,
            order_idle: Duration::from_secs(2),
        }
    }
}

/// The default store folder: `gears-order-demo` under the system temp dir.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("gears-order-demo")
}

/// Opens (or creates) the store at `dir` with the demo's actors registered.
pub async fn open(dir: &Path, options: StoreOptions) -> Result<Runtime, DemoError> {
    let rt = register(Runtime::builder().path(dir), &options)
        .open()
        .await?;
    Ok(rt)
}

/// Opens (or creates) the store at `dir` as a node of the cluster `cluster` (NATS
/// JetStream): the store is this node's copy of the shards it serves, and calls to the others
/// go to the nodes that serve them.
#[cfg(feature = "cluster")]
pub async fn open_node(
    dir: &Path,
    options: StoreOptions,
    cluster: gears::cluster::ClusterConfig,
) -> Result<Runtime, DemoError> {
    let rt = register(Runtime::builder().path(dir), &options)
        .cluster(cluster)
        .open()
        .await?;
    Ok(rt)
}

/// Registers the demo's actors on `builder`, configured by `options` (what [`open`] does;
/// tests pass it to `gears::testing::TestRuntime::new`).
pub fn register(builder: Builder, options: &StoreOptions) -> Builder {
    builder
        .durability(options.durability)
        .idle_timeout_for::<Order>(options.order_idle)
        .register::<InventoryItem>()
        .register::<Order>()
        .register::<Customer>()
        .register::<Catalog>()
}

/// Whether `dir` holds a store (a fjall database), as opposed to missing or other files.
pub fn is_store(dir: &Path) -> bool {
    dir.join("version").is_file() && dir.join("keyspaces").is_dir()
}

/// Deletes the store at `dir`. Refuses a folder that holds anything but a store, so a
/// mistyped `--data` cannot wipe unrelated files.
pub fn wipe(dir: &Path) -> Result<(), DemoError> {
    let io = |doing: String| move |error| DemoError::Io { doing, error };
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("reading {}", dir.display()))(e)),
    };
    if entries.next().is_some() && !is_store(dir) {
        return Err(DemoError::Refused(format!(
            "{} is not empty and holds no Gears store; not wiping it",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).map_err(io(format!("wiping {}", dir.display())))
}

/// Waits until every outbox message has been processed, at most `bound`. Returns whether
/// the outbox drained.
pub async fn settle(rt: &Runtime, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if rt.stats().outbox_backlog == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `read` on every id, [`FAN_OUT`] at a time; results in the order of `ids`.
pub async fn read_all<'a, I, T, E, F, Fut>(ids: &'a [I], read: F) -> Result<Vec<T>, E>
where
    F: FnMut(&'a I) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    futures::stream::iter(ids)
        .map(read)
        .buffered(FAN_OUT)
        .try_collect()
        .await
}

/// The stored keys of actor type `A`, a page of at most [`PAGE`] at a time, in storage order
/// (see [`Runtime::keys`]): memory stays bounded by a page however many keys are stored.
pub struct Pages<A> {
    rt: Runtime,
    after: Option<String>,
    done: bool,
    _actor: std::marker::PhantomData<fn() -> A>,
}

impl<A: Handlers> Pages<A> {
    /// Starts before the first stored key of `A`.
    pub fn new(rt: &Runtime) -> Pages<A> {
        Pages {
            rt: rt.clone(),
            after: None,
            done: false,
            _actor: std::marker::PhantomData,
        }
    }

    /// The next page; `None` once every key was listed.
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>, DemoError> {
        if self.done {
            return Ok(None);
        }
        let keys = self
            .rt
            .keys::<A>(self.after.as_deref(), PAGE)
            .await
            .map_err(|e| DemoError::call(format!("listing the stored keys of {}", A::NAME), e))?;
        self.done = keys.len() < PAGE;
        self.after = keys.last().cloned();
        Ok((!keys.is_empty()).then_some(keys))
    }
}
