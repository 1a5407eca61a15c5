//! [`ApiError`]: every failure the ingress answers, as a status and a JSON body
//! `{"error": <name>, "message": <text>, ...}`; the mapping of runtime errors to statuses;
//! and [`shape_errors`], which gives the same shape to the plain-text errors of axum's
//! extractors and of the routes an embedder adds.

use std::convert::Infallible;

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::{CallError, Overload};
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

    /// 413: the body is (or says it is) larger than `limit` bytes.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
        .with("limit", limit)
    }

    /// 408: the body did not arrive whole within `timeout`.
    pub(crate) fn body_timeout(timeout: Duration) -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )
    }

    /// 414: the request target is `length` bytes, over `limit`.
    pub(crate) fn uri_too_long(length: usize, limit: usize) -> Self {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {length} bytes, longer than the limit of {limit}"),
        )
        .with("limit", limit)
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
            JsonError::NotExposed { actor, handler } => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_exposed",
                format!(
                    "handler `{handler}` of `{actor}` returns a value that is not `Serialize`: \
                     it cannot answer as JSON, so it is not callable over HTTP (its `/send` \
                     route still queues it); derive `Serialize` for its result and error to \
                     expose it"
                ),
            ),
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
            CallError::Overloaded(Overload::Mailbox) => {
                (StatusCode::TOO_MANY_REQUESTS, "overloaded", Some(1))
            }
            CallError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1)),
            CallError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Some(5)),
            CallError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key", None),
            CallError::NotRegistered(_) => (StatusCode::NOT_FOUND, "unknown_actor_type", None),
            CallError::NotOwner(_) => (StatusCode::MISDIRECTED_REQUEST, "not_owner", None),
            // The shard moved while the call ran, or is moving: nothing was written; the
            // same request succeeds once the shard has an owner again.
            CallError::Fenced(_) => (StatusCode::SERVICE_UNAVAILABLE, "fenced", Some(1)),
            CallError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(1)),
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

/// Longest plain-text error body [`shape_errors`] carries over as the message.
const MAX_RESHAPED: usize = 4096;

/// Gives an error answered in plain text, or with no body at all, the JSON shape of
/// [`ApiError`]: its status, a name derived from the status, and the text as the message.
/// These come from axum's extractors (`Json`, `Query`, `Form` ... on the routes an
/// embedder adds) and from bare statuses. Other errors are left as they are: the ingress'
/// own (already JSON), and any with a media type of their own, such as an embedder's HTML
/// error page. The status and the other headers (`Allow`, `Retry-After` ...) are kept.
pub(crate) async fn shape_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value
            .to_str()
            .is_ok_and(|value| value.trim_start().starts_with("text/plain")),
    };
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_RESHAPED).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let shaped = ApiError::new(status, status_name(status), message).into_response();
    let (shaped, body) = shaped.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(shaped.headers);
    Response::from_parts(parts, body)
}

/// The error name of a status no ingress error names: its reason phrase in snake case
/// (`415` is `unsupported_media_type`), but the names the ingress uses itself for `413`
/// and `500`.
fn status_name(status: StatusCode) -> String {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large".to_string(),
        StatusCode::INTERNAL_SERVER_ERROR => "internal".to_string(),
        _ => match status.canonical_reason() {
            Some(reason) => reason
                .chars()
                .filter_map(|c| match c {
                    ' ' | '-' => Some('_'),
                    c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            None => format!("status_{}", status.as_u16()),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_get_snake_case_names() {
        assert_eq!(status_name(StatusCode::BAD_REQUEST), "bad_request");
        assert_eq!(
            status_name(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "unsupported_media_type"
        );
        assert_eq!(status_name(StatusCode::IM_A_TEAPOT), "im_a_teapot");
        assert_eq!(status_name(StatusCode::PAYLOAD_TOO_LARGE), "body_too_large");
        assert_eq!(status_name(StatusCode::INTERNAL_SERVER_ERROR), "internal");
        assert_eq!(
            status_name(StatusCode::from_u16(499).unwrap()),
            "status_499"
        );
    }
}
