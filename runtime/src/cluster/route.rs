//! Calls between nodes over NATS request/reply: a node listens on the subject
//! `gears.<cluster>.call.<shard>` of every shard it serves (from when it is caught up and
//! granted until it gives it up), so a call sent there reaches the shard's lease holder, or
//! nobody ("no responders": the shard is moving). Committed events are published on
//! `gears.<cluster>.events.<shard>.<actor type>` for watchers on other nodes. What a call
//! carries and how it runs is `wire.rs`'s and `remote.rs`'s; this is only the transport.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use async_nats::{Client, RequestErrorKind};

use super::ClusterConfig;
use crate::placement::{Forward, Hop};

/// Runs an encoded routed call on this node and answers its encoded reply, at most the given
/// number of bytes (the most NATS carries: a larger answer is a refusal the caller can read).
pub(crate) type Serve =
    Arc<dyn Fn(bytes::Bytes, usize) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// The queue group every node listens in: one listener gets each call (there is one, but for
/// the moment a shard moves, when its old holder may still listen and answers `NotOwner`).
const GROUP: &str = "gears";

/// Sends calls to the shards others serve, and listens for calls to the shards this node
/// serves.
pub(crate) struct Router {
    client: Client,
    /// `gears.<cluster>.call`
    prefix: String,
    /// `gears.<cluster>.events`: `.<shard>.<actor type>` carries its committed events.
    events: String,
    node: String,
    attempt: Duration,
    serve: Serve,
    tokio: tokio::runtime::Handle,
    /// The listener of every shard this node serves.
    listening: Mutex<HashMap<u16, tokio::task::JoinHandle<()>>>,
}

impl Router {
    pub(crate) fn new(client: Client, config: &ClusterConfig, serve: Serve) -> Router {
        Router {
            client,
            prefix: format!("gears.{}.call", config.name),
            events: format!("gears.{}.events", config.name),
            node: config.node.to_string(),
            // A node that died with a call: retried once its shards moved, about a lease later.
            attempt: config.lease_ttl / 4,
            serve,
            tokio: tokio::runtime::Handle::current(),
            listening: Mutex::new(HashMap::new()),
        }
    }

    fn subject(&self, shard: u16) -> String {
        format!("{}.{shard:03}", self.prefix)
    }

    /// This node now serves `shard` (`true`) or no longer does: starts or stops listening.
    pub(crate) fn shard_event(&self, shard: u16, taken: bool) {
        let mut listening = self.listening.lock();
        if let Some(old) = listening.remove(&shard) {
            // Dropping its subscription unsubscribes.
            old.abort();
        }
        if taken {
            let listener = listen(self.client.clone(), self.subject(shard), self.serve.clone());
            listening.insert(shard, self.tokio.spawn(listener));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for (_, listener) in self.listening.lock().drain() {
            listener.abort();
        }
    }
}

/// Answers the calls sent to one shard's subject until aborted.
async fn listen(client: Client, subject: String, serve: Serve) {
    let mut backoff = Duration::from_millis(10);
    let mut calls = loop {
        match client
            .queue_subscribe(subject.clone(), GROUP.to_string())
            .await
        {
            Ok(calls) => break calls,
            Err(e) => {
                tracing::warn!(subject, error = %e, "cannot listen for routed calls; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    };
    while let Some(call) = calls.next().await {
        let Some(reply) = call.reply else { continue };
        let (client, serve) = (client.clone(), serve.clone());
        // Each call runs in a task of its own, as a local one runs in its caller's: the
        // runtime's admission bounds how many are in flight.
        tokio::spawn(async move {
            let answer = serve(call.payload, client.server_info().max_payload).await;
            if let Err(e) = client.publish(reply, answer.into()).await {
                tracing::debug!(error = %e, "cannot answer a routed call");
            }
        });
    }
}

impl Forward for Router {
    fn request(
        &self,
        shard: u16,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, Hop>> {
        let client = self.client.clone();
        let subject = self.subject(shard);
        Box::pin(async move {
            let request = async_nats::Request::new()
                .payload(payload.into())
                .timeout(Some(timeout));
            match client.send_request(subject, request).await {
                Ok(answer) => Ok(answer.payload.to_vec()),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::NoResponders => Hop::NoResponders,
                    RequestErrorKind::TimedOut => Hop::TimedOut,
                    RequestErrorKind::MaxPayloadExceeded => Hop::Refused(format!(
                        "the call is more than NATS carries ({} bytes)",
                        client.server_info().max_payload
                    )),
                    _ => Hop::Failed(e.to_string()),
                }),
            }
        })
    }

    fn attempt_timeout(&self) -> Duration {
        self.attempt
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn publish_events(&self, shard: u16, actor: &str, payload: Vec<u8>) {
        let client = self.client.clone();
        let subject = format!("{}.{shard:03}.{actor}", self.events);
        self.tokio.spawn(async move {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::debug!(error = %e, "cannot publish events for other nodes");
            }
        });
    }

    fn events(
        &self,
        shard: u16,
        actor: &str,
    ) -> BoxFuture<'static, Result<futures::stream::BoxStream<'static, Vec<u8>>, String>> {
        let client = self.client.clone();
        let subject = format!("{}.{shard:03}.{actor}", self.events);
        Box::pin(async move {
            let published = client.subscribe(subject).await.map_err(|e| e.to_string())?;
            Ok(published.map(|m| m.payload.to_vec()).boxed())
        })
    }
}
