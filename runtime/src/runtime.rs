//! [`Runtime`]: typed handles, sends from outside, reads, watching, statistics and shutdown.
//! Opening one is [`Builder`](crate::Builder)'s.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::actor::Handlers;
use crate::codec::ActorMeta;
use crate::context::{TimerInfo, timer_infos};
use crate::directory::Registry;
use crate::error::{CallError, Error, Failure};
use crate::handle::{Caller, OutsideSend};
use crate::mailbox::Body;
use crate::metrics::Stats;
use crate::shard::Host;
use crate::shared::Shared;
use crate::watch::Watch;

mod parked;

/// An embedded Gears runtime: a store, the activations living on it, and their services.
///
/// Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

/// What only shutdown needs: the threads and services to stop.
pub(crate) struct Lifecycle {
    pub(crate) committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) host: Mutex<Option<Host>>,
    /// This node's cluster membership (feature `cluster`): left at shutdown, dropped (its
    /// leases lapse) at a crash.
    #[cfg(feature = "cluster")]
    pub(crate) node: Mutex<Option<Arc<crate::cluster::Node>>>,
}

impl Runtime {
    /// A typed handle to the actor of type `A` with this key. The actor always exists: the
    /// first call activates it. An invalid key or unregistered type is reported by its calls.
    pub fn get<A: Handlers>(&self, key: impl AsRef<str>) -> A::Handle {
        A::__handle(Caller::new(&self.shared, key.as_ref(), None))
    }

    /// Sends a message to `A(key)` durably, fire-and-forget: `rt.send::<Order>("o-1")
    /// .ship(lines).await?` returns once the message is in the outbox (durable); it is then
    /// delivered and processed exactly once, also across restarts.
    pub fn send<A: Handlers>(&self, key: impl Into<String>) -> A::Mail<OutsideSend<A>> {
        A::__mail(OutsideSend::new(&self.shared, key.into(), None))
    }

