//! What is resolved once, at load, for the served model, and used by every
//! request: whether and how it reasons ([`reasoning`]), the markup of its
//! tool calls ([`tool_format`]), what its chat template renders of tool use
//! ([`template`]), and the grammars that force a tool call
//! ([`tool_grammar`]) or an output format ([`output_grammar`]).

pub(crate) mod output_grammar;
pub(crate) mod reasoning;
pub(crate) mod template;
pub(crate) mod tool_format;
pub(crate) mod tool_grammar;
