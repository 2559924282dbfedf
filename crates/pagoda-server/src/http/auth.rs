//! Bearer-token authentication of the `/v1` routes when API keys are
//! configured (`--api-key`, `PAGODA_API_KEYS`), with constant-time
//! comparison; and the request id every response carries.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pagoda_api::{ApiError, ErrorCode, ErrorKind};
use subtle::ConstantTimeEq;

use crate::http::errors::HttpError;

/// The keys a request may present; empty: no authentication.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(pub Vec<String>);

impl ApiKeys {
    /// Whether `presented` equals one of the keys; every key is compared in
    /// full, in constant time, whatever matches.
    fn accepts(&self, presented: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |acc, key| {
                acc | key.as_bytes().ct_eq(presented)
            })
            .into()
    }
}

fn unauthorized(message: &str) -> Response {
    HttpError(ApiError {
        kind: ErrorKind::Authentication,
        message: message.into(),
        param: None,
        code: Some(ErrorCode::InvalidApiKey),
    })
    .into_response()
}

/// Rejects `/v1` requests without a configured key.
pub async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    if keys.0.is_empty() || !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => unauthorized("missing API key: send `Authorization: Bearer <key>`"),
        Some(key) if keys.accepts(key.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("invalid API key"),
    }
}

/// A request's id, as handlers receive it (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Echoes a client's `x-request-id` (or assigns one) on the response and in the log.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "req-{:x}",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let start = std::time::Instant::now();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    tracing::info!(request_id = %id, %method, %path, status = response.status().as_u16(),
        ms = start.elapsed().as_millis() as u64, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
