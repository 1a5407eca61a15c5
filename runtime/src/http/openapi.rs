//! `GET /openapi.json`: an OpenAPI 3.1 document of the ingress, generated from the registered
//! types' handlers (`#[handlers]` collects their schemas, see `crate::schema`): every route
//! with its parameters, bodies, answers and errors.

use serde_json::{Map, Value, json};

use super::{DEAD_LETTERS, MAX_IDEMPOTENCY_KEY_LEN, MAX_PAGE};
use crate::codec::MAX_KEY_LEN;
use crate::runtime::Runtime;
use crate::schema::{HandlerSchema, SchemaSink};

/// Which routes the bearer token guards (none without a token).
pub(super) struct Security {
    pub(super) admin: bool,
    pub(super) actors: bool,
}

/// The document for the types registered on `rt`.
pub(super) fn document(rt: &Runtime, security: &Security, body_limit: usize) -> Value {
    let mut paths = Map::new();
    let mut sink = SchemaSink::new();
    for name in rt.json_actor_names() {
        let Some(actor) = rt.json_actor(name) else {
            continue;
        };
        sink.state = None;
        sink.handlers.clear();
        actor.schemas(&mut sink);
        let state = sink.state.take().unwrap_or_else(|| json!({}));
        actor_paths(&mut paths, name, state, &sink.handlers, security.actors);
        admin_paths(&mut paths, name, security.admin);
    }
    own_paths(&mut paths, security);
    let mut schemas = sink.generator.take_definitions(true);
    schemas.insert("Error".into(), error_schema());
    let mut components = json!({
        "schemas": schemas,
        "parameters": {
            "key": {
                "name": "key",
                "in": "path",
                "required": true,
                "description": format!(
                    "The actor's key: 1 to {MAX_KEY_LEN} bytes (UTF-8), no control characters."
                ),
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    // JSON Schema counts characters: a key of multi-byte characters may
                    // be refused shorter (`400 invalid_key`).
                    "maxLength": MAX_KEY_LEN,
                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                },
            },
            "idempotency-key": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Runs the call once per actor within the runtime's idempotency \
                    retention: a retry with the same key and request is answered from the \
                    first result (header `Idempotency-Replayed: true`).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_LEN,
                    "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$",
                },
            },
        },
        "responses": standard_responses(body_limit),
    });
    if security.admin || security.actors {
        components["securitySchemes"] = json!({
            "bearer": { "type": "http", "scheme": "bearer" },
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Gears",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Virtual actors with durable state: call a handler of any actor by \
                its type and key, read its state, watch its events.",
        },
        "paths": paths,
        "components": components,
    })
}

/// The errors every route may answer, as `#/components/responses`.
fn standard_responses(body_limit: usize) -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
        })
    };
    json!({
        "BadRequest": error("`bad_request` (the body is not the handler's arguments, a bad \
            query or idempotency key) or `invalid_key`."),
        "Unauthorized": error("`unauthorized`: the bearer token is missing or wrong."),
        "NotFound": error("`unknown_actor_type` or `unknown_handler` (with `valid`), or \
            `not_found`."),
        "Conflict": error("`idempotency_conflict`: the idempotency key was used for a \
            different request to this actor."),
        "TooLarge": error(&format!("`body_too_large`: the body exceeds {body_limit} bytes.")),
        "TooManyRequests": error("`overloaded`: the actor's mailbox is full (`Retry-After`)."),
        "Unavailable": error("`overloaded`, `shutting_down`, `fenced` or `unavailable` \
            (`Retry-After`)."),
        "Timeout": error("`timeout`: the call exceeded the runtime's call timeout."),
        "Error": error("Any other error, in the same shape."),
    })
}

/// `{"error", "message", ...}`: every error's body.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error: its name, a text for people, sometimes more fields \
            (`valid`, `detail`, `limit`).",
        "properties": {
            "error": { "type": "string" },
            "message": { "type": "string" },
        },
        "required": ["error", "message"],
    })
}

fn refs(codes: &[(&str, &str)]) -> Map<String, Value> {
    codes
        .iter()
        .map(|(code, name)| {
            (
                (*code).to_string(),
                json!({ "$ref": format!("#/components/responses/{name}") }),
            )
        })
        .collect()
}

