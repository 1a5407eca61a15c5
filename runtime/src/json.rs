//! The JSON face of every registered actor type, by name: what the HTTP ingress calls.
//!
//! `#[handlers]` generates, whatever the features, a format-neutral decoder of a handler's
//! named arguments ([`Handlers::__named_message`]) and a hand-off of its result to a
//! [`ReplyEncoder`]; this module drives both with serde_json. A handler whose result is not
//! `Serialize` compiles all the same and is answered here as [`JsonError::NotExposed`]
//! without running. State, events, timers, keys and deletion need only the `Actor` bounds.
//! Every value leaves through [`AnyKeys`], so maps keyed by numbers, tuples or structs are
//! JSON too.

use std::any::Any;
use std::sync::Arc;

use std::marker::PhantomData;

mod any_keys;
use any_keys::AnyKeys;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use xxhash_rust::xxh3::xxh3_64;

use crate::actor::{Deliver, Handlers, ReplyEncoder};
use crate::context::TimerInfo;
use crate::error::{CallError, Failure};
use crate::handle::{Caller, OutsideSend};
use crate::mailbox::{Answer, Body, KeyedCall, KeyedOutcome, ReplyFormat};
use crate::runtime::Runtime;
use crate::watch::Watched;

pub(crate) use crate::actor::HandlerInfo;

