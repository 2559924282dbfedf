//! `GET /openapi.json`: the API as served, generated from the handlers'
//! annotations and the wire types (nothing hand-written).

use axum::Json;
use pagoda_api::ErrorEnvelope;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::endpoints::{chat, completions, models};
use crate::http::{health, metrics_endpoint, playground};

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
        metrics_endpoint::metrics_text,
        openapi_json,
        playground::page,
    ),
    components(schemas(
        ErrorEnvelope,
        pagoda_api::error::ErrorBody,
        pagoda_api::response::ChatChunk,
        pagoda_api::response::ChatChunkChoice,
        pagoda_api::response::ChatDelta,
        SseEvent,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "openai", description = "OpenAI-compatible endpoints"),
        (name = "operations", description = "Health, metrics, this document and the web playground"),
    )
)]
pub struct ApiDoc;

/// One server-sent event of a streamed completion, as a client parses it
/// off the wire (the shape tools that validate event streams check each
/// event against).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Never built: it describes what the streams send.
pub struct SseEvent {
    /// A JSON chunk (`ChatChunk` for chat, `Completion` for text), an
    /// error in OpenAI's envelope as the last chunk of a failed stream, or
    /// `[DONE]`.
    data: String,
    /// The event type; pagoda sends none, so clients read `message`.
    event: Option<String>,
    /// The event id; pagoda sends none.
    id: Option<String>,
    /// A reconnection delay in milliseconds; pagoda sends none.
    retry: Option<u64>,
}

/// The error responses of the generation endpoints, all in OpenAI's envelope.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Never built: it describes what `HttpError` answers.
pub enum GenerationErrors {
    /// An invalid field (`param` names it), or a prompt plus `max_tokens`
    /// beyond the context window (`code: context_length_exceeded`).
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// An unknown model (`code: model_not_found`).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// The body did not arrive within `--body-timeout-secs`.
    #[response(status = 408)]
    BodyTimeout(ErrorEnvelope),
    /// The body is over the size limit.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// The body is not declared JSON (`Content-Type: application/json`).
    #[response(status = 415)]
    NotJson(ErrorEnvelope),
    /// The queue is full.
    #[response(status = 429, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    QueueFull(ErrorEnvelope),
    /// A failure inside the server (details only in the log).
    #[response(status = 500)]
    Internal(ErrorEnvelope),
    /// The model is still loading (`code: model_loading`).
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    Loading(ErrorEnvelope),
}

/// The error responses of the model endpoints.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Never built: it describes what `HttpError` answers.
pub enum ModelErrors {
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// No such model (`code: model_not_found`).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// The model is still loading (`code: model_loading`).
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    Loading(ErrorEnvelope),
}

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
