//! Procedural macros of Gears: `#[derive(Actor)]` and `#[handlers]`.
//!
//! Use them through the `gears` crate (`use gears::prelude::*`); generated code refers to
//! the runtime only through `::gears::__private`. Each macro parses, validates (collecting
//! every error, each pointing at the user's token), then expands.

use proc_macro::TokenStream;

mod actor;
mod handlers;

/// Marks a struct as the durable state of a virtual actor type.
///
/// The struct must be `Default + Serialize + DeserializeOwned`. Options:
/// `#[actor(name = "inventory_item")]` sets the stable storage name (default: the type's
/// name).
#[proc_macro_derive(Actor, attributes(actor))]
pub fn derive_actor(input: TokenStream) -> TokenStream {
    actor::expand(input.into()).into()
}

/// Turns the `async fn` methods of an `impl` block into actor handlers.
///
/// `&self` handlers are read-only; `&mut self` handlers are exclusive and their new state is
/// committed before the reply (rolled back if they return `Err`). An optional
/// `ctx: &Context` parameter may follow the receiver. Generates `<Type>Handle` (one async
/// method per handler) and `<Type>Message` (one serializable variant per handler).
///
/// A handler marked `#[handler(internal)]` is a step for other actors, sends and timers
/// (a saga's commit or compensation): it is called from Rust as any other, but the HTTP
/// ingress answers it `404 unknown_handler` and does not list it.
#[proc_macro_attribute]
pub fn handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    handlers::expand(attr.into(), item.into()).into()
}
