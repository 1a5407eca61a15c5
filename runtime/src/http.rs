//! The HTTP ingress (feature `http`, axum): call any registered actor like a serverless
//! function, read its state, watch its events, administer keys and timers, scrape metrics.
//!
//! [`serve`](crate::http::serve) binds a listener (loopback by default) and answers until
//! [`Server::shutdown`](crate::http::Server::shutdown); [`router`](crate::http::router)
//! gives the same routes as an [`axum::Router`] to embed in a server of your own.
//!
//! # Routes
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /{type}/{key}/{handler}` | runs the handler with the JSON body's fields as its arguments (an empty body: no arguments); `200` with the handler's value as JSON |
//! | `POST /{type}/{key}/{handler}/send` | queues the call durably (the outbox), fire-and-forget: `202 {"status":"queued"}` once durable |
//! | `GET /{type}/{key}` | the actor's state as JSON (a read-only turn) |
//! | `GET /{type}/{key}/events` | server-sent events: each committed event as an `event` named `event` (JSON data); a reader that fell behind gets an `event` named `lagged` with data `{"skipped": n}`; at most [`max_event_streams`](crate::http::HttpConfig::max_event_streams) streams are open at once (default 1,024), past that `503 overloaded` |
//! | `GET /admin/{type}?after=&limit=` | `{"keys": [...], "next": <key or null>}`: up to `limit` (default 100, at most 1,000) keys with stored state, in storage order, after `after`; pass `next` as `after` for the next page |
//! | `DELETE /admin/{type}/{key}` | deletes the actor (state, timers, subscriptions): `204` |
//! | `GET /admin/{type}/{key}/timers` | `{"timers": [{"name", "due_ms", "every_ms"}]}`, earliest first (`due_ms`: Unix epoch milliseconds) |
//! | `GET /admin/~dead-letters?after=&limit=` | the messages parked in this run ([`Runtime::dead_letters`](crate::Runtime::dead_letters)): `{"dead_letters": [{"id", "kind", "actor", "key", "handler", "timer", "reason", "attempts", "parked_at_ms"}], "next": <id or null>, "listed": n, "unlisted": n}`, paged as `GET /admin/{type}` is; `unlisted` counts those parked beyond the list's cap |
//! | `POST /admin/~dead-letters/{id}/retry` | delivers the parked message again with its attempts reset ([`Runtime::retry_dead_letter`](crate::Runtime::retry_dead_letter)): `202 {"status":"retrying"}` |
//! | `DELETE /admin/~dead-letters/{id}` | deletes the parked message durably, so no later start delivers it ([`Runtime::discard_dead_letter`](crate::Runtime::discard_dead_letter)): `204` |
//! | `GET /metrics` | the runtime's [`Stats`](crate::Stats) and the ingress' request counts, OpenMetrics text (Prometheus scrapes it) |
//! | `GET /health` | `200 {"status":"ok"}` |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of these routes for the registered types, generated from their handlers (see below) |
//!
//! The feature is additive: `#[handlers]` generates the same code with it on or off, and
//! asks nothing more of a handler's types than Rust calls do (arguments `Serialize +
//! Deserialize`, as sends and timers store them). A handler whose result is not `Serialize`
//! compiles everywhere and is answered over HTTP with `501 not_exposed` (see Errors), so
//! turning the feature on in one crate of a build never breaks another crate's actors.
//!
//! `GET /openapi.json` describes every route above for the registered types: per handler
//! its body (an object with a field per argument, `Option` ones optional, unknown fields
//! refused), its result, its error as the `422`'s `detail`, and its doc comment. A type's
//! JSON Schema is its [`schemars::JsonSchema`] where it implements it
//! (`#[derive(schemars::JsonSchema)]` beside `Serialize`), and "any JSON value" where not:
//! like `Serialize` for results, nothing more is asked of a handler's types.
//!
//! A first path segment `admin`, `metrics`, `health` or `openapi.json` is the ingress' own: an actor type of
//! that name cannot be reached over HTTP. `~dead-letters` cannot be an actor type's name (a
//! name is ASCII letters, digits, `_`, `-` and `.`), so the dead-letter routes never hide
//! the admin routes of a type. A dead letter id that does not parse is a `400 bad_request`,
//! one that names no parked message a `404 unknown_dead_letter`. `GET /{type}/{key}/events` is the event stream;
//! a handler named `events` is still called with `POST`.
//!
//! An `Idempotency-Key` header (1 to 255 visible ASCII characters) on a call makes it
//! run once per actor within the runtime's
//! [`idempotency_retention`](crate::Builder::idempotency_retention) (default 24 hours): the
//! first result, success or handler error, is stored atomically with the turn's state
//! change, and a retry with the same key and the same request (handler and arguments,
//! however the JSON is formatted) is answered from it, with the header
//! `Idempotency-Replayed: true`, however many other requests came in between. After the
//! retention the key runs as new. On `/send` it deduplicates the message per actor for the
//! same time (as [`Runtime::send_idempotent`] does).
//!
//! # Errors
//!
//! Every error is a JSON object `{"error": <name>, "message": <text>}`, sometimes with more
//! fields. Bad input is always a 4xx, never a 500:
//!
//! | status | `error` | when |
//! | --- | --- | --- |
//! | 400 | `bad_request` | a body that is not the handler's arguments (the message names the field), an undecodable path, a bad query or idempotency key, a body that cannot be read (malformed chunks, the client gone) |
//! | 400 | `invalid_key` | a key that is empty, longer than [`MAX_KEY_LEN`] bytes or holds control characters |
//! | 401 | `unauthorized` | a bearer token is configured and the request lacks it (header `WWW-Authenticate: Bearer`) |
//! | 404 | `unknown_actor_type` / `unknown_handler` | with `"valid": [...]`, the registered types or the type's handlers |
//! | 404 | `not_found` | no such route |
//! | 404 | `unknown_dead_letter` | no parked message has this id (never parked, or already retried or discarded) |
//! | 405 | `method_not_allowed` | with an `Allow` header |
//! | 408 | `body_timeout` | the body did not arrive whole within [`body_read_timeout`](crate::http::HttpConfig::body_read_timeout); the connection is closed |
//! | 409 | `idempotency_conflict` | the idempotency key was used for a different request to this actor |
//! | 413 | `body_too_large` | the body exceeds the limit (default 64 KiB), with `"limit"`; a `Content-Length` past it is refused before the body is read (no `100 Continue`); the connection is closed |
//! | 414 | `uri_too_long` | the path and query exceed [`MAX_URI_LEN`](crate::http::MAX_URI_LEN) bytes |
//! | 422 | the error's name (its enum variant, else its type) | the handler returned `Err`; its JSON is under `"detail"`; the turn was rolled back (committed, for a `#[handler(commit_errors)]` handler) |
//! | 422 | `invalid_turn` | the runtime refused what the handler asked (most often because of the request's input: a timer name it cannot take, a message it cannot encode); the turn was rolled back |
//! | 429 | `overloaded` | the actor's mailbox is full (per-actor admission); `Retry-After: 1` |
//! | 503 | `overloaded` / `shutting_down` | the runtime is at capacity (activation cap, outbox), the ingress has [`max_event_streams`](crate::http::HttpConfig::max_event_streams) event streams open already, or the runtime is stopping; with `Retry-After` |
//! | 504 | `timeout` | the call exceeded the runtime's call timeout |
//! | 421 | `not_owner` | this node does not own the actor's shard (scale-out) |
//! | 503 | `fenced` / `unavailable` | the actor's shard moved while the call ran (nothing was written) or has no owner right now; with `Retry-After: 1` |
//! | 500 | `handler_panicked`, `storage`, `corrupt_state`, `call_cycle`, `internal` | failures of the handler's code or of the store, never of the request |
//! | 501 | `not_exposed` | the handler exists, but its result (or, for `Result<T, E>`, its error) is not `Serialize`, so it cannot answer as JSON; refused before it runs (nothing changes), whatever the idempotency key. Its `/send` route still queues it (a send has no reply), and Rust callers call it as usual |
//!
//! Errors answered in plain text or without a body by axum's extractors (on routes you add
//! with [`serve_with`](crate::http::serve_with): a `Json` body that does not parse, a
//! `Query` that does not match, a wrong content type) or by a bare status get the same JSON
//! shape: their status, the status' reason in snake case as `error` (`unsupported_media_type`),
//! their text as `message`. An error body with a media type of its own (an HTML error page
//! of yours) is left as it is.
//!
//! Some requests are refused by hyper, the HTTP implementation, before a request exists
//! for the application to see; no server built on hyper can shape those answers. They are
//! **answered by hyper without a body, and the connection is closed**: `400` for a
//! malformed request line or header (a control character in a header value, say), and
//! `431` for a request head larger than [`MAX_HEAD_LEN`](crate::http::MAX_HEAD_LEN) (a
//! request target too long for it included; hyper's own `414`, past 65,534 bytes of
//! target, is never reached under that limit). A client too slow to send its headers gets
//! no answer at all: the connection is closed at the
//! [`header_read_timeout`](crate::http::HttpConfig::header_read_timeout).
//!
//! # Access
//!
//! Without a token ([`HttpConfig::bearer_token`](crate::http::HttpConfig::bearer_token))
//! every route is open, which is why the listener binds to loopback by default. With one,
//! requests must carry `Authorization: Bearer <token>` (the scheme in any case) on the
//! routes of the token's scope ([`HttpConfig::token_scope`](crate::http::HttpConfig::token_scope)),
//! or, on a `GET` (a page a browser opens, an `EventSource`, which cannot set headers),
//! the query parameter `access_token=<token>` (RFC 6750 section 2.3; it may end up in logs
//! and browser history, so prefer the header where a client can set one):
//!
//! | scope | guarded routes | default when |
//! | --- | --- | --- |
//! | [`TokenScope::Admin`](crate::http::TokenScope::Admin) | `/admin/...` and `/metrics`; calls, state, events and the routes you add stay open | the bound address ([`HttpConfig::bind`](crate::http::HttpConfig::bind)) is loopback |
//! | [`TokenScope::All`](crate::http::TokenScope::All) | every route but `/health`, the routes you add with [`serve_with`](crate::http::serve_with) included | the bound address is not loopback (`0.0.0.0`, a LAN address, ...) |
//!
//! A scope set with `token_scope` always wins; without one the scope follows the address
//! the configuration binds ([`HttpConfig::effective_token_scope`](crate::http::HttpConfig::effective_token_scope)),
//! also for [`router`](crate::http::router), which cannot see where it is served: set the
//! scope explicitly when you serve it yourself.
//!
//! [`serve`](crate::http::serve) refuses to start on an address that is not loopback when a
//! route would be open to the network: without a token, or with one scoped to
//! [`TokenScope::Admin`](crate::http::TokenScope::Admin). Its error says how to fix that;
//! [`HttpConfig::allow_unauthenticated`](crate::http::HttpConfig::allow_unauthenticated)
//! overrides it, for a server behind something else that authenticates.
//!
//! # Limits
//!
//! Every request and connection is bounded in size and in time; past a limit the client
//! gets an error (or, before it has sent a request, a closed connection), never a server
//! holding memory or a task for it indefinitely.
//!
//! | setting | default | past it |
//! | --- | --- | --- |
//! | [`body_limit`](crate::http::HttpConfig::body_limit) | 64 KiB | `413 body_too_large`; a larger `Content-Length` is refused before the body is read |
//! | [`body_read_timeout`](crate::http::HttpConfig::body_read_timeout) | 30 s for the whole body, from the end of the headers | `408 body_timeout`, connection closed |
//! | [`header_read_timeout`](crate::http::HttpConfig::header_read_timeout) | 10 s for the request's headers, from the connection's opening or the end of the previous response | connection closed without an answer; so a kept-alive connection idles at most this long between requests |
//! | [`idle_timeout`](crate::http::HttpConfig::idle_timeout) | 60 s without a byte moving either way | connection closed (a client that stopped reading its answer, a route of yours silent that long) |
//! | [`max_connections`](crate::http::HttpConfig::max_connections) | 4,096 connections at once | not accepted: new connections wait in the kernel's listen backlog until one closes (past the backlog, the kernel drops or refuses them) |
//! | [`MAX_URI_LEN`](crate::http::MAX_URI_LEN) | 8 KiB of path and query | `414 uri_too_long` |
//! | [`MAX_HEAD_LEN`](crate::http::MAX_HEAD_LEN) | 64 KiB of request line and headers | `431` from hyper, no body, connection closed |
//! | [`max_event_streams`](crate::http::HttpConfig::max_event_streams) | 1,024 open `/events` streams | `503 overloaded`, `Retry-After: 1` |
//! | [`keep_alive`](crate::http::HttpConfig::keep_alive) | a comment every 15 s on an idle event stream | (a closed client is noticed by then at the latest, freeing its stream) |
//!
//! Event streams (`/events`, and server-sent events of routes you add) are long-lived by
//! design: no timeout ends them while their client reads them (the body-read timeout is the
//! request's, their keep-alive comments keep them from being idle), and `max_event_streams`
//! bounds the ingress' own. The header-read and idle timeouts and the connection limit are
//! [`serve`](crate::http::serve)'s; [`router`](crate::http::router) keeps the others.
//! `/metrics` counts the connections open (`gears_http_connections_open`) and those cut by
//! a timeout (`gears_http_timed_out_total`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::codec::MAX_KEY_LEN;
use crate::context::epoch_ms;
use crate::json::{JsonActor, JsonEvent};
use crate::runtime::Runtime;

