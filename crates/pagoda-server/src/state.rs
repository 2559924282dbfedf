//! What every handler shares: the engine, the tokenizer and chat template,
//! the served model's identity and the limits.

use std::sync::Arc;

use pagoda_engine::EngineHandle;
use pagoda_models::generation_config::GenerationDefaults;
use pagoda_models::{ChatTemplate, Tokenizer};

/// Shared server state.
pub struct AppState {
    /// The engine thread.
    pub engine: EngineHandle,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, if it ships one.
    pub chat_template: Option<ChatTemplate>,
    /// Sampling defaults from the checkpoint.
    pub defaults: GenerationDefaults,
    /// The name clients use in `model`.
    pub model_name: String,
    /// Context window of the model.
    pub context_length: usize,
    /// Unix seconds at start.
    pub created: u64,
    /// `system_fingerprint` of responses.
    pub fingerprint: String,
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
