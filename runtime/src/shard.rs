//! The runtime's long-lived services, as ractor actors (the only module that names ractor).
//!
//! Activations are not ractor actors (an idle ractor actor costs ≈ 7.5 KiB; a Gears
//! activation holds no task while idle). ractor runs what is long-lived and worth
//! supervising: today the housekeeper, which passivates idle activations on a timer.

use std::sync::Weak;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::runtime::Shared;

/// Messages of the housekeeper.
pub(crate) enum HousekeeperMsg {
    /// Passivate activations idle longer than their type's timeout.
    Sweep,
}

struct HousekeeperActor;

struct HousekeeperState {
    shared: Weak<Shared>,
}

impl Actor for HousekeeperActor {
    type Msg = HousekeeperMsg;
    type State = HousekeeperState;
    type Arguments = (Weak<Shared>, Duration);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, every): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(every, || HousekeeperMsg::Sweep);
        Ok(HousekeeperState { shared })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HousekeeperMsg::Sweep => match state.shared.upgrade() {
                Some(shared) => {
                    let passivated = shared.sweep();
                    if passivated > 0 {
                        tracing::debug!(passivated, "passivated idle activations");
                    }
                }
                // The runtime is gone.
                None => myself.stop(None),
            },
        }
        Ok(())
    }
}

/// A running housekeeper.
pub(crate) struct Housekeeper {
    actor: ActorRef<HousekeeperMsg>,
    handle: tokio::task::JoinHandle<()>,
}

impl Housekeeper {
    pub(crate) async fn start(shared: Weak<Shared>, every: Duration) -> Result<Self, String> {
        let (actor, handle) = Actor::spawn(None, HousekeeperActor, (shared, every))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Housekeeper { actor, handle })
    }

    pub(crate) async fn stop(self) {
        self.actor.stop(None);
        let _ = self.handle.await;
    }
}