mod admission;
mod connections;
mod error;
mod metrics;
mod openapi;

use error::ApiError;

/// The header that marks an answer replayed from an earlier request's stored result.
pub const REPLAYED_HEADER: &str = "idempotency-replayed";
/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most keys one `GET /admin/{type}` page returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// Default [`HttpConfig::max_event_streams`].
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1024;
/// Longest request target (path and query) accepted, in bytes; a longer one gets
/// `414 uri_too_long`.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Largest request head (request line and headers) hyper reads, in bytes; a larger one is
/// answered `431` by hyper, without a body, and the connection closed.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Default [`HttpConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Which routes need the bearer token, when one is configured.
///
/// `TokenScope::default()` is `Admin`, but [`HttpConfig`] picks `All` for a token on a
/// non-loopback address unless told otherwise (see [`HttpConfig::token_scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenScope {
    /// The admin routes (`/admin/...`) and `/metrics`; calls, state and events stay open.
    #[default]
    Admin,
    /// Every route except `/health`.
    All,
}

/// Settings of the ingress. Start from `HttpConfig::default()` and change what you need.
#[derive(Clone)]
#[must_use = "`HttpConfig`'s setters return the changed settings (they do not change it in \
              place): pass them on to `serve` or `router`"]
pub struct HttpConfig {
    addr: SocketAddr,
    body_limit: usize,
    token: Option<Arc<str>>,
    /// `None`: not chosen, it follows the address (see `effective_token_scope`).
    token_scope: Option<TokenScope>,
    keep_alive: Duration,
    max_event_streams: usize,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    allow_unauthenticated: bool,
}

