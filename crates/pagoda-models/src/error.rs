//! The one error type of model loading and execution.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Every variant that concerns a file names it, so that a user who points
/// pagoda at the wrong thing learns which file is wrong and why.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file exists but is not a valid instance of its format
    /// (truncated, corrupt, wrong magic, inconsistent shapes).
    #[error("{path}: invalid {format} file: {reason}")]
    InvalidFile {
        /// The offending file.
        path: PathBuf,
        /// The format it was read as (`GGUF`, `safetensors`, `config.json`...).
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A required GGUF metadata key or checkpoint field is absent or has the wrong type.
    #[error("{path}: missing or invalid metadata `{key}`: {reason}")]
    Metadata {
        /// The file whose metadata is incomplete.
        path: PathBuf,
        /// The metadata key or config field.
        key: String,
        /// What was expected.
        reason: String,
    },
    /// A tensor the architecture needs is not in the checkpoint, or has the wrong shape.
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        /// The checkpoint file (or directory for sharded checkpoints).
        path: PathBuf,
        /// The tensor's name in the checkpoint.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint is well formed but uses something pagoda does not implement.
    #[error("{path}: unsupported {what}: {value}")]
    Unsupported {
        /// The file that declares it.
        path: PathBuf,
        /// The kind of thing (`architecture`, `quantization type`, `pre-tokenizer`...).
        what: &'static str,
        /// The value found in the file.
        value: String,
    },
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or to render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// Weights or hyper-parameters whose shapes do not fit together (a layer
    /// built from a matrix of the wrong size). Loaders turn it into a
    /// [`ModelError::Tensor`] naming the tensor ([`ModelError::for_tensor`]).
    #[error("inconsistent shapes: {0}")]
    Shape(String),
    /// A forward pass was asked for something inconsistent (a batch that does
    /// not match the cache, a position past the context window).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An error from candle while computing.
    #[error("tensor computation failed: {}", candle_reason(.0))]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// This error as one about tensor `name` of the checkpoint at `path`:
    /// shape and tensor-computation errors become [`ModelError::Tensor`],
    /// the others (which already name their file) are kept.
    pub fn for_tensor(self, path: &std::path::Path, name: &str) -> Self {
        let reason = match self {
            ModelError::Shape(reason) => reason,
            ModelError::Candle(e) => candle_reason(&e),
            other => return other,
        };
        ModelError::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason,
        }
    }
}

/// candle's message without the backtrace it attaches when `RUST_BACKTRACE` is set.
pub fn candle_reason(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_reason(inner),
        other => other.to_string(),
    }
}

/// The result type of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
