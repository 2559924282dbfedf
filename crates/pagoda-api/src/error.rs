//! OpenAI's error envelope and the kinds of error the API returns.

use serde::Serialize;

/// The class of an error, which fixes its HTTP status and OpenAI `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A field is missing, malformed or out of range (400).
    InvalidRequest,
    /// Missing or wrong API key (401).
    Authentication,
    /// Unknown route or model (404).
    NotFound,
    /// The route does not take this method (405).
    MethodNotAllowed,
    /// The request body did not arrive in time (408).
    RequestTimeout,
    /// The body is larger than allowed (413).
    PayloadTooLarge,
    /// The request target is longer than allowed (414).
    UriTooLong,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The request's headers are larger than allowed (431).
    HeadersTooLarge,
    /// The server is full; retry later (429).
    RateLimited,
    /// Something failed inside the server (500); the message never carries internals.
    Internal,
    /// The server is not ready or is shutting down (503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// OpenAI's `error.type` label.
    pub fn type_label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::HeadersTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal => "server_error",
            ErrorKind::Unavailable => "service_unavailable_error",
        }
    }
}

/// The machine-readable `error.code` values pagoda returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The prompt, or the prompt plus `max_tokens`, does not fit.
    ContextLengthExceeded,
    /// The server is at capacity.
    RateLimitExceeded,
    /// The model is still loading.
    ModelLoading,
    /// The API key is missing or wrong.
    InvalidApiKey,
    /// No such route.
    NotFound,
    /// No such model.
    ModelNotFound,
    /// The model's vocabulary cannot be held to a grammar.
    StructuredOutputUnavailable,
}

impl ErrorCode {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ContextLengthExceeded => "context_length_exceeded",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::ModelLoading => "model_loading",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::StructuredOutputUnavailable => "structured_output_unavailable",
        }
    }
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Its class.
    pub kind: ErrorKind,
    /// A sentence for the user, naming the field and the limit where it applies.
    pub message: String,
    /// The offending request field (`temperature`, `messages[1].role`...).
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<ErrorCode>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = Some(code);
        self
    }

    /// The `{"error": {...}}` body.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                message: self.message.clone(),
                kind: self.kind.type_label().to_string(),
                param: self.param.clone(),
                code: self.code.map(|c| c.as_str().to_string()),
            },
        }
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
    /// OpenAI's error type label.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending field, or null.
    pub param: Option<String>,
    /// A machine-readable code, or null.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_openais_shape() {
        let e = ApiError::invalid("temperature", "temperature must be between 0 and 2");
        let json = serde_json::to_value(e.envelope()).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"error": {"message": "temperature must be between 0 and 2",
                "type": "invalid_request_error", "param": "temperature", "code": null}})
        );
        assert_eq!(e.kind.status(), 400);
    }
}