impl Default for HttpConfig {
    /// Binds `127.0.0.1:8080`, 64 KiB bodies, no token, SSE keep-alive every 15 s, at
    /// most 1,024 open event streams, headers within 10 s, bodies within 30 s, idle
    /// connections closed after 60 s, at most 4,096 connections.
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            body_limit: 64 * 1024,
            token: None,
            token_scope: None,
            keep_alive: Duration::from_secs(15),
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow_unauthenticated: false,
        }
    }
}

impl HttpConfig {
    /// The address [`serve`] listens on (default `127.0.0.1:8080`; port 0 picks a free one).
    ///
    /// Binding anything but loopback exposes the ingress to the network, so [`serve`]
    /// refuses it unless a token ([`bearer_token`](Self::bearer_token)) guards every route
    /// but `/health` there ([`TokenScope::All`], the default off loopback), or
    /// [`allow_unauthenticated`](Self::allow_unauthenticated) says to serve open routes.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The address [`serve`] will listen on.
    pub fn bind_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The largest request body accepted, in bytes (default 64 KiB); larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Requires `Authorization: Bearer <token>` (the scheme in any case) on the routes of
    /// the token's scope: by default every route but `/health` when the bound address is
    /// not loopback, the admin routes and `/metrics` when it is (see
    /// [`effective_token_scope`](Self::effective_token_scope)).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into());
        self
    }

    /// Which routes the bearer token guards. Unset, the scope follows the bound address:
    /// [`TokenScope::Admin`] on loopback, [`TokenScope::All`] on any other address. Set,
    /// it applies wherever the ingress binds; `TokenScope::Admin` on `0.0.0.0` would leave
    /// calls, state and events open to the network, which [`serve`] refuses without
    /// [`allow_unauthenticated`](Self::allow_unauthenticated).
    pub fn token_scope(mut self, scope: TokenScope) -> Self {
        self.token_scope = Some(scope);
        self
    }

    /// The scope the token guards with these settings: the one set with
    /// [`token_scope`](Self::token_scope), else [`TokenScope::Admin`] if the bound address is
    /// loopback and [`TokenScope::All`] if not. (Without a token nothing is guarded.)
    pub fn effective_token_scope(&self) -> TokenScope {
        self.token_scope.unwrap_or(if self.is_loopback() {
            TokenScope::Admin
        } else {
            TokenScope::All
        })
    }

    /// Whether the bound address is loopback (an IPv4-mapped IPv6 one included).
    fn is_loopback(&self) -> bool {
        self.addr.ip().to_canonical().is_loopback()
    }

    /// What [`serve`] refuses before it binds anything.
    fn check(&self) -> std::io::Result<()> {
        let refuse = |why: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        let open_to = match (&self.token, self.effective_token_scope()) {
            (None, _) => Some("every route"),
            (Some(_), TokenScope::Admin) => Some("calls, state and event streams"),
            (Some(_), TokenScope::All) => None,
        };
        if let Some(open) = open_to
            && !self.is_loopback()
            && !self.allow_unauthenticated
        {
            return refuse(format!(
                "refusing to serve on {} with {open} open to anyone who reaches it: set \
                 HttpConfig::bearer_token (it guards every route but /health off loopback, \
                 unless token_scope narrows it), bind a loopback address, or, behind \
                 something else that authenticates, HttpConfig::allow_unauthenticated(true)",
                self.addr
            ));
        }
        if self.max_connections == 0 {
            return refuse("HttpConfig::max_connections must be at least 1".into());
        }
        for (name, timeout) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if timeout.is_zero() {
                return refuse(format!("HttpConfig::{name} must be longer than zero"));
            }
        }
        if self.idle_timeout <= self.keep_alive {
            return refuse(format!(
                "HttpConfig::idle_timeout ({:?}) must be longer than keep_alive ({:?}), or \
                 quiet event streams would be closed as idle",
                self.idle_timeout, self.keep_alive
            ));
        }
        Ok(())
    }

    /// The most event streams (`GET /{type}/{key}/events`) open at once (default 1,024);
    /// one more is refused with `503 overloaded` and `Retry-After: 1` until one closes.
    /// Each stream holds a connection and a buffer of the runtime's `watch_capacity`
    /// events; 0 refuses every stream.
    pub fn max_event_streams(mut self, streams: usize) -> Self {
        self.max_event_streams = streams;
        self
    }

    /// How often an idle event stream sends a keep-alive comment (default 15 s). It must
    /// be shorter than [`idle_timeout`](Self::idle_timeout), or [`serve`] refuses to start:
    /// the comments are what keep a quiet stream from being idle.
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// How long a client has to send a request's headers (default 10 s), counted from
    /// when the connection starts waiting for a request: its opening, or the end of the
    /// previous response on a kept-alive connection. Past it the connection is closed
    /// without an answer (a slowloris client holds a connection no longer than this), so
    /// it is also how long a kept-alive connection may sit idle between requests.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a client has to send a request's whole body, from the end of its headers
    /// (default 30 s). Past it the request is answered `408 body_timeout` and the
    /// connection closed, whatever the body's pace (a trickle of bytes does not extend it).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// How long a connection may pass without a byte moving either way (default 60 s);
    /// past it the connection is closed. Between requests the shorter
    /// [`header_read_timeout`](Self::header_read_timeout) applies first; this bounds the
    /// rest: a client that stops reading its answer (an event stream's too, once the socket
    /// buffers are full), or a route of yours that sends nothing for that long. Event
    /// streams send a comment every [`keep_alive`](Self::keep_alive), which must be shorter.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most connections served at once (default 4,096, at least 1). Past it, new
    /// connections are not accepted: they wait in the kernel's listen backlog until one
    /// closes (and past the backlog, the kernel refuses them), so the server never holds
    /// more than this many connections, nor tasks or buffers for them.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// **Dangerous.** Lets [`serve`] expose routes without a token on an address that is
    /// not loopback. By default it refuses to start there unless a
    /// [`bearer_token`](Self::bearer_token) guards every route but `/health`: without one,
    /// anyone who reaches the address can call every actor, read and delete their state
    /// and read the metrics. Set this only behind something else that authenticates (a
    /// reverse proxy, a private network you trust entirely).
    pub fn allow_unauthenticated(mut self, allow: bool) -> Self {
        self.allow_unauthenticated = allow;
        self
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("addr", &self.addr)
            .field("body_limit", &self.body_limit)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_scope", &self.token_scope)
            .field("keep_alive", &self.keep_alive)
            .field("max_event_streams", &self.max_event_streams)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .finish()
    }
}

