//! `GET /`: the web playground, a static page compiled into the binary (no
//! build step, nothing loaded from elsewhere) that chats with the served
//! model through this server's own API: streaming, a system prompt,
//! temperature and max tokens, a reasoning model's thinking shown apart
//! and collapsible, tokens per second, and a stop button that cancels the
//! request (the dropped connection aborts it in the engine).
//!
//! Its script and style are files of their own (`/playground.js`,
//! `/playground.css`), so the page can send a strict Content-Security-Policy:
//! only this server's own script, style and API, no inline code, no frames.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, `assets/playground.html`.
const PAGE: &str = include_str!("../../assets/playground.html");
/// Its script, `assets/playground.js`.
const SCRIPT: &str = include_str!("../../assets/playground.js");
/// Its style sheet, `assets/playground.css`.
const STYLE: &str = include_str!("../../assets/playground.css");

/// What the page may load and run: its own script and style, requests to
/// this server; nothing inline, no plugins, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

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
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

/// Serves the playground's script.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Serves the playground's style sheet.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
