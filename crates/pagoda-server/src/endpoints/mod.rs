//! The API's endpoints, one file each, with what they build before a
//! request reaches the engine: the chat prompt and the engine request.

pub(crate) mod chat;
pub(crate) mod chat_prompt;
pub(crate) mod completions;
pub(crate) mod engine_request;
pub(crate) mod models;