/// The ingress' routes for `rt`, to serve with your own `axum::serve` or merge into your
/// own router. They keep the request limits (body size and read timeout, URI length, JSON
/// errors) but not what [`serve`] does per connection (header-read and idle timeouts, the
/// connection limit, `/metrics`' connection counts), nor its refusal of an exposed
/// address without a token: the router cannot see where you serve it. Event streams
/// (`/events`) run until their client disconnects; [`serve`] also ends them when it shuts
/// down.
pub fn router(rt: Runtime, config: &HttpConfig) -> Router {
    // No sender: the streams never hear of a shutdown (see `closed`).
    let (_, closing) = watch::channel(false);
    build(rt, config, Router::new(), closing, Arc::default())
}

/// Serves the ingress for `rt` on `config`'s address until [`Server::shutdown`], with the
/// connection limit and the timeouts of `config` (see the module docs' Limits).
///
/// # Errors
/// [`InvalidInput`](std::io::ErrorKind::InvalidInput) if `config` would open routes to the
/// network without a token (a non-loopback address without a [`bearer_token`](HttpConfig::bearer_token),
/// or with one scoped to the admin routes, unless [`allow_unauthenticated`](HttpConfig::allow_unauthenticated)),
/// or if its limits cannot work (a zero timeout or connection limit, an idle timeout not
/// longer than the event streams' keep-alive); nothing is bound then. Otherwise what
/// binding the address returns.
pub async fn serve(rt: Runtime, config: HttpConfig) -> std::io::Result<Server> {
    serve_with(rt, config, Router::new()).await
}

