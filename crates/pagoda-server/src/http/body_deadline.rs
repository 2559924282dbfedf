//! A request body must arrive whole within `--body-timeout-secs`: the body
//! is read here under one deadline for the whole of it (a per-read timeout
//! would let a client trickle a byte at a time for ever), then handed on.
//! Past the deadline: 408 in the envelope, and the connection closes.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pagoda_api::{ApiError, ErrorKind};

use crate::http::errors::{body_error, HttpError};
use crate::http::MAX_BODY_BYTES;

/// Reads the body within `timeout`, then runs the request with it.
pub async fn read_within(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    // Past `MAX_BODY_BYTES` the read stops and the answer is a 413, as the
    // handlers' own limit would give.
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            body_error(too_large, &e.to_string()).into_response()
        }
        Err(_) => {
            let mut response = HttpError(ApiError {
                kind: ErrorKind::RequestTimeout,
                message: format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
                param: Some("body".into()),
                code: None,
            })
            .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            response
        }
    }
}
