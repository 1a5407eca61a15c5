//! What every request passes before it is routed: a target of at most
//! [`MAX_URI_LEN`](super::MAX_URI_LEN) bytes (`414 uri_too_long`), a declared
//! `Content-Length` within the body limit (`413 body_too_large` at once, before the body is
//! read, so a client that sent `Expect: 100-continue` never gets `100 Continue`), and the
//! body read whole, within the limit and the body-read timeout (`408 body_timeout`), before
//! any route runs.
//!
//! The deadline covers the whole body, not the gaps between its bytes: a trickle cannot
//! extend it. A request refused here has its body left unread, so its answer closes the
//! connection. Only the request's head and body are seen here: an event stream is a
//! response, which no timeout of this module touches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::{Counts, MAX_URI_LEN};

/// The request limits of an [`HttpConfig`](super::HttpConfig).
#[derive(Clone)]
pub(super) struct Admission {
    pub(super) body_limit: usize,
    pub(super) body_read_timeout: Duration,
    pub(super) counts: Arc<Counts>,
}

pub(super) async fn admit(
    State(admission): State<Admission>,
    request: Request,
    next: Next,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_LEN {
        return closing(ApiError::uri_too_long(target, MAX_URI_LEN));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let limit = admission.body_limit;
    if declared.is_some_and(|length| length > limit as u64) {
        return closing(ApiError::body_too_large(limit));
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        admission.body_read_timeout,
        Limited::new(body, limit).collect(),
    )
    .await;
    let body = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return closing(ApiError::body_too_large(limit));
        }
        Ok(Err(e)) => {
            return closing(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )));
        }
        Err(_) => {
            admission.counts.timed_out.fetch_add(1, Ordering::Relaxed);
            return closing(ApiError::body_timeout(admission.body_read_timeout));
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// `error` with `Connection: close`: the body was not read to its end, so the connection
/// cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
