//! `GET /metrics`: the Prometheus registry rendered with the engine's
//! gauges read at scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::state::ServerState;

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")),
)]
pub async fn metrics_text(State(server): State<std::sync::Arc<ServerState>>) -> impl IntoResponse {
    let stats = server.ready().map(|m| m.engine.stats());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        server.metrics.render(stats),
    )
}
