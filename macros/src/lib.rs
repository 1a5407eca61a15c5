//! Procedural macros of Gears: `#[derive(Actor)]`, `#[derive(StateVersion)]` and
//! `#[handlers]`.
//!
//! Use them through the `gears` crate (`use gears::prelude::*`); generated code refers to
//! the runtime only through `::gears::__private`. Each macro parses, validates (collecting
//! every error, each pointing at the user's token), then expands.

use proc_macro::TokenStream;

mod actor;
mod handlers;

/// Marks a struct as the durable state of a virtual actor type.
///
/// The struct must be `Default + Serialize + DeserializeOwned`. Declares `<Type>Handle`,
/// `<Type>Mail` and `<Type>Message`, which the type's `#[handlers]` block fills in. Options, in
/// `#[actor(...)]`:
/// - `name = "inventory_item"`: the stable storage name (default: the type's name);
/// - `events = EventType`: what its handlers publish;
/// - `version = N` (default 1): the version of the state's shape, stored with every record;
/// - `previous = OlderType`: the state's previous version (a type with
///   `#[derive(StateVersion)]`, or an actor type), with `impl From<OlderType> for ThisType`:
///   a record of an older version is read through the chain of `From`s and written back in
///   this version with the actor's next write.
#[proc_macro_derive(Actor, attributes(actor))]
pub fn derive_actor(input: TokenStream) -> TokenStream {
    actor::expand(input.into()).into()
}

/// Marks a struct as an older version of an actor's state, kept so that stored records of
/// that version can be read: `#[state(version = 2, previous = OrderV1)]` (`previous` if an
/// even older version is kept too, with `impl From<OrderV1> for OrderV2`).
#[proc_macro_derive(StateVersion, attributes(state))]
pub fn derive_state_version(input: TokenStream) -> TokenStream {
    actor::expand_state_version(input.into()).into()
}

/// Turns the `async fn` methods of an `impl` block into actor handlers.
///
/// `&self` handlers are read-only; `&mut self` handlers are exclusive and their new state is
/// committed before the reply (rolled back if they return `Err`). An optional
/// `ctx: &Context` parameter may follow the receiver. Gives `<Type>Handle` one async method
/// per handler and `<Type>Message` one serializable variant per handler (both declared by
/// `#[derive(Actor)]`). A type has one `#[handlers]` block: a second is a compile error
/// (conflicting implementations of `Handlers`) at the second.
///
/// Options of a handler, in `#[handler(...)]` on its method:
/// - `internal`: a step for other actors, sends and timers (a saga's commit or
///   compensation): it is called from Rust as any other, but the HTTP ingress answers it
///   `404 unknown_handler` and does not list it.
/// - `name = "..."`: the handler's stable name (default: the method's). Stored sends and
///   timers, subscriptions and HTTP paths name a handler by it, so renaming the method while
///   keeping the name leaves stored messages valid.
/// - `commit_errors`, on a handler returning `Result<T, E>`: its `Err` is committed like an
///   `Ok` (the state it changed, its sends, timers and events) and reaches the caller as
///   `CallError::Handler(E)` once that is durable, instead of rolling the turn back: for a
///   handler that must record a failure and still answer it.
#[proc_macro_attribute]
pub fn handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    handlers::expand(attr.into(), item.into()).into()
}
