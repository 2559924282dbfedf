//! `GET /health`: 503 while the model loads, 200 once requests are served.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::http::state::ServerState;

/// The server's readiness, for load balancers and orchestrators.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The model is loaded: `{\"status\": \"ok\"}`", body = Object),
        (status = 503, description = "The model is loading: `{\"status\": \"loading\"}`", body = Object),
    ),
)]
pub async fn health(
    State(server): State<Arc<ServerState>>,
) -> (StatusCode, Json<serde_json::Value>) {
    match server.ready() {
        Some(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "loading"})),
        ),
    }
}