    /// Like [`send`](Self::send), with a caller-chosen idempotency key (1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`](crate::MAX_IDEMPOTENCY_KEY_LEN) bytes): a second send with
    /// the same key to the same actor is not processed again, as long as it arrives within
    /// [`Builder::idempotency_retention`] (default 24 hours) of the first one's processing.
    pub fn send_idempotent<A: Handlers>(
        &self,
        key: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> A::Mail<OutsideSend<A>> {
        let idempotency = Some(idempotency_key.into());
        A::__mail(OutsideSend::new(&self.shared, key.into(), idempotency))
    }

    /// A stream of `A(key)`'s events from now on, each released once the turn that published
    /// it is durable. The stream buffers a bounded number of events
    /// ([`Builder::watch_capacity`]); a watcher that falls further behind never slows the
    /// actor: it skips ahead and receives [`Watched::Lagged`](crate::Watched::Lagged) with the number it missed.
    pub fn watch<A: Handlers>(&self, key: impl AsRef<str>) -> Result<Watch<A::Event>, CallError> {
        let key = key.as_ref();
        crate::codec::validate_key(key).map_err(CallError::InvalidKey)?;
        let registry = Registry::<A>::of(&self.shared).ok_or(CallError::NotRegistered(A::NAME))?;
        let watch = Watch::new(registry.watch(key, self.shared.config.watch_capacity));
        // In a cluster, the turns of the actor may run on another node: their events too.
        #[cfg(feature = "cluster")]
        if let Some(forward) = self.shared.forward.get() {
            crate::remote::follow_events::<A>(&self.shared, forward.clone(), key);
        }
        Ok(watch)
    }

    /// Reads `A(key)`'s state without running a handler: `read` runs in a turn of the actor
    /// (after the messages queued before it), and its value is returned only once every
    /// earlier write of the actor is durable. Activates the actor like any call.
    pub async fn read<A: Handlers, R: Send + 'static>(
        &self,
        key: impl AsRef<str>,
        read: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, CallError> {
        let body = Body::Read(Box::new(move |state: &A, _: &ActorMeta| {
            Box::new(read(state)) as Box<dyn std::any::Any + Send>
        }));
        self.request::<A, R>(key.as_ref(), body, "read").await
    }

    /// `A(key)`'s pending timers, earliest first.
    pub async fn timers<A: Handlers>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Vec<TimerInfo>, CallError> {
        let body = Body::Read(Box::new(|_: &A, meta: &ActorMeta| {
            Box::new(timer_infos(&meta.timers)) as Box<dyn std::any::Any + Send>
        }));
        self.request::<A, Vec<TimerInfo>>(key.as_ref(), body, "timers")
            .await
    }

    /// Deletes `A(key)` as `ctx.delete()` would in a turn: its state, timers and
    /// subscriptions; it reads as `Default` afterwards. Returns once the deletion is durable.
    pub async fn delete<A: Handlers>(&self, key: impl AsRef<str>) -> Result<(), CallError> {
        self.request::<A, ()>(key.as_ref(), Body::Delete, "delete")
            .await
    }

    /// Up to `limit` keys of type `A` with stored state, after the key `after` (exclusive),
    /// in storage order: by shard, then by key. Pass the last key of a page as `after` to
    /// get the next. Lists what is stored: an actor never written (or deleted) has no
    /// stored state and is not listed; a write still being synced may be. On a node of a
    /// cluster, each shard's keys come from the node that serves it.
    pub async fn keys<A: Handlers>(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, CallError> {
        Registry::<A>::of(&self.shared).ok_or(CallError::NotRegistered(A::NAME))?;
        let after = match after {
            Some(key) => {
                crate::codec::validate_key(key).map_err(CallError::InvalidKey)?;
                Some(crate::codec::state_key(A::NAME, key))
            }
            None => None,
        };
        // Shard by shard from `after`'s: runs of shards served here from the store, each
        // shard served elsewhere (in a cluster) from the node that serves it.
        let mut shard = after.as_deref().map_or(0, crate::codec::shard_of_key);
        let mut keys = Vec::new();
        while shard < crate::SHARDS && keys.len() < limit {
            let here =
                |s: u16| matches!(self.shared.placement.place(s), crate::Place::Local { .. });
            if here(shard) {
                let end = (shard + 1..crate::SHARDS)
                    .find(|&s| !here(s))
                    .unwrap_or(crate::SHARDS);
                let (after, left) = (after.clone(), limit - keys.len());
                let found = self
                    .shared
                    .with_store("key scan", move |store| {
                        store.state_keys(A::NAME, shard..end, after.as_deref(), left)
                    })
                    .await
                    .map_err(CallError::from_failure)?;
                keys.extend(
                    found
                        .iter()
                        .filter_map(|k| crate::codec::key_of_state_key(k, A::NAME))
                        .map(str::to_string),
                );
                shard = end;
                continue;
            }
            #[cfg(feature = "cluster")]
            if let Some(forward) = self.shared.forward.get() {
                let after = after
                    .as_deref()
                    .filter(|k| crate::codec::shard_of_key(k) == shard)
                    .and_then(|k| crate::codec::key_of_state_key(k, A::NAME));
                let found = crate::remote::keys_elsewhere::<A>(
                    &self.shared,
                    forward.clone(),
                    shard,
                    after,
                    limit - keys.len(),
                )
                .await
                .map_err(CallError::from_failure)?;
                keys.extend(found);
            }
            // Without a cluster, the keys of a shard another node serves are not listed.
            shard += 1;
        }
        Ok(keys)
    }

    /// Runs a turn of `A(key)` without a handler and types its reply.
    async fn request<A: Handlers, R: 'static>(
        &self,
        key: &str,
        body: Body<A>,
        what: &'static str,
    ) -> Result<R, CallError> {
        let reply = Caller::<A>::new(&self.shared, key, None)
            .request(body, what)
            .await;
        crate::handle::finish::<R>(reply)
    }

    /// A snapshot of the runtime's counters.
    pub fn stats(&self) -> Stats {
        let placement = &self.shared.placement;
        let served = (0..crate::SHARDS)
            .filter(|&s| matches!(placement.place(s), crate::Place::Local { .. }))
            .count();
        self.shared.metrics.snapshot(
            self.shared.live() as u64,
            self.shared.backlog.backlog() as u64,
            served as u64,
        )
    }

    /// Passivates every activation that has been idle longer than its idle timeout now,
    /// instead of at the next periodic sweep. Returns how many were passivated.
    pub fn passivate_idle(&self) -> usize {
        self.shared.sweep()
    }

    /// Lets the services deliver and fire what is due now; says whether nothing is left
    /// (no outbox entry pending anywhere, no timer due or firing) and when a timer is due
    /// next. For a test runtime's `advance`.
    pub(crate) async fn settle(&self) -> Result<crate::shared::Settled, Failure> {
        let services = self
            .shared
            .services
            .get()
            .ok_or(Failure::ShuttingDown)?
            .clone();
        let mut settled = services.settle().await?;
        // Sends staged by turns that have not committed yet are not the dispatcher's yet.
        settled.quiet &= self.shared.backlog.backlog() == 0;
        Ok(settled)
    }

    /// Stops the runtime as a crash would, for a test runtime's `crash_and_reopen`: calls
    /// are refused at once and nothing accepted is waited for (their callers get
    /// `ShuttingDown`), the outbox is not drained and the store gets no final sync. What was
    /// acknowledged is durable, as after a SIGKILL; the store is closed, so its path can be
    /// opened again when this returns.
    pub(crate) async fn crash(&self) {
        let shared = &self.shared;
        shared.admission.close_outside();
        shared.admission.close();
        #[cfg(feature = "cluster")]
        drop(self.lifecycle.node.lock().take());
        // A committer thread that panicked is what a crash leaves behind anyway.
        let _ = self.stop_services().await;
        if let Some(store) = shared.take_store() {
            let _ = tokio::task::spawn_blocking(move || drop(store)).await;
        }
    }

    /// Stops the committer (it commits what is queued, then its thread ends) and the host;
    /// `Err` if the committer thread panicked. Shutdown and crash alike.
    async fn stop_services(&self) -> Result<(), Error> {
        self.shared.committer.stop().await;
        let thread = self.lifecycle.committer_thread.lock().take();
        let mut committer_result = Ok(());
        if let Some(thread) = thread {
            committer_result = match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Error::Config("the committer thread panicked".into())),
            };
        }
        let host = self.lifecycle.host.lock().take();
        if let Some(host) = host {
            host.stop().await;
        }
        committer_result
    }

    /// Stops accepting calls, lets accepted ones finish, commits and syncs everything, and
    /// stops the runtime's services. Calls made after this fail with `ShuttingDown`.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let shared = &self.shared;
        // First outside calls stop and what was accepted drains (handlers may still call
        // other actors); then every call stops and the last of those drain.
        shared.admission.close_outside();
        shared.admission.drained().await;
        shared.admission.close();
        shared.admission.drained().await;
        // A cluster node hands its shards over while its committer still runs (each is
        // drained first), so their new owners take them at once.
        #[cfg(feature = "cluster")]
        {
            let node = self.lifecycle.node.lock().take();
            if let Some(node) = node
                && let Err(e) = node.leave().await
            {
                tracing::warn!(error = %e, "leaving the cluster failed; its leases lapse by themselves");
            }
        }
        // Every turn is over: the frontier passes every message processed, so the next
        // start reads none of them again.
        if let Some(host) = shared.services.get() {
            host.flush_frontier().await;
        }
        let committer_result = self.stop_services().await;
        // Sync, then close the store (dropping fjall joins its workers, so off the workers
        // here too); the path can be opened again as soon as this returns.
        let store = shared.take_store();
        if let Some(store) = store {
            tokio::task::spawn_blocking(move || {
                let synced = store.sync();
                drop(store);
                synced
            })
            .await
            .map_err(|e| Error::Config(format!("shutdown task failed: {e}")))??;
        }
        committer_result
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