/// Like [`serve`], with more routes of your own beside the ingress' (a page, say). The
/// ingress' limits, counters and JSON errors apply to them too, and so does the token of
/// the actor routes: with [`TokenScope::All`] (the default off loopback) they need it, as
/// every route but `/health` does.
///
/// # Errors
/// As [`serve`].
///
/// # Panics
/// If `routes` has a fallback or a route the ingress has too (as [`Router::merge`] does).
pub async fn serve_with(
    rt: Runtime,
    config: HttpConfig,
    routes: Router,
) -> std::io::Result<Server> {
    config.check()?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let (closing_tx, closing) = watch::channel(false);
    let counts = Arc::new(Counts::default());
    let app = build(rt, &config, routes, closing.clone(), counts.clone());
    let limits = connections::Limits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let task = tokio::spawn(connections::accept_loop(
        listener, app, limits, counts, closing,
    ));
    tracing::info!(%addr, "HTTP ingress listening");
    Ok(Server {
        addr,
        closing: closing_tx,
        task,
    })
}

/// A running ingress, from [`serve`]. Dropping it leaves the server running until the
/// process ends; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, ends the event streams, and waits for the requests in
    /// flight to be answered; kept-alive connections are closed. It returns once every
    /// connection has closed: a call in flight holds it up for as long as the call takes (at
    /// most the runtime's call timeout), a slow client at most for the header-read,
    /// body-read or idle timeout, an event stream of a route of yours until that stream
    /// ends. The runtime keeps running: shut it down after this (see
    /// [`shutdown_signal`](crate::shutdown_signal)).
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.closing.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(format!(
                "the HTTP server task failed: {e}"
            ))),
        }
    }
}

/// Resolves once `closing` turns true; never if its sender is gone without saying so.
async fn closed(mut closing: watch::Receiver<bool>) {
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What every route handler shares.
#[derive(Clone)]
struct Ingress {
    rt: Runtime,
    keep_alive: Duration,
    body_limit: usize,
    closing: watch::Receiver<bool>,
    counts: Arc<Counts>,
    /// One permit per open event stream.
    streams: Arc<Semaphore>,
    max_event_streams: usize,
    /// `GET /openapi.json`, made once: the registered types do not change.
    openapi: Bytes,
}

/// The ingress' own counters, for `/metrics`.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    /// Connections open now (kept by the accept loop).
    connections_open: AtomicU64,
    /// Connections closed, or requests refused, for a client too slow or idle.
    timed_out: AtomicU64,
}