/// The errors of a route that addresses one actor.
fn actor_errors(secured: bool) -> Map<String, Value> {
    let mut errors = refs(&[
        ("400", "BadRequest"),
        ("404", "NotFound"),
        ("429", "TooManyRequests"),
        ("503", "Unavailable"),
        ("504", "Timeout"),
        ("default", "Error"),
    ]);
    if secured {
        errors.extend(refs(&[("401", "Unauthorized")]));
    }
    errors
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn operation(
    id: String,
    summary: String,
    description: Option<&str>,
    tag: &str,
    secured: bool,
    mut responses: Map<String, Value>,
    errors: Map<String, Value>,
) -> Map<String, Value> {
    responses.extend(errors);
    let mut op = Map::new();
    op.insert("operationId".into(), id.into());
    op.insert("summary".into(), summary.into());
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        op.insert("description".into(), d.into());
    }
    op.insert("tags".into(), json!([tag]));
    op.insert("responses".into(), Value::Object(responses));
    if secured {
        op.insert("security".into(), json!([{ "bearer": [] }]));
    }
    op
}

fn key_parameter() -> Value {
    json!([{ "$ref": "#/components/parameters/key" }])
}

/// A handler's JSON body: an object with a field per argument (unknown fields refused).
fn arguments_schema(h: &HandlerSchema) -> Value {
    let properties: Map<String, Value> = h
        .args
        .iter()
        .map(|(name, _, schema)| ((*name).to_string(), schema.clone()))
        .collect();
    let required: Vec<&str> = h
        .args
        .iter()
        .filter(|(_, required, _)| *required)
        .map(|(name, _, _)| *name)
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn actor_paths(
    paths: &mut Map<String, Value>,
    name: &str,
    state: Value,
    handlers: &[HandlerSchema],
    secured: bool,
) {
    let ok = |description: &str, content: Value| {
        let mut m = Map::new();
        m.insert(
            "200".into(),
            json!({ "description": description, "content": content }),
        );
        m
    };
    let mut read = operation(
        format!("{name}.state"),
        format!("The state of a `{name}`"),
        Some("A read-only turn: answers once the actor's pending writes are durable."),
        name,
        secured,
        ok("The state.", json_content(state)),
        actor_errors(secured),
    );
    read.insert("parameters".into(), key_parameter());
    paths.insert(format!("/{name}/{{key}}"), json!({ "get": read }));

    let mut events = operation(
        format!("{name}.events"),
        format!("The committed events of a `{name}`"),
        Some(
            "Server-sent events: each committed event as an event named `event` (JSON data); \
             a reader that fell behind gets an event named `lagged` with data `{\"skipped\": n}`.",
        ),
        name,
        secured,
        ok(
            "An event stream.",
            json!({ "text/event-stream": { "schema": { "type": "string" } } }),
        ),
        actor_errors(secured),
    );
    events.insert("parameters".into(), key_parameter());
    paths.insert(format!("/{name}/{{key}}/events"), json!({ "get": events }));

    for h in handlers {
        let body = json!({
            "required": h.args.iter().any(|(_, required, _)| *required),
            "description": "The handler's arguments, one field each (an empty body: none).",
            "content": json_content(arguments_schema(h)),
        });
        let idempotent = json!([
            { "$ref": "#/components/parameters/key" },
            { "$ref": "#/components/parameters/idempotency-key" },
        ]);
        let mut errors = actor_errors(secured);
        errors.extend(refs(&[("409", "Conflict"), ("413", "TooLarge")]));
        let mut responses = ok("The handler's result.", json_content(h.result.clone()));
        if let Some(error) = &h.error {
            responses.insert(
                "422".into(),
                json!({
                    "description": "The handler returned `Err`: `error` names it, its JSON \
                        is under `detail`. The turn was rolled back (committed, for a \
                        `#[handler(commit_errors)]` handler).",
                    "content": json_content(json!({
                        "type": "object",
                        "properties": {
                            "error": { "type": "string" },
                            "message": { "type": "string" },
                            "detail": error,
                        },
                        "required": ["error", "message", "detail"],
                    })),
                }),
            );
        }
        let mut call = operation(
            format!("{name}.{}", h.name),
            format!("`{name}::{}`", h.name),
            Some(h.doc),
            name,
            secured,
            responses,
            errors.clone(),
        );
        call.insert("parameters".into(), idempotent.clone());
        call.insert("requestBody".into(), body.clone());
        paths.insert(
            format!("/{name}/{{key}}/{}", h.name),
            json!({ "post": call }),
        );

        let mut accepted = Map::new();
        accepted.insert(
            "202".into(),
            json!({
                "description": "Queued durably (the outbox); delivered once.",
                "content": json_content(json!({
                    "type": "object",
                    "properties": { "status": { "const": "queued" } },
                    "required": ["status"],
                })),
            }),
        );
        let mut send = operation(
            format!("{name}.{}.send", h.name),
            format!("Send `{name}::{}` (fire and forget)", h.name),
            Some(h.doc),
            name,
            secured,
            accepted,
            errors,
        );
        send.insert("parameters".into(), idempotent);
        send.insert("requestBody".into(), body);
        paths.insert(
            format!("/{name}/{{key}}/{}/send", h.name),
            json!({ "post": send }),
        );
    }
}

/// A dead letter's id: `send-<shard>-<sequence>` or `timer-<shard>-<due ms>-<16 hex digits>`.
const DEAD_LETTER_ID: &str =
    "^(send-[0-9]{1,5}-[0-9]{1,19}|timer-[0-9]{1,5}-[0-9]{1,19}-[0-9a-fA-F]{16})$";

fn paging_parameters(after: &str, after_schema: Value) -> Value {
    json!([
        { "name": "after", "in": "query", "required": false,
          "description": after, "schema": after_schema },
        { "name": "limit", "in": "query", "required": false,
          "description": format!("At most this many (default 100)."),
          "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE } },
    ])
}

fn admin_paths(paths: &mut Map<String, Value>, name: &str, secured: bool) {
    let admin_errors = || {
        let mut e = refs(&[
            ("400", "BadRequest"),
            ("404", "NotFound"),
            ("503", "Unavailable"),
            ("default", "Error"),
        ]);
        if secured {
            e.extend(refs(&[("401", "Unauthorized")]));
        }
        e
    };
    let mut list = Map::new();
    list.insert(
        "200".into(),
        json!({
            "description": "A page of keys with stored state, in storage order.",
            "content": json_content(json!({
                "type": "object",
                "properties": {
                    "keys": { "type": "array", "items": { "type": "string" } },
                    "next": { "type": ["string", "null"] },
                },
                "required": ["keys", "next"],
            })),
        }),
    );
    let mut keys = operation(
        format!("admin.{name}.keys"),
        format!("Keys of `{name}` with stored state"),
        Some("Pass `next` as `after` for the next page."),
        "admin",
        secured,
        list,
        admin_errors(),
    );
    keys.insert(
        "parameters".into(),
        paging_parameters("Keys after this one.", json!({ "type": "string" })),
    );
    paths.insert(format!("/admin/{name}"), json!({ "get": keys }));

    let mut deleted = Map::new();
    deleted.insert("204".into(), json!({ "description": "Deleted." }));
    let mut delete = operation(
        format!("admin.{name}.delete"),
        format!("Delete a `{name}`: state, timers, subscriptions"),
        None,
        "admin",
        secured,
        deleted,
        admin_errors(),
    );
    delete.insert("parameters".into(), key_parameter());
    paths.insert(
        format!("/admin/{name}/{{key}}"),
        json!({ "delete": delete }),
    );

    let mut listed = Map::new();
    listed.insert(
        "200".into(),
        json!({
            "description": "The actor's pending timers, earliest first (`due_ms`: Unix epoch \
                milliseconds).",
            "content": json_content(json!({
                "type": "object",
                "properties": {
                    "timers": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": { "type": "string" },
                            "due_ms": { "type": "integer", "minimum": 0 },
                            "every_ms": { "type": ["integer", "null"], "minimum": 0 },
                        },
                        "required": ["name", "due_ms", "every_ms"],
                    } },
                },
                "required": ["timers"],
            })),
        }),
    );
    let mut timers = operation(
        format!("admin.{name}.timers"),
        format!("Pending timers of a `{name}`"),
        None,
        "admin",
        secured,
        listed,
        admin_errors(),
    );
    timers.insert("parameters".into(), key_parameter());
    paths.insert(
        format!("/admin/{name}/{{key}}/timers"),
        json!({ "get": timers }),
    );
}

