//! The one place where an error becomes an HTTP response: the status and
//! the OpenAI envelope, for JSON answers and (as a final event) for streams.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pagoda_api::{ApiError, ErrorCode, ErrorKind};
use pagoda_engine::{EngineFailure, SequenceLimit, SubmitError};

/// An [`ApiError`] that axum can return.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.envelope())).into_response();
        if matches!(self.0.kind, ErrorKind::RateLimited | ErrorKind::Unavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Maps the engine's refusals to API errors; `prompt_param` is the field
/// that held the prompt (`messages` or `prompt`).
pub fn submit_error(e: SubmitError, prompt_param: &str) -> ApiError {
    let message = e.to_string();
    match e {
        SubmitError::QueueFull => ApiError {
            kind: ErrorKind::RateLimited,
            message: "the server is at capacity; retry shortly".into(),
            param: None,
            code: Some(ErrorCode::RateLimitExceeded),
        },
        SubmitError::Closed => ApiError {
            kind: ErrorKind::Unavailable,
            message: "the server is shutting down".into(),
            param: None,
            code: None,
        },
        SubmitError::EmptyPrompt | SubmitError::UnknownToken { .. } => {
            ApiError::invalid(prompt_param, message)
        }
        SubmitError::UnknownBiasToken { .. } => ApiError::invalid("logit_bias", message),
        SubmitError::NothingToGenerate => ApiError::invalid("max_tokens", message),
        SubmitError::NoThinkingClose => ApiError::invalid("reasoning_effort", message),
        SubmitError::TooManySequences {
            limit: SequenceLimit::Running,
            ..
        } => ApiError::invalid("n", message),
        SubmitError::TooManySequences {
            limit: SequenceLimit::Waiting,
            ..
        } => ApiError::invalid(prompt_param, message),
        SubmitError::PromptTooLong { .. } => {
            ApiError::invalid(prompt_param, message).with_code(ErrorCode::ContextLengthExceeded)
        }
        SubmitError::TooLong { .. } => {
            ApiError::invalid("max_tokens", message).with_code(ErrorCode::ContextLengthExceeded)
        }
    }
}

/// Maps a failure inside the engine: a refusal when it took the request
/// from its queue as a refusal in `submit`, anything else as a 500.
pub fn engine_failure(e: EngineFailure, prompt_param: &str) -> ApiError {
    match e {
        EngineFailure::Refused(e) => submit_error(e, prompt_param),
        e => internal("generating", e),
    }
}

/// A 500 whose message never carries internals (they go to the log).
pub fn internal(what: &str, detail: impl std::fmt::Display) -> ApiError {
    tracing::error!(%detail, "{what}");
    ApiError {
        kind: ErrorKind::Internal,
        message: format!("internal error while {what}"),
        param: None,
        code: None,
    }
}

/// Maps a body that could not be read (over the size limit, broken transfer) to the envelope.
pub fn body_rejection(r: axum::extract::rejection::BytesRejection) -> HttpError {
    body_error(r.status() == StatusCode::PAYLOAD_TOO_LARGE, &r.body_text())
}

/// A body over the size limit (413), or one that could not be read (400,
/// with `detail`).
pub fn body_error(too_large: bool, detail: &str) -> HttpError {
    HttpError(ApiError {
        kind: if too_large {
            ErrorKind::PayloadTooLarge
        } else {
            ErrorKind::InvalidRequest
        },
        message: if too_large {
            format!(
                "the request body is larger than {} bytes",
                crate::http::MAX_BODY_BYTES
            )
        } else {
            format!("the request body could not be read: {detail}")
        },
        param: Some("body".into()),
        code: None,
    })
}
