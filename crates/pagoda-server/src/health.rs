//! `GET /health`.

use axum::Json;

/// The model is loaded and the engine runs (the server only listens once both hold).
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
