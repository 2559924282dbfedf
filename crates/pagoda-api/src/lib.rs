//! OpenAI wire types (requests, responses, stream chunks, the error
//! envelope) and their validation into engine-neutral parameters.
//!
//! This crate has no tensors and no I/O. Its types arrive with the HTTP API
//! (`pagoda serve`); until then it is an empty member of the workspace.

#![warn(missing_docs)]
