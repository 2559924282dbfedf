//! `GET /v1/models` and `GET /v1/models/{id}`, and the check that a request
//! names the served model.

use axum::extract::Path;
use axum::Json;
use pagoda_api::response::{ModelCard, ModelList};
use pagoda_api::{ApiError, ErrorCode, ErrorKind};

use crate::http::errors::HttpError;
use crate::http::state::{AppState, Ready};

fn card(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.identity.model_name.clone(),
        object: "model",
        created: state.identity.created,
        owned_by: "pagoda".into(),
    }
}

fn not_found(model: &str) -> ApiError {
    ApiError {
        kind: ErrorKind::NotFound,
        message: format!("the model `{model}` does not exist"),
        param: Some("model".into()),
        code: Some(ErrorCode::ModelNotFound),
    }
}

/// A request may omit `model` or name the served one.
pub fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != state.identity.model_name => Err(not_found(m)),
        _ => Ok(()),
    }
}

/// Lists the served model.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The served model", body = ModelList),
        crate::http::openapi::ModelErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn list(Ready(state): Ready) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![card(&state)],
    })
}

/// Describes one model.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "The model's served name")),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        crate::http::openapi::ModelErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn retrieve(
    Ready(state): Ready,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, HttpError> {
    check_model(&state, Some(&id))?;
    Ok(Json(card(&state)))
}
