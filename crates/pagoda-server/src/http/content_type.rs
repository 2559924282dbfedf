//! Bodies must say they are JSON: a `POST` whose `Content-Type` is not
//! `application/json` (a form, plain text, none) is refused with 415 before
//! it is read. Browsers send such "simple" requests cross-origin without a
//! CORS preflight, so without this check any web page could make a local
//! server without API keys compute.

use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pagoda_api::{ApiError, ErrorKind};

use crate::http::errors::HttpError;

/// Whether a `Content-Type` value names JSON (`application/json`, with
/// parameters such as `charset`, or a `+json` type).
fn is_json(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// The routes whose `POST` takes a JSON body (a `POST` elsewhere is a 405).
const JSON_ROUTES: [&str; 2] = ["/v1/chat/completions", "/v1/completions"];

/// Refuses a `POST` to a JSON route whose body is not declared JSON.
pub async fn require_json(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !JSON_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if declared.is_some_and(is_json) {
        return next.run(request).await;
    }
    HttpError(ApiError {
        kind: ErrorKind::UnsupportedMediaType,
        message: format!(
            "the body must be JSON, sent with `Content-Type: application/json` (got {})",
            declared.map_or("no Content-Type".to_string(), |v| format!("`{v}`"))
        ),
        param: None,
        code: None,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
        assert!(!is_json(""));
        assert!(!is_json("json"));
    }
}
