//! [`Context`]: what a handler can reach besides its own state.

use std::sync::Arc;

use crate::actor::Handlers;
use crate::handle::Caller;
use crate::runtime::Shared;

/// One link of a call chain: the actor whose turn made the call, and who called it.
pub(crate) struct ChainLink {
    pub(crate) actor: &'static str,
    pub(crate) key: Arc<str>,
    pub(crate) parent: Chain,
}

/// The actors waiting on a call, innermost first; `None` for calls from outside any actor.
pub(crate) type Chain = Option<Arc<ChainLink>>;

/// Finds `(actor, key)` in a chain, and renders the chain for the error message.
pub(crate) fn find_cycle(chain: &Chain, actor: &str, key: &str) -> Option<String> {
    let links = || std::iter::successors(chain.as_deref(), |l| l.parent.as_deref());
    if !links().any(|l| l.actor == actor && &*l.key == key) {
        return None;
    }
    let mut path: Vec<String> = links()
        .map(|l| format!("{}({:?})", l.actor, &*l.key))
        .collect();
    path.reverse();
    path.push(format!("{actor}({key:?})"));
    Some(path.join(" → "))
}

/// Given to handlers that ask for it (`ctx: &Context` right after the receiver): the actor's
/// key, and handles to other actors that carry this call's chain (so cycles are detected).
pub struct Context {
    shared: Arc<Shared>,
    actor: &'static str,
    key: Arc<str>,
    caller: Chain,
}

impl Context {
    pub(crate) fn new(
        shared: Arc<Shared>,
        actor: &'static str,
        key: Arc<str>,
        caller: Chain,
    ) -> Self {
        Context {
            shared,
            actor,
            key,
            caller,
        }
    }

    /// The key of the actor running this turn.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The storage name of the actor type running this turn.
    pub fn actor_name(&self) -> &'static str {
        self.actor
    }

    /// A typed handle to another actor (or another key of the same type). Calls made through
    /// it carry this turn's call chain: calling back into an actor that is waiting on this
    /// turn fails at once with `CallError::Cycle` instead of deadlocking.
    pub fn get<B: Handlers>(&self, key: impl AsRef<str>) -> B::Handle {
        let link = Arc::new(ChainLink {
            actor: self.actor,
            key: self.key.clone(),
            parent: self.caller.clone(),
        });
        B::__handle(Caller::new(&self.shared, key.as_ref(), Some(link)))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("actor", &self.actor)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