/// Builds the message of `handler` of `A` from a JSON object of its arguments (an empty
/// body is `{}`). The error names the offending field.
fn json_message<A: Handlers>(handler: &str, body: &[u8]) -> Result<A::Message, String> {
    let body = arguments(body);
    // serde would also take an array as positional fields: arguments are named.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("the body must be a JSON object of the handler's arguments".into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let message = A::__named_message(
        handler,
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    )
    .map_err(|inner| {
        let path = track.path().to_string();
        if path == "." {
            inner.to_string()
        } else {
            format!("`{path}`: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(message)
}

/// Encodes the value `handler` of `A` returned (`T`, or `Result<T, E>`) as JSON: `T`'s JSON
/// (flag `true`), or `{"error": <variant or type name>, "detail": <E>}` (flag `false`). What
/// an idempotent call stores with its turn, and what every call answers.
pub(crate) fn json_reply<A: Handlers>(
    handler: &str,
    value: &(dyn Any + Send),
) -> Result<(bool, Vec<u8>), String> {
    A::__encode_reply(handler, value, JsonReplyEncoder)?
}

/// [`ReplyEncoder`] into JSON.
struct JsonReplyEncoder;

impl ReplyEncoder for JsonReplyEncoder {
    type Output = Result<(bool, Vec<u8>), String>;

    fn value<T: serde::Serialize>(self, value: &T) -> Self::Output {
        Ok((
            true,
            serde_json::to_vec(&AnyKeys(value)).map_err(|e| e.to_string())?,
        ))
    }

    /// The enum variant's name (else the type's) and the error's JSON.
    fn error<E: serde::Serialize>(self, error: &E) -> Self::Output {
        let name = serde_variant::to_variant_name(error).unwrap_or_else(|_| {
            let full = std::any::type_name::<E>();
            let base = full.split('<').next().unwrap_or(full);
            base.rsplit("::").next().unwrap_or(base)
        });
        let detail = serde_json::to_value(AnyKeys(error)).map_err(|e| e.to_string())?;
        let body = serde_json::json!({ "error": name, "detail": detail });
        Ok((false, serde_json::to_vec(&body).map_err(|e| e.to_string())?))
    }

    fn unserializable(self, type_name: &'static str) -> Self::Output {
        Err(format!(
            "`{type_name}` is not `Serialize`: it cannot be sent as JSON"
        ))
    }
}

/// The outcome of a JSON call that reached its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonReply {
    /// `false`: the handler returned `Err` (the turn was rolled back).
    pub(crate) ok: bool,
    /// The JSON of the handler's value, or of its error.
    pub(crate) body: Vec<u8>,
    /// For an error: its name (the enum variant, else the type's name).
    pub(crate) error: Option<String>,
    /// Answered from the stored result of an earlier request with the same idempotency key.
    pub(crate) replayed: bool,
}

/// Why a JSON request did not reach a handler, or failed in the runtime.
#[derive(Debug, Clone)]
pub(crate) enum JsonError {
    /// No handler of that name; the valid ones.
    UnknownHandler {
        actor: &'static str,
        handler: String,
        valid: Vec<&'static str>,
    },
    /// The handler exists but its result (or error) is not `Serialize`, so it cannot answer
    /// as JSON: refused before it runs, nothing changed.
    NotExposed {
        actor: &'static str,
        handler: &'static str,
    },
    /// The body is not the handler's arguments: the message names the field.
    BadRequest(String),
    /// The idempotency key was used before for a different request.
    IdempotencyConflict(String),
    /// A runtime failure (timeout, overloaded, key, storage, ...).
    Call(CallError),
}

/// One item of a JSON watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonEvent {
    /// An event's JSON.
    Event(Vec<u8>),
    /// This many events were skipped (a slow reader).
    Lagged(u64),
}

/// One registered actor type, type-erased for the ingress.
pub(crate) trait JsonActor: Send + Sync {
    /// The type's storage name.
    fn name(&self) -> &'static str;
    /// Its handlers callable over JSON (not `#[handler(internal)]`), in declaration order.
    fn handlers(&self) -> Vec<&'static HandlerInfo>;
    /// Adds the JSON Schemas of its state and its public handlers to `sink`.
    fn schemas(&self, sink: &mut crate::schema::SchemaSink);
    /// Runs `handler` of `key` with the JSON object `body` (empty body = no arguments). With
    /// an idempotency key, the first result (success or handler error) is stored with the
    /// turn; a retry with the same key and request is answered from it without running the
    /// handler; with a different request it is `IdempotencyConflict`.
    fn call(
        &self,
        rt: &Runtime,
        key: &str,
        handler: &str,
        body: &[u8],
        idempotency: Option<&str>,
    ) -> BoxFuture<'static, Result<JsonReply, JsonError>>;
    /// Queues `handler(body)` durably (the outbox); resolves once durable. The idempotency
    /// key deduplicates per actor (like `Runtime::send_idempotent`).
    fn send(
        &self,
        rt: &Runtime,
        key: &str,
        handler: &str,
        body: &[u8],
        idempotency: Option<&str>,
    ) -> BoxFuture<'static, Result<(), JsonError>>;
    /// The actor's state as JSON (a read-only turn: after its pending writes are durable).
    fn state(&self, rt: &Runtime, key: &str) -> BoxFuture<'static, Result<Vec<u8>, JsonError>>;
    /// The actor's committed events as JSON.
    fn watch(&self, rt: &Runtime, key: &str) -> Result<BoxStream<'static, JsonEvent>, JsonError>;
    /// Up to `limit` keys with stored state, in storage order, after the key `after`.
    fn keys(
        &self,
        rt: &Runtime,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<String>, JsonError>>;
    /// Deletes the actor: state, timers, subscriptions.
    fn delete(&self, rt: &Runtime, key: &str) -> BoxFuture<'static, Result<(), JsonError>>;
    /// The actor's pending timers, earliest first.
    fn timers(
        &self,
        rt: &Runtime,
        key: &str,
    ) -> BoxFuture<'static, Result<Vec<TimerInfo>, JsonError>>;
}

/// The JSON face of actor type `A`.
pub(crate) struct JsonFace<A>(PhantomData<fn() -> A>);

impl<A> JsonFace<A> {
    pub(crate) fn new() -> Self {
        JsonFace(PhantomData)
    }
}

impl<A: Handlers> JsonFace<A> {
    /// The public handler `handler`: internal ones are not reachable over JSON.
    fn handler(&self, handler: &str) -> Result<&'static HandlerInfo, JsonError> {
        public_handlers::<A>()
            .find(|h| h.name == handler)
            .ok_or_else(|| JsonError::UnknownHandler {
                actor: A::NAME,
                handler: handler.to_string(),
                valid: public_handlers::<A>().map(|h| h.name).collect(),
            })
    }

    fn message(&self, handler: &str, body: &[u8]) -> Result<(&'static str, A::Message), JsonError> {
        let info = self.handler(handler)?;
        let message = json_message::<A>(info.name, body).map_err(JsonError::BadRequest)?;
        Ok((info.name, message))
    }
}

/// The handlers of `A` callable over JSON (not `#[handler(internal)]`).
fn public_handlers<A: Handlers>() -> impl Iterator<Item = &'static HandlerInfo> {
    A::__handler_infos().iter().filter(|h| !h.internal)
}