fn build(
    rt: Runtime,
    config: &HttpConfig,
    extra: Router,
    closing: watch::Receiver<bool>,
    counts: Arc<Counts>,
) -> Router {
    let ingress = Ingress {
        rt,
        keep_alive: config.keep_alive,
        body_limit: config.body_limit,
        closing,
        counts,
        streams: Arc::new(Semaphore::new(
            config.max_event_streams.min(Semaphore::MAX_PERMITS),
        )),
        max_event_streams: config.max_event_streams,
        openapi: Bytes::new(),
    };
    let security = openapi::Security {
        admin: config.token.is_some(),
        actors: config.token.is_some() && matches!(config.effective_token_scope(), TokenScope::All),
    };
    let document = openapi::document(&ingress.rt, &security, config.body_limit);
    let ingress = Ingress {
        openapi: Bytes::from(serde_json::to_vec(&document).unwrap_or_default()),
        ..ingress
    };
    let admin_guard = Guard {
        token: config.token.clone(),
    };
    let actor_guard = Guard {
        token: match config.effective_token_scope() {
            TokenScope::All => config.token.clone(),
            TokenScope::Admin => None,
        },
    };
    let admission = admission::Admission {
        body_limit: config.body_limit,
        body_read_timeout: config.body_read_timeout,
        counts: ingress.counts.clone(),
    };
    // The embedder's routes are guarded as the actor routes are: open on loopback by
    // default, behind the token off loopback.
    let extra = if extra.has_routes() {
        extra.route_layer(middleware::from_fn_with_state(
            actor_guard.clone(),
            require_token,
        ))
    } else {
        extra
    };
    let admin = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/{type}", get(list_keys))
        .route("/admin/{type}/{key}", delete(delete_actor))
        .route("/admin/{type}/{key}/timers", get(list_timers))
        .route(DEAD_LETTERS, get(list_dead_letters))
        .route(
            &format!("{DEAD_LETTERS}/{{id}}"),
            delete(discard_dead_letter),
        )
        .route(
            &format!("{DEAD_LETTERS}/{{id}}/retry"),
            axum::routing::post(retry_dead_letter),
        )
        .route_layer(middleware::from_fn_with_state(admin_guard, require_token));
    let actors = Router::new()
        .route("/{type}/{key}", get(read_state))
        .route("/{type}/{key}/{handler}", get(watch_events).post(call))
        .route("/openapi.json", get(openapi_document))
        .route("/{type}/{key}/{handler}/send", axum::routing::post(send))
        .route_layer(middleware::from_fn_with_state(actor_guard, require_token));
    let ingress_routes = Router::new()
        .route("/health", get(health))
        .merge(admin)
        .merge(actors)
        .with_state(ingress.clone());
    extra
        .merge(ingress_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(admission, admission::admit))
        .layer(middleware::from_fn(error::shape_errors))
        // Inside the counters, so the 500 of a caught panic is counted too.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(ingress.counts, count))
        .layer(TraceLayer::new_for_http())
}

/// The token a group of routes requires (`None`: open).
#[derive(Clone)]
struct Guard {
    token: Option<Arc<str>>,
}

async fn require_token(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Some(token) = &guard.token else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string);
    // A browser's page load or `EventSource` cannot set a header: a `GET` may carry the
    // token as `?access_token=` (RFC 6750 section 2.3).
    let given = header.or_else(|| {
        (request.method() == axum::http::Method::GET)
            .then(|| query_token(request.uri()))
            .flatten()
    });
    match given.as_deref() {
        None => ApiError::unauthorized(
            "this route needs `Authorization: Bearer <token>` (or, on a GET, \
             `?access_token=<token>`)",
        )
        .into_response(),
        Some(given) if !same(given.as_bytes(), token.as_bytes()) => {
            ApiError::unauthorized("the bearer token is not the configured one").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// The `access_token` query parameter of `uri`, if any.
fn query_token(uri: &axum::http::Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct Token {
        access_token: Option<String>,
    }
    Query::<Token>::try_from_uri(uri)
        .ok()
        .and_then(|Query(t)| t.access_token)
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 7235 section 2.1, RFC 6750 section 2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares `given` with `token` in a time that depends only on `given`'s length: no
/// timing hint of how much of a prefix matched, nor of the token's length.
fn same(given: &[u8], token: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != token.len());
    for (i, g) in given.iter().enumerate() {
        // Wraps around a shorter token; a length mismatch already set `diff`.
        let t = token.get(i % token.len().max(1)).copied().unwrap_or(0);
        diff |= g ^ t;
    }
    std::hint::black_box(diff) == 0
}

async fn count(State(counts): State<Arc<Counts>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    counts.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_client_error() {
        counts.client_errors.fetch_add(1, Ordering::Relaxed);
    } else if response.status().is_server_error() {
        counts.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an HTTP route handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the ingress failed to answer this request",
    )
    .into_response()
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; routes: POST /{{type}}/{{key}}/{{handler}}[/send], \
             GET /{{type}}/{{key}}[/events], GET /admin/{{type}}, \
             DELETE /admin/{{type}}/{{key}}, GET /admin/{{type}}/{{key}}/timers, \
             GET /admin/~dead-letters, POST /admin/~dead-letters/{{id}}/retry, \
             DELETE /admin/~dead-letters/{{id}}, GET /metrics, GET /health",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response();
    // axum adds the `Allow` header of the route itself.
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Path parameters, with a JSON 400 for an undecodable path.
struct Segments<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Segments(t)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A call or send that passed the checks: the type's JSON face, the idempotency key, the body.
type Checked = (Arc<dyn JsonActor>, Option<String>, Bytes);

impl Ingress {
    fn actor(&self, name: &str) -> Result<Arc<dyn JsonActor>, ApiError> {
        self.rt
            .json_actor(name)
            .ok_or_else(|| ApiError::unknown_type(name, self.rt.json_actor_names()))
    }

    /// What a call or a send needs, checked in this order: the type, the handler, the key,
    /// the idempotency key, the body.
    fn request(
        &self,
        type_name: &str,
        key: &str,
        handler: &str,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Checked, ApiError> {
        let actor = self.actor(type_name)?;
        check_handler(&*actor, handler)?;
        check_key(key)?;
        let idempotency = idempotency_key(headers)?;
        Ok((actor, idempotency, self.body(body)?))
    }

    /// The body, or a 413 past the limit.
    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large(self.body_limit)
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })
    }
}

fn check_handler(actor: &dyn JsonActor, handler: &str) -> Result<(), ApiError> {
    let handlers = actor.handlers();
    if handlers.iter().any(|h| h.name == handler) {
        Ok(())
    } else {
        let valid = handlers.iter().map(|h| h.name).collect();
        Err(ApiError::unknown_handler(actor.name(), handler, valid))
    }
}

/// Keys are 1 to [`MAX_KEY_LEN`] bytes of UTF-8 (the path decodes percent escapes, so
/// `%2F` puts a `/` in a key) without control characters.
fn check_key(key: &str) -> Result<(), ApiError> {
    let why = if key.is_empty() {
        Some("keys must not be empty".to_string())
    } else if key.len() > MAX_KEY_LEN {
        Some(format!(
            "the key is {} bytes, longer than the limit of {MAX_KEY_LEN}",
            key.len()
        ))
    } else if key.chars().any(char::is_control) {
        Some("keys must not contain control characters".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!("invalid key: {why}"),
        )),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let refuse = || {
        ApiError::bad_request(format!(
            "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII \
             characters"
        ))
    };
    let key = value.to_str().map_err(|_| refuse())?.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(refuse());
    }
    Ok(Some(key.to_string()))
}

