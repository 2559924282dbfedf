//! From a request's output constraint and tool choice to the grammar the
//! engine enforces: `response_format` and the vLLM-style extensions, a
//! forced tool call in the model's format, or (`tool_choice: auto` with a
//! JSON response format) either. Compiled before the request is queued; a
//! grammar that cannot be enforced is a 400 naming the parameter it came
//! from and, for a schema, the keyword.

use pagoda_api::{ApiError, ErrorCode, OutputConstraint, OutputFormat, ToolChoice, ToolRequest};
use pagoda_engine::{Grammar, GrammarError, GrammarSpec};

use crate::capabilities::tool_format::ToolCallFormat;
use crate::capabilities::tool_grammar::{calls_or_json, forced_calls};
use crate::http::state::AppState;

/// What the grammar enforces and the parameter that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarRequest {
    /// The grammar.
    pub spec: GrammarSpec,
    /// The request field it came from.
    pub param: String,
}

/// The grammar of an output constraint alone (`None`: free text).
pub fn output_spec(output: &OutputConstraint) -> Option<GrammarRequest> {
    let spec = match &output.format {
        OutputFormat::Text => return None,
        OutputFormat::JsonObject => GrammarSpec::JsonObject,
        OutputFormat::JsonSchema { schema, strict } => GrammarSpec::JsonSchema {
            schema: schema.clone(),
            strict: *strict,
        },
        OutputFormat::Regex(rx) => GrammarSpec::Regex(rx.clone()),
        OutputFormat::Lark(g) => GrammarSpec::Lark(g.clone()),
        OutputFormat::Choice(choices) => {
            let alternatives: Vec<String> = choices
                .iter()
                .map(|c| serde_json::Value::from(c.as_str()).to_string())
                .collect();
            GrammarSpec::Lark(format!("start: {}", alternatives.join(" | ")))
        }
    };
    Some(GrammarRequest {
        spec,
        param: output.param.clone(),
    })
}

/// The grammar of a chat request: a forced call, calls or a JSON answer,
/// or the output constraint alone.
pub fn chat_spec(
    output: &OutputConstraint,
    tools: &ToolRequest,
    format: ToolCallFormat,
) -> Option<GrammarRequest> {
    let functions: Vec<_> = match &tools.choice {
        ToolChoice::Function(name) => tools.functions.iter().filter(|f| &f.name == name).collect(),
        _ => tools.functions.iter().collect(),
    };
    let lark = |g: String| GrammarRequest {
        spec: GrammarSpec::Lark(g),
        param: "tools".into(),
    };
    match &tools.choice {
        ToolChoice::Required | ToolChoice::Function(_) if !functions.is_empty() => {
            // One named function: one call, whatever `parallel_tool_calls` says.
            let parallel = tools.parallel && tools.choice == ToolChoice::Required;
            Some(lark(forced_calls(format, &functions, parallel)))
        }
        ToolChoice::Auto if tools.calls_possible() => match &output.format {
            OutputFormat::JsonObject => Some(lark(calls_or_json(
                format,
                &functions,
                tools.parallel,
                &serde_json::json!({"type": "object"}),
                false,
            ))),
            OutputFormat::JsonSchema { schema, strict } => Some(lark(calls_or_json(
                format,
                &functions,
                tools.parallel,
                schema,
                *strict,
            ))),
            _ => output_spec(output),
        },
        _ => output_spec(output),
    }
}

/// Compiles `request` for the served model (blocking: run it off the
/// async threads).
pub fn compile(state: &AppState, request: &GrammarRequest) -> Result<Grammar, ApiError> {
    let compiler = state.capabilities.grammars.as_ref().map_err(|e| {
        ApiError::invalid(request.param.clone(), e.to_string())
            .with_code(ErrorCode::StructuredOutputUnavailable)
    })?;
    compiler.compile(&request.spec).map_err(|e| match e {
        GrammarError::Invalid(message) => ApiError::invalid(
            request.param.clone(),
            format!("`{}` cannot be enforced: {message}", request.param),
        ),
        other => ApiError::invalid(request.param.clone(), other.to_string()),
    })
}
