//! The route table: an index of the API.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use pagoda_api::{ApiError, ErrorCode, ErrorKind};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::endpoints::{chat, completions, models};
use crate::http::auth::{self, ApiKeys};
use crate::http::errors::HttpError;
use crate::http::state::ServerState;
use crate::http::{
    content_type, health, metrics, metrics_endpoint, openapi, playground, MAX_BODY_BYTES,
};

/// The CORS policy for `origins` (`*`: any); `None` when no origin is allowed.
pub fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| anyhow::anyhow!("--cors-origin: `{o}` is not a valid origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([HeaderName::from_static("x-request-id")]),
    ))
}

/// Every route of the server.
pub fn router(state: Arc<ServerState>, keys: ApiKeys, cors: Option<CorsLayer>) -> Router {
    let app = Router::new()
        .route("/", get(playground::page))
        .route("/playground.js", get(playground::script))
        .route("/playground.css", get(playground::style))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list))
        // A wildcard: served names may contain `/` (`org/model`).
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics_endpoint::metrics_text))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // `layer` wraps each route (and the fallback) after routing, so the
        // middlewares see the matched route (`MatchedPath`, for metrics).
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(content_type::require_json))
        .layer(middleware::from_fn(crate::http::tenant::identify))
        .layer(middleware::from_fn_with_state(keys, auth::require_key))
        .layer(middleware::from_fn(metrics::count_responses))
        .layer(middleware::from_fn(auth::request_id))
        .with_state(state);
    // CORS outermost, so that preflight requests need no API key.
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    HttpError(ApiError {
        kind: ErrorKind::NotFound,
        message: format!("no route for {}", uri.path()),
        param: None,
        code: Some(ErrorCode::NotFound),
    })
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> HttpError {
    HttpError(ApiError {
        kind: ErrorKind::MethodNotAllowed,
        message: format!("{} does not take {method}", uri.path()),
        param: None,
        code: None,
    })
}