/// Splits a stored or fresh JSON result into the reply the ingress sends.
fn reply(ok: bool, body: Vec<u8>, replayed: bool) -> Result<JsonReply, JsonError> {
    if ok {
        return Ok(JsonReply {
            ok,
            body,
            error: None,
            replayed,
        });
    }
    #[derive(serde::Deserialize)]
    struct HandlerError {
        error: String,
        detail: serde_json::Value,
    }
    let e: HandlerError = serde_json::from_slice(&body)
        .map_err(|e| JsonError::Call(CallError::Invalid(format!("bad stored error: {e}"))))?;
    let detail = serde_json::to_vec(&e.detail)
        .map_err(|e| JsonError::Call(CallError::Invalid(e.to_string())))?;
    Ok(JsonReply {
        ok,
        body: detail,
        error: Some(e.error),
        replayed,
    })
}

/// A handler's arguments as sent: an empty body is no arguments, `{}`. (A blank one is not
/// JSON, and is refused as any other body that is not an object.)
fn arguments(body: &[u8]) -> &[u8] {
    if body.is_empty() { b"{}" } else { body }
}

/// What identifies a request for its idempotency key: the handler's name and its arguments
/// as canonical JSON (keys sorted, no whitespace), so a retry matches whatever the client's
/// formatting and across deployments that add or reorder handlers.
fn request_hash(handler: &str, body: &[u8]) -> u64 {
    let body = arguments(body);
    let arguments = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
        .unwrap_or_else(|| body.to_vec());
    let mut bytes = Vec::with_capacity(handler.len() + 1 + arguments.len());
    bytes.extend_from_slice(handler.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&arguments);
    xxh3_64(&bytes)
}

fn json_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, JsonError> {
    serde_json::to_vec(&AnyKeys(value))
        .map_err(|e| JsonError::Call(CallError::Invalid(format!("cannot encode as JSON: {e}"))))
}

