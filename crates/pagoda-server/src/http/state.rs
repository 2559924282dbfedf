//! What every handler shares. The server listens before the model is
//! loaded: [`ServerState`] exists from the start, the served model's
//! [`AppState`] once loading has finished, and the [`Ready`] extractor
//! answers 503 until then.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use pagoda_api::{ApiError, ErrorCode, ErrorKind};
use pagoda_engine::{EngineHandle, GrammarCompiler, GrammarError};
use pagoda_models::GenerationDefaults;
use pagoda_models::{ChatTemplate, Tokenizer};

use crate::capabilities::reasoning::Reasoning;
use crate::capabilities::template::TemplateSupport;
use crate::capabilities::tool_format::ToolCallFormat;
use crate::http::errors::HttpError;
use crate::http::metrics::Metrics;

/// The served model: its engine and what requests need of it, grouped.
pub struct AppState {
    /// The engine thread (it also holds the limits a request must fit:
    /// vocabulary, served context).
    pub engine: EngineHandle,
    /// How the model is named in responses.
    pub identity: Identity,
    /// The text side: tokenizer, chat template, sampling defaults.
    pub text: TextSide,
    /// What the model can do, resolved once at load.
    pub capabilities: Capabilities,
    /// What a request may take beyond the engine's own limits.
    pub limits: RequestLimits,
}

/// What a request may take, beside the engine's limits (the vocabulary,
/// the served context: [`EngineHandle::limits`]).
pub struct RequestLimits {
    /// Longest a request may run; past it, its choices end with `length`.
    pub request_timeout: Option<Duration>,
    /// Most choices (`n`) one request may ask for (`--max-n`).
    pub max_n: usize,
    /// Becomes true when the shutdown grace period is over: every request
    /// still running then ends its choices with `length` as a timeout does,
    /// so a stream ends with a final chunk and `[DONE]`, not mid-chunk.
    pub cut_off: tokio::sync::watch::Receiver<bool>,
}

/// How the served model is named in responses.
pub struct Identity {
    /// The name clients use in `model`.
    pub model_name: String,
    /// Unix seconds when the model was ready.
    pub created: u64,
    /// `system_fingerprint` of responses.
    pub fingerprint: String,
}

/// The text side of the served model.
pub struct TextSide {
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, if it ships one.
    pub chat_template: Option<ChatTemplate>,
    /// Sampling defaults from the checkpoint.
    pub defaults: GenerationDefaults,
}

/// What the served model can do, resolved once at load.
pub struct Capabilities {
    /// How the model reasons, if it does.
    pub reasoning: Option<Reasoning>,
    /// Compiles output grammars for this model's vocabulary (or why it cannot).
    pub grammars: Result<GrammarCompiler, GrammarError>,
    /// How the model writes tool calls.
    pub tool_format: ToolCallFormat,
    /// What the chat template renders of tool use.
    pub template: TemplateSupport,
}

/// The served model as handlers receive it.
pub type SharedState = Arc<AppState>;

/// State of the whole server, from before the model is loaded.
pub struct ServerState {
    /// The Prometheus registry.
    pub metrics: Metrics,
    model: OnceLock<SharedState>,
}

impl ServerState {
    /// A server whose model is still loading.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            model: OnceLock::new(),
        }
    }

    /// Publishes the loaded model; requests are served from now on.
    pub fn set_ready(&self, app: AppState) {
        let _ = self.model.set(Arc::new(app));
    }

    /// The served model, once loaded.
    pub fn ready(&self) -> Option<&SharedState> {
        self.model.get()
    }
}

/// Extracts the served model, or answers 503 while it loads.
pub struct Ready(pub SharedState);

impl FromRequestParts<Arc<ServerState>> for Ready {
    type Rejection = HttpError;

    async fn from_request_parts(
        _parts: &mut Parts,
        server: &Arc<ServerState>,
    ) -> Result<Self, Self::Rejection> {
        server.ready().cloned().map(Ready).ok_or_else(|| {
            HttpError(ApiError {
                kind: ErrorKind::Unavailable,
                message: "the model is still loading; retry shortly".into(),
                param: None,
                code: Some(ErrorCode::ModelLoading),
            })
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
