//! `GET /`: the web playground, one static page compiled into the binary
//! (no build step, nothing loaded from elsewhere) that chats with the
//! served model through this server's own API: streaming, a system prompt,
//! temperature and max tokens, a reasoning model's thinking shown apart
//! and collapsible, tokens per second, and a stop button that cancels the
//! request (the dropped connection aborts it in the engine).

use axum::http::header;
use axum::response::IntoResponse;

/// The page, `assets/playground.html`.
const PAGE: &str = include_str!("../../assets/playground.html");

/// Serves the playground.
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "The web playground (HTML)", body = String, content_type = "text/html")),
)]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
