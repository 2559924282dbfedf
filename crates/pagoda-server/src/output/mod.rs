//! The way back of one request: [`inflight`] reads the engine's events for
//! it, and each choice's text goes through [`choice`]: detokenized, split
//! into thinking and answer ([`reasoning_parser`]), cut at stop strings
//! ([`stop_strings`]) and searched for tool calls ([`tool_calls`]). Text that
//! may still become a tag, a stop string or a call is held back
//! ([`partial_match`]). [`label`] names the endpoint and the outcome in logs
//! and metrics.

pub(crate) mod choice;
pub(crate) mod inflight;
pub(crate) mod label;
pub(crate) mod partial_match;
pub(crate) mod reasoning_parser;
pub(crate) mod stop_strings;
pub(crate) mod tool_calls;
