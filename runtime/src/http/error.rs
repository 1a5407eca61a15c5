//! [`ApiError`]: every failure the ingress answers, as a status and a JSON body
//! `{"error": <name>, "message": <text>, ...}`; and the mapping of runtime errors to statuses.

use std::convert::Infallible;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::CallError;
use crate::json::JsonError;

/// A failed request: its status, a stable error name and a message for people.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: String,
    message: String,
    /// More fields of the body (`valid`, `detail`, ...).
    extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
    /// Adds `WWW-Authenticate: Bearer`.
    challenge: bool,
    /// Adds `Allow`.
    allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        error: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error: error.into(),
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
            challenge: false,
            allow: None,
        }
    }

    pub(crate) fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(field.to_string(), value.into());
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = true;
        e
    }

    /// 503 `overloaded` with `Retry-After: retry_after` seconds: the ingress is at a limit.
    pub(crate) fn overloaded(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn method_not_allowed(allow: &'static str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        );
        e.allow = Some(allow);
        e
    }

    pub(crate) fn unknown_type(name: &str, valid: Vec<&'static str>) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_actor_type",
            format!(
                "no actor type is named `{name}`; registered types: {}",
                valid.join(", ")
            ),
        )
        .with("valid", valid)
    }

    pub(crate) fn unknown_handler(actor: &str, handler: &str, valid: Vec<&'static str>) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_handler",
            format!(
                "actor type `{actor}` has no handler `{handler}`; its handlers: {}",
                valid.join(", ")
            ),
        )
        .with("valid", valid)
    }

    /// A handler returned `Err`: 422, named after the error, its JSON under `detail`.
    pub(crate) fn handler(actor: &str, handler: &str, name: Option<String>, detail: &[u8]) -> Self {
        let detail = serde_json::from_slice::<Value>(detail).unwrap_or(Value::Null);
        let name = name.unwrap_or_else(|| "handler_error".to_string());
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            name.clone(),
            format!("handler `{handler}` of `{actor}` returned an error: {name}"),
        )
        .with("detail", detail)
    }

    /// Whatever the JSON face of the runtime refused.
    pub(crate) fn from_json(error: JsonError) -> Self {
        match error {
            JsonError::UnknownHandler {
                actor,
                handler,
                valid,
            } => ApiError::unknown_handler(actor, &handler, valid),
            JsonError::BadRequest(message) => ApiError::bad_request(message),
            JsonError::IdempotencyConflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", message)
            }
            JsonError::Call(error) => ApiError::from_call(error),
        }
    }

    /// The status of each runtime failure (see the module docs of `gears::http`).
    pub(crate) fn from_call(error: CallError<Infallible>) -> Self {
        let message = error.to_string();
        let (status, name, retry) = match &error {
            CallError::Handler(never) => match *never {},
            CallError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
            // A full mailbox is this actor's admission limit: the caller should slow down.
            // Every other overload (activation cap, outbox) is the whole runtime's.
            CallError::Overloaded(what) if what.contains("mailbox") => {
                (StatusCode::TOO_MANY_REQUESTS, "overloaded", Some(1))
            }
            CallError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1)),
            CallError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Some(5)),
            CallError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key", None),
            CallError::NotRegistered(_) => (StatusCode::NOT_FOUND, "unknown_actor_type", None),
            CallError::NotOwner(_) => (StatusCode::MISDIRECTED_REQUEST, "not_owner", None),
            CallError::Panicked { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "handler_panicked", None)
            }
            CallError::Cycle(_) => (StatusCode::INTERNAL_SERVER_ERROR, "call_cycle", None),
            // The runtime refused what the handler asked (a timer name, a message it cannot
            // encode...), most often because of what the request carried: the request, as
            // it is, cannot be served. Nothing is wrong with the server.
            CallError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_turn", None),
            CallError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage", None),
            CallError::Decode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_state", None),
        };
        let mut e = ApiError::new(status, name, message);
        e.retry_after = retry;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.error));
        body.insert("message".into(), Value::String(self.message));
        body.extend(self.extra);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
