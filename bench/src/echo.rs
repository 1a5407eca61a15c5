//! In-memory round trip baselines: a bare ractor actor answering a call, a tokio task
//! answering over an mpsc channel with a oneshot reply, and a task spawned per call.

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

use crate::BenchResult;

/// The message of the ractor baseline: read the value.
pub(crate) enum EchoMsg {
    /// Replies with the actor's value.
    Get(RpcReplyPort<u64>),
}

/// A ractor actor holding a counter it never changes: the same work as `Counter::get`.
struct EchoActor;

impl ractor::Actor for EchoActor {
    type Msg = EchoMsg;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        value: u64,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(value)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EchoMsg::Get(reply) => {
                // The caller may have given up; nothing to do then.
                let _ = reply.send(*state);
            }
        }
        Ok(())
    }
}

/// A running ractor baseline actor.
pub(crate) struct RactorEcho {
    actor: ActorRef<EchoMsg>,
    handle: tokio::task::JoinHandle<()>,
}

impl RactorEcho {
    /// Spawns the actor.
    pub(crate) async fn spawn() -> BenchResult<Self> {
        let (actor, handle) = ractor::Actor::spawn(None, EchoActor, 0).await?;
        Ok(RactorEcho { actor, handle })
    }

    /// A reference to call it with.
    pub(crate) fn actor(&self) -> ActorRef<EchoMsg> {
        self.actor.clone()
    }

    /// Stops the actor and waits for it.
    pub(crate) async fn stop(self) -> BenchResult<()> {
        self.actor.stop(None);
        self.handle.await?;
        Ok(())
    }
}

/// One ractor call round trip.
pub(crate) async fn ractor_call(actor: &ActorRef<EchoMsg>) -> BenchResult<u64> {
    Ok(ractor::call!(actor, EchoMsg::Get)?)
}

/// A tokio task that answers every request with its value.
pub(crate) fn spawn_tokio_echo() -> mpsc::Sender<oneshot::Sender<u64>> {
    let (tx, mut rx) = mpsc::channel::<oneshot::Sender<u64>>(1024);
    tokio::spawn(async move {
        let value = 0;
        while let Some(reply) = rx.recv().await {
            let _ = reply.send(value);
        }
    });
    tx
}

/// A round trip through a task spawned for the call, replying over a oneshot: what a call
/// costs when the callee has no task of its own while idle.
pub(crate) async fn spawned_call(value: u64) -> BenchResult<u64> {
    let (reply, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = reply.send(value);
    });
    Ok(rx.await?)
}

/// One mpsc + oneshot round trip to the task of [`spawn_tokio_echo`].
pub(crate) async fn tokio_call(tx: &mpsc::Sender<oneshot::Sender<u64>>) -> BenchResult<u64> {
    let (reply, rx) = oneshot::channel();
    tx.send(reply)
        .await
        .map_err(|_| "the echo task stopped".to_string())?;
    Ok(rx.await?)
}
