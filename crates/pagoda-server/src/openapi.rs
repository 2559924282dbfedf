//! `GET /openapi.json`: the API as served, generated from the handlers'
//! annotations and the wire types (nothing hand-written).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{chat, completions, health, metrics, models};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pagoda",
        description = "An OpenAI-compatible LLM inference server. Errors use OpenAI's envelope \
            `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."
    ),
    paths(
        chat::chat_completions,
        completions::completions,
        models::list,
        models::retrieve,
        health::health,
        metrics::metrics_text,
        openapi_json,
    ),
    components(schemas(
        pagoda_api::response::ChatChunk,
        pagoda_api::response::ChatChunkChoice,
        pagoda_api::response::ChatDelta,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "openai", description = "OpenAI-compatible endpoints"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the `/v1` routes take when API keys are set.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI document", body = Object)),
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