fn json_body(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The span of an HTTP call or send: a child of the caller's span named by `traceparent`
/// (feature `otel`), and the parent of the call's.
fn request_span(
    headers: &HeaderMap,
    route: &'static str,
    type_name: &str,
    handler: &str,
) -> tracing::Span {
    let span = tracing::debug_span!(
        "http",
        otel.kind = "server",
        route,
        actor = type_name,
        handler
    );
    #[cfg(feature = "otel")]
    crate::trace::w3c::accept(&span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
    span
}

/// Returns the request's span to its caller as `traceparent` (feature `otel`).
fn answer_span(span: &tracing::Span, response: &mut Response) {
    #[cfg(feature = "otel")]
    crate::trace::w3c::answer(span, response.headers_mut());
    #[cfg(not(feature = "otel"))]
    let _ = (span, response);
}

async fn call(
    State(ingress): State<Ingress>,
    Segments((type_name, key, handler)): Segments<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let span = request_span(&headers, "call", &type_name, &handler);
    let mut response = call_in(ingress, type_name, key, handler, headers, body)
        .instrument(span.clone())
        .await?;
    answer_span(&span, &mut response);
    Ok(response)
}

async fn call_in(
    ingress: Ingress,
    type_name: String,
    key: String,
    handler: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (actor, idempotency, body) = ingress.request(&type_name, &key, &handler, &headers, body)?;
    let reply = actor
        .call(&ingress.rt, &key, &handler, &body, idempotency.as_deref())
        .await
        .map_err(ApiError::from_json)?;
    let mut response = if reply.ok {
        json_body(StatusCode::OK, reply.body)
    } else {
        ApiError::handler(actor.name(), &handler, reply.error, &reply.body).into_response()
    };
    if reply.replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn send(
    State(ingress): State<Ingress>,
    Segments((type_name, key, handler)): Segments<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let span = request_span(&headers, "send", &type_name, &handler);
    let sent = async {
        let (actor, idempotency, body) =
            ingress.request(&type_name, &key, &handler, &headers, body)?;
        actor
            .send(&ingress.rt, &key, &handler, &body, idempotency.as_deref())
            .await
            .map_err(ApiError::from_json)
    };
    sent.instrument(span.clone()).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "queued" })),
    )
        .into_response();
    answer_span(&span, &mut response);
    Ok(response)
}

async fn read_state(
    State(ingress): State<Ingress>,
    Segments((type_name, key)): Segments<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = ingress.actor(&type_name)?;
    check_key(&key)?;
    let state = actor
        .state(&ingress.rt, &key)
        .await
        .map_err(ApiError::from_json)?;
    Ok(json_body(StatusCode::OK, state))
}

async fn watch_events(
    State(ingress): State<Ingress>,
    Segments((type_name, key, segment)): Segments<(String, String, String)>,
) -> Result<Response, ApiError> {
    if segment != "events" {
        return Err(ApiError::method_not_allowed(
            "POST",
            format!("`{segment}` is called with POST; GET /{{type}}/{{key}}/events watches events"),
        ));
    }
    let actor = ingress.actor(&type_name)?;
    check_key(&key)?;
    // Taken before the watch, so a refused stream creates nothing; released when the
    // stream is dropped (its client went away or the server shuts down).
    let permit = ingress.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded(
            format!(
                "{} event streams are open, the most this server allows; retry later",
                ingress.max_event_streams
            ),
            1,
        )
        .with("limit", ingress.max_event_streams)
    })?;
    let events = actor
        .watch(&ingress.rt, &key)
        .map_err(ApiError::from_json)?;
    let stream = events
        .map(move |item| {
            let _open = &permit;
            Ok::<_, Infallible>(match item {
                JsonEvent::Event(json) => Event::default()
                    .event("event")
                    .data(String::from_utf8_lossy(&json)),
                JsonEvent::Lagged(skipped) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"skipped\":{skipped}}}")),
            })
        })
        .take_until(closed(ingress.closing.clone()));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(ingress.keep_alive))
        .into_response())
}

#[derive(Deserialize)]
struct Paging {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_keys(
    State(ingress): State<Ingress>,
    Segments(type_name): Segments<String>,
    paging: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let actor = ingress.actor(&type_name)?;
    let Query(paging) = paging.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = paging.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    let keys = actor
        .keys(&ingress.rt, paging.after.as_deref(), limit)
        .await
        .map_err(ApiError::from_json)?;
    let next = if keys.len() == limit {
        keys.last().cloned()
    } else {
        None
    };
    Ok(Json(serde_json::json!({ "keys": keys, "next": next })).into_response())
}

async fn delete_actor(
    State(ingress): State<Ingress>,
    Segments((type_name, key)): Segments<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = ingress.actor(&type_name)?;
    check_key(&key)?;
    actor
        .delete(&ingress.rt, &key)
        .await
        .map_err(ApiError::from_json)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_timers(
    State(ingress): State<Ingress>,
    Segments((type_name, key)): Segments<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = ingress.actor(&type_name)?;
    check_key(&key)?;
    let timers = actor
        .timers(&ingress.rt, &key)
        .await
        .map_err(ApiError::from_json)?;
    let timers: Vec<serde_json::Value> = timers
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "due_ms": epoch_ms(t.due),
                "every_ms": t.every.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "timers": timers })).into_response())
}

