//! The route table: an index of the API.

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use pagoda_api::{ApiError, ErrorKind};

use crate::api_error::HttpError;
use crate::auth::{self, ApiKeys};
use crate::state::SharedState;
use crate::{chat, completions, health, models};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Every route of the server.
pub fn router(state: SharedState, keys: ApiKeys) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/health", get(health::health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(keys, auth::require_key))
        .layer(middleware::from_fn(auth::request_id))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    HttpError(ApiError {
        kind: ErrorKind::NotFound,
        message: format!("no route for {}", uri.path()),
        param: None,
        code: Some("not_found".into()),
    })
}