/// The ingress' routes that name no actor type.
fn own_paths(paths: &mut Map<String, Value>, security: &Security) {
    let secured = security.admin;
    let only_default = || refs(&[("default", "Error")]);
    let admin_errors = || {
        let mut e = refs(&[
            ("400", "BadRequest"),
            ("404", "NotFound"),
            ("default", "Error"),
        ]);
        if secured {
            e.extend(refs(&[("401", "Unauthorized")]));
        }
        e
    };
    let answer = |code: &str, description: &str, content: Option<Value>| {
        let mut m = Map::new();
        let mut r = json!({ "description": description });
        if let Some(c) = content {
            r["content"] = c;
        }
        m.insert(code.into(), r);
        m
    };
    let health = operation(
        "health".into(),
        "Liveness".into(),
        None,
        "ingress",
        false,
        answer(
            "200",
            "Serving.",
            Some(json_content(json!({
                "type": "object",
                "properties": { "status": { "const": "ok" } },
                "required": ["status"],
            }))),
        ),
        only_default(),
    );
    paths.insert("/health".into(), json!({ "get": health }));
    let mut openapi_errors = only_default();
    if security.actors {
        openapi_errors.extend(refs(&[("401", "Unauthorized")]));
    }
    let openapi = operation(
        "openapi".into(),
        "This document".into(),
        None,
        "ingress",
        security.actors,
        answer(
            "200",
            "The OpenAPI 3.1 document of this ingress.",
            Some(json_content(json!({ "type": "object" }))),
        ),
        openapi_errors,
    );
    paths.insert("/openapi.json".into(), json!({ "get": openapi }));
    let metrics = operation(
        "metrics".into(),
        "The runtime's and the ingress' metrics (OpenMetrics text)".into(),
        None,
        "admin",
        secured,
        answer(
            "200",
            "OpenMetrics text.",
            Some(json!({ "application/openmetrics-text": { "schema": { "type": "string" } } })),
        ),
        admin_errors(),
    );
    paths.insert("/metrics".into(), json!({ "get": metrics }));

    let letter = json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "kind": { "type": "string" },
            "actor": { "type": "string" },
            "key": { "type": "string" },
            "handler": { "type": ["string", "null"] },
            "timer": { "type": ["string", "null"] },
            "reason": { "type": "string" },
            "attempts": { "type": "integer", "minimum": 0 },
            "parked_at_ms": { "type": "integer", "minimum": 0 },
        },
    });
    let mut list = operation(
        "admin.dead_letters".into(),
        "Messages parked in this run".into(),
        Some("Paged as the key listing is; `unlisted` counts those parked beyond the list's cap."),
        "admin",
        secured,
        answer(
            "200",
            "A page of dead letters.",
            Some(json_content(json!({
                "type": "object",
                "properties": {
                    "dead_letters": { "type": "array", "items": letter },
                    "next": { "type": ["string", "null"] },
                    "listed": { "type": "integer", "minimum": 0 },
                    "unlisted": { "type": "integer", "minimum": 0 },
                },
                "required": ["dead_letters", "next"],
            }))),
        ),
        admin_errors(),
    );
    list.insert(
        "parameters".into(),
        paging_parameters(
            "Dead letters after this id.",
            json!({ "type": "string", "pattern": DEAD_LETTER_ID }),
        ),
    );
    paths.insert(DEAD_LETTERS.into(), json!({ "get": list }));
    let id = json!([{ "name": "id", "in": "path", "required": true,
                      "schema": { "type": "string", "pattern": DEAD_LETTER_ID } }]);
    let mut discard = operation(
        "admin.dead_letters.discard".into(),
        "Delete a parked message durably".into(),
        None,
        "admin",
        secured,
        answer("204", "Deleted.", None),
        admin_errors(),
    );
    discard.insert("parameters".into(), id.clone());
    paths.insert(
        format!("{DEAD_LETTERS}/{{id}}"),
        json!({ "delete": discard }),
    );
    let mut retry = operation(
        "admin.dead_letters.retry".into(),
        "Deliver a parked message again, its attempts reset".into(),
        None,
        "admin",
        secured,
        answer(
            "202",
            "Retrying.",
            Some(json_content(json!({
                "type": "object",
                "properties": { "status": { "const": "retrying" } },
                "required": ["status"],
            }))),
        ),
        admin_errors(),
    );
    retry.insert("parameters".into(), id);
    paths.insert(
        format!("{DEAD_LETTERS}/{{id}}/retry"),
        json!({ "post": retry }),
    );
}