/// Where the dead letters are administered: `~` is in no actor type's name, so this never
/// shadows `/admin/{type}`.
const DEAD_LETTERS: &str = "/admin/~dead-letters";

/// Paging of `GET /admin/~dead-letters`.
#[derive(Deserialize)]
struct DeadLetterPaging {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_dead_letters(
    State(ingress): State<Ingress>,
    paging: Result<Query<DeadLetterPaging>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(paging) = paging.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = paging.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    let after = paging.after.as_deref().map(dead_letter_id).transpose()?;
    let page = ingress.rt.dead_letters(after, limit);
    let letters: Vec<serde_json::Value> = page
        .letters
        .iter()
        .map(|l| {
            serde_json::json!({
                "id": l.id.to_string(),
                "kind": l.kind.as_str(),
                "actor": l.actor,
                "key": l.key,
                "handler": l.handler,
                "timer": l.timer,
                "reason": l.reason,
                "attempts": l.attempts,
                "parked_at_ms": epoch_ms(l.parked_at),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "dead_letters": letters,
        "next": page.next.map(|id| id.to_string()),
        "listed": page.listed,
        "unlisted": page.unlisted,
    }))
    .into_response())
}

async fn retry_dead_letter(
    State(ingress): State<Ingress>,
    Segments(id): Segments<String>,
) -> Result<Response, ApiError> {
    let id = dead_letter_id(&id)?;
    match ingress.rt.retry_dead_letter(id).await {
        Ok(true) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "retrying" })),
        )
            .into_response()),
        Ok(false) => Err(unknown_dead_letter(id)),
        Err(e) => Err(ApiError::from_call(e)),
    }
}

async fn discard_dead_letter(
    State(ingress): State<Ingress>,
    Segments(id): Segments<String>,
) -> Result<Response, ApiError> {
    let id = dead_letter_id(&id)?;
    match ingress.rt.discard_dead_letter(id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(unknown_dead_letter(id)),
        Err(e) => Err(ApiError::from_call(e)),
    }
}

fn dead_letter_id(text: &str) -> Result<crate::DeadLetterId, ApiError> {
    text.parse()
        .map_err(|e: crate::InvalidDeadLetterId| ApiError::bad_request(e.to_string()))
}

fn unknown_dead_letter(id: crate::DeadLetterId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_dead_letter",
        format!(
            "no parked message has the id {id} (never parked in this run, or already retried \
             or discarded); GET {DEAD_LETTERS} lists them"
        ),
    )
}

async fn metrics(State(ingress): State<Ingress>) -> Result<Response, ApiError> {
    let counts = metrics::IngressCounts {
        requests: ingress.counts.requests.load(Ordering::Relaxed),
        client_errors: ingress.counts.client_errors.load(Ordering::Relaxed),
        server_errors: ingress.counts.server_errors.load(Ordering::Relaxed),
        connections_open: ingress.counts.connections_open.load(Ordering::Relaxed),
        timed_out: ingress.counts.timed_out.load(Ordering::Relaxed),
    };
    let text = metrics::render(&ingress.rt.stats(), &counts).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode the metrics: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

async fn openapi_document(State(ingress): State<Ingress>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        ingress.openapi,
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// One HTTP/1.1 request over a plain socket (no client library in this crate's
    /// dependencies): the status and the body.
    async fn request(addr: SocketAddr, method: &'static str, path: &'static str) -> (u16, String) {
        tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            write!(
                socket,
                "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            socket.read_to_string(&mut answer).unwrap();
            let status = answer[9..12].parse().unwrap();
            let body = answer
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
                .unwrap_or_default();
            (status, body)
        })
        .await
        .unwrap()
    }

    fn counter(metrics: &str, name: &str) -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caught_panic_is_counted_as_a_server_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::builder().path(dir.path()).open().await.unwrap();
        let config = HttpConfig::default().bind((Ipv4Addr::LOCALHOST, 0).into());
        let routes = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("a route of the embedding application panicked");
                }
                "unreachable"
            }),
        );
        let server = serve_with(rt.clone(), config, routes).await.unwrap();
        let addr = server.local_addr();

        let (status, body) = request(addr, "GET", "/boom").await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("\"internal\""), "{body}");

        let (status, metrics) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        // The scrape itself is counted after it answers: the panic is the one request.
        assert_eq!(
            counter(&metrics, "gears_http_requests_total"),
            1,
            "{metrics}"
        );
        assert_eq!(
            counter(&metrics, "gears_http_server_errors_total"),
            1,
            "{metrics}"
        );
        server.shutdown().await.unwrap();
        rt.shutdown().await.unwrap();
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"s3crets", b"s3cret"));
        assert!(!same(b"s3creT", b"s3cret"));
        // A given token that repeats a shorter one is not it.
        assert!(!same(b"abab", b"ab"));
        assert!(!same(b"", b"ab"));
        assert!(!same(b"a", b""));
    }
}