impl<A: Handlers> JsonActor for JsonFace<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn handlers(&self) -> Vec<&'static HandlerInfo> {
        public_handlers::<A>().collect()
    }

    fn schemas(&self, sink: &mut crate::schema::SchemaSink) {
        A::__schemas(sink);
    }

    fn call(
        &self,
        rt: &Runtime,
        key: &str,
        handler: &str,
        body: &[u8],
        idempotency: Option<&str>,
    ) -> BoxFuture<'static, Result<JsonReply, JsonError>> {
        let prepared = self.message(handler, body).and_then(|(handler, message)| {
            if A::__serializable_reply(handler) {
                Ok((handler, message))
            } else {
                Err(JsonError::NotExposed {
                    actor: A::NAME,
                    handler,
                })
            }
        });
        let caller = Caller::<A>::new(&rt.shared, key, None);
        let idempotency = idempotency.map(str::to_string);
        let request = request_hash(handler, body);
        Box::pin(async move {
            let (handler, message) = prepared?;
            let Some(key) = idempotency else {
                let value = caller.call(message).await.map_err(call_error)?;
                let (ok, body) = json_reply::<A>(handler, &*value)
                    .map_err(|e| JsonError::Call(CallError::Invalid(e)))?;
                return reply(ok, body, false);
            };
            validate_idempotency_key(&key)?;
            let body = Body::Keyed(Box::new(KeyedCall {
                message,
                key: key.clone(),
                request,
                format: ReplyFormat::Json,
                answer: Answer::Encoded,
            }));
            let value = caller.request(body, handler).await.map_err(call_error)?;
            match value.downcast::<KeyedOutcome>().map(|o| *o) {
                Ok(KeyedOutcome::Fresh { ok, body }) => reply(ok, body, false),
                Ok(KeyedOutcome::Replayed { ok, body }) => reply(ok, body, true),
                Ok(KeyedOutcome::Conflict) => Err(JsonError::IdempotencyConflict(format!(
                    "the idempotency key {key:?} was used for a different request to this actor"
                ))),
                Err(_) => Err(JsonError::Call(CallError::Invalid(
                    "unexpected reply to an idempotent call".into(),
                ))),
            }
        })
    }

    fn send(
        &self,
        rt: &Runtime,
        key: &str,
        handler: &str,
        body: &[u8],
        idempotency: Option<&str>,
    ) -> BoxFuture<'static, Result<(), JsonError>> {
        let prepared = self.message(handler, body);
        let checked = idempotency.map_or(Ok(()), validate_idempotency_key);
        let outside =
            OutsideSend::<A>::new(&rt.shared, key.to_string(), idempotency.map(str::to_string));
        Box::pin(async move {
            checked?;
            let (_, message) = prepared?;
            outside.deliver(message).await.map_err(JsonError::Call)
        })
    }

    fn state(&self, rt: &Runtime, key: &str) -> BoxFuture<'static, Result<Vec<u8>, JsonError>> {
        let rt = rt.clone();
        let key = key.to_string();
        Box::pin(async move {
            let encoded = rt
                .read::<A, _>(key, |state| serde_json::to_vec(&AnyKeys(state)))
                .await
                .map_err(JsonError::Call)?;
            encoded.map_err(|e| {
                JsonError::Call(CallError::Invalid(format!(
                    "cannot encode the state as JSON: {e}"
                )))
            })
        })
    }

    fn watch(&self, rt: &Runtime, key: &str) -> Result<BoxStream<'static, JsonEvent>, JsonError> {
        let watch = rt.watch::<A>(key).map_err(JsonError::Call)?;
        Ok(Box::pin(watch.map(|item| match item {
            Watched::Event(event) => JsonEvent::Event(json_bytes(&event).unwrap_or_else(|_| {
                br#"{"error":"unencodable","message":"the event cannot be encoded as JSON"}"#
                    .to_vec()
            })),
            Watched::Lagged(n) => JsonEvent::Lagged(n),
        })))
    }

    fn keys(
        &self,
        rt: &Runtime,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<String>, JsonError>> {
        let rt = rt.clone();
        let after = after.map(str::to_string);
        Box::pin(async move {
            rt.keys::<A>(after.as_deref(), limit)
                .await
                .map_err(JsonError::Call)
        })
    }

    fn delete(&self, rt: &Runtime, key: &str) -> BoxFuture<'static, Result<(), JsonError>> {
        let rt = rt.clone();
        let key = key.to_string();
        Box::pin(async move { rt.delete::<A>(key).await.map_err(JsonError::Call) })
    }

    fn timers(
        &self,
        rt: &Runtime,
        key: &str,
    ) -> BoxFuture<'static, Result<Vec<TimerInfo>, JsonError>> {
        let rt = rt.clone();
        let key = key.to_string();
        Box::pin(async move { rt.timers::<A>(key).await.map_err(JsonError::Call) })
    }
}

fn call_error(failure: Failure) -> JsonError {
    JsonError::Call(CallError::from_failure(failure))
}

fn validate_idempotency_key(key: &str) -> Result<(), JsonError> {
    crate::codec::validate_idempotency_key(key).map_err(JsonError::BadRequest)
}

impl Runtime {
    /// The JSON face of the registered type named `name`.
    pub(crate) fn json_actor(&self, name: &str) -> Option<Arc<dyn JsonActor>> {
        self.shared
            .by_name(name)?
            .json
            .as_ref()?
            .downcast_ref::<Arc<dyn JsonActor>>()
            .cloned()
    }

    /// The names of all registered types, sorted.
    pub(crate) fn json_actor_names(&self) -> Vec<&'static str> {
        self.shared.names()
    }
}
