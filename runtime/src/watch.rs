//! [`Watch`]: an in-process stream of one actor's committed events.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// One item of a [`Watch`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched<E> {
    /// An event of a committed (durable) turn, in publication order.
    Event(E),
    /// The watcher fell behind by more than the buffer holds: this many events were skipped.
    Lagged(u64),
}

/// A stream of an actor's committed events, from [`Runtime::watch`](crate::Runtime::watch).
/// Bounded: reading slowly never slows the actor (see [`Watched::Lagged`]). Dropping it ends
/// the watch.
pub struct Watch<E> {
    inner: BroadcastStream<E>,
}

impl<E: Clone + Send + 'static> Watch<E> {
    pub(crate) fn new(rx: broadcast::Receiver<E>) -> Self {
        Watch {
            inner: BroadcastStream::new(rx),
        }
    }
}

impl<E: Clone + Send + 'static> Stream for Watch<E> {
    type Item = Watched<E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(event) => Watched::Event(event),
                Err(BroadcastStreamRecvError::Lagged(n)) => Watched::Lagged(n),
            })
        })
    }
}

impl<E> std::fmt::Debug for Watch<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}
