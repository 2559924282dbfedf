//! OpenAI wire types (requests, the error envelope) and their validation
//! into engine-neutral parameters. No tensors, no I/O: the server parses a
//! body with [`validate::parse_chat`] or [`validate::parse_completion`] and
//! only the validated types go further.

#![warn(missing_docs)]

pub mod error;
pub mod past_calls;
pub mod response;
pub mod structured;
pub mod tools;
pub mod validate;
pub mod wire;

pub use error::{ApiError, ErrorCode, ErrorEnvelope, ErrorKind};
pub use past_calls::PastCall;
pub use structured::{OutputConstraint, OutputFormat};
pub use tools::{Function, ToolChoice, ToolRequest};
pub use validate::{
    parse_chat, parse_completion, GenerationOptions, Prompt, ReasoningEffort, ReasoningRequest,
    Role, ValidChat, ValidCompletion, ValidMessage,
};
