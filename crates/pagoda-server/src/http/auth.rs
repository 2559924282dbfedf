//! Bearer-token authentication of the `/v1` routes and `/metrics` (unless
//! `--metrics-public`) when API keys are configured (`--api-key`,
//! `PAGODA_API_KEYS`), with constant-time comparison; and the request id
//! every response carries.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pagoda_api::{ApiError, ErrorCode, ErrorKind};
use subtle::ConstantTimeEq;

use crate::http::errors::HttpError;

/// The keys a request may present, and which routes ask for one.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// The keys; empty: no authentication.
    pub keys: Vec<String>,
    /// Whether `/metrics` is served without a key.
    pub metrics_public: bool,
}

impl ApiKeys {
    /// Whether a request for `path` must present a key.
    fn guards(&self, path: &str) -> bool {
        !self.keys.is_empty()
            && (path.starts_with("/v1/") || (path == "/metrics" && !self.metrics_public))
    }

    /// Whether `presented` equals one of the keys; every key is compared in
    /// full, in constant time, whatever matches.
    fn accepts(&self, presented: &[u8]) -> bool {
        self.keys
            .iter()
            .fold(subtle::Choice::from(0), |acc, key| {
                acc | key.as_bytes().ct_eq(presented)
            })
            .into()
    }
}

/// A 401 in the envelope, with the `WWW-Authenticate` challenge RFC 7235
/// requires.
fn unauthorized(message: &str) -> Response {
    let mut response = HttpError(ApiError {
        kind: ErrorKind::Authentication,
        message: message.into(),
        param: None,
        code: Some(ErrorCode::InvalidApiKey),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The credentials of an `Authorization: Bearer <key>` header; the scheme
/// is case-insensitive (RFC 7235).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Rejects `/v1` requests without a configured key.
pub async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    if !keys.guards(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        None => unauthorized("missing API key: send `Authorization: Bearer <key>`"),
        Some(key) if keys.accepts(key.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("invalid API key"),
    }
}

/// A request's id, as handlers receive it (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether a client's `x-request-id` may be echoed and logged as it is:
/// 1 to 128 characters of letters, digits and `-_.:`, so that it cannot
/// forge a log line or smuggle markup.
fn is_safe_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Echoes a client's `x-request-id` (or assigns one, when it has none or
/// one with other characters) on the response and in the log.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_request_id(v))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer k1"), Some("k1"));
        assert_eq!(bearer_token("bearer k1 "), Some("k1"));
        assert_eq!(bearer_token("BEARER  k1"), Some("k1"));
        assert_eq!(bearer_token("Basic k1"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn only_plain_request_ids_are_echoed() {
        assert!(is_safe_request_id("req-42_a.b:c"));
        assert!(!is_safe_request_id(""));
        assert!(!is_safe_request_id("a\nfake=log line"));
        assert!(!is_safe_request_id("x y"));
        assert!(!is_safe_request_id("<script>"));
        assert!(!is_safe_request_id(&"a".repeat(129)));
    }
}
