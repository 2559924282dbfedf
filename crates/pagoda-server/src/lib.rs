//! pagoda's server: the `pagoda` binary's commands and the OpenAI-compatible
//! HTTP server in front of `pagoda-engine`.
//!
//! The parts, one folder each:
//!
//! - `commands`: the command line and config file, and the three commands
//!   (`serve`, `generate`, `bench`) with their logging.
//! - `http`: the plumbing every endpoint shares: the route table, the
//!   server state, errors as responses, authentication and request ids, SSE
//!   framing, metrics, `/health`, `/openapi.json` and the playground page.
//! - `endpoints`: one file per API endpoint (`/v1/chat/completions`,
//!   `/v1/completions`, `/v1/models`), the chat prompt built from a request,
//!   and the engine request built from validated options.
//! - `output`: the way back of one request: its events read from the
//!   engine, and each choice's text detokenized, split into thinking and
//!   answer, cut at stop strings and searched for tool calls.
//! - `capabilities`: what is resolved once at load for the served model:
//!   whether and how it reasons, its tool-call format, and the grammars that
//!   force a tool call or an output format.
//!
//! One chat request, in order:
//!
//! ```text
//! http::routes ─ auth, request id, metrics ─▶ endpoints::chat
//!   parse and validate (pagoda-api) ─▶ endpoints::chat_prompt (template, tools)
//!   ─▶ tokenize ─▶ capabilities::output_grammar (a grammar, if any)
//!   ─▶ endpoints::engine_request (defaults, limits) ─▶ submit to the engine thread
//! output::inflight ◀─ engine events (tokens, finishes) ─┘
//!   per choice, output::choice: detokenize ─▶ reasoning_parser ─▶ stop_strings ─▶ tool_calls
//!   ─▶ endpoints::chat: one JSON answer, or SSE chunks (http::sse)
//!   dropped before the end (client gone): the engine aborts the request
//! ```
//!
//! `docs/architecture.md` describes how this crate sits among the others.

#![warn(missing_docs)]

mod capabilities;
mod commands;
mod endpoints;
mod http;
mod output;
#[cfg(test)]
mod test_support;

/// Runs the `pagoda` command line: parses the arguments (and the config
/// file), sets up logging and runs the command.
pub fn run() -> anyhow::Result<()> {
    commands::run()
}
