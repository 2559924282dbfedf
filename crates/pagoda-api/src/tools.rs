//! `tools`, `tool_choice` and `parallel_tool_calls` of a chat request,
//! checked: function names well formed and unique, parameters an object
//! schema, a named `tool_choice` one of the tools.

use crate::error::ApiError;
use crate::wire::ToolDefinition;

/// Longest function name OpenAI accepts.
pub const MAX_FUNCTION_NAME: usize = 64;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Its name (letters, digits, `_`, `-`).
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// The JSON schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
    /// Whether `parameters` is enforced strictly when a call is forced.
    pub strict: bool,
    /// The entry as the client sent it, for the chat template's `tools`.
    pub definition: serde_json::Value,
}

/// What the model may or must do with the tools.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// No calls (the default without tools).
    #[default]
    None,
    /// Answer or call, as the model decides (the default with tools).
    Auto,
    /// At least one call, forced.
    Required,
    /// A call of this function, forced.
    Function(String),
}

/// The checked tool fields of a chat request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolRequest {
    /// The functions on offer.
    pub functions: Vec<Function>,
    /// What the model may do with them.
    pub choice: ToolChoice,
    /// Whether one turn may hold several calls.
    pub parallel: bool,
}

impl ToolRequest {
    /// Whether calls may appear in the output at all.
    pub fn calls_possible(&self) -> bool {
        self.choice != ToolChoice::None && !self.functions.is_empty()
    }

    /// Whether the output must be calls.
    pub fn calls_forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FUNCTION_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn function(i: usize, tool: ToolDefinition) -> Result<Function, ApiError> {
    let at = format!("tools[{i}]");
    if tool.kind != "function" {
        return Err(ApiError::invalid(
            format!("{at}.type"),
            format!("unknown tool type `{}` (only `function`)", tool.kind),
        ));
    }
    let f = tool.function.ok_or_else(|| {
        ApiError::invalid(format!("{at}.function"), "a function tool needs `function`")
    })?;
    let name = f.name.unwrap_or_default();
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            format!("{at}.function.name"),
            format!(
                "function names are 1 to {MAX_FUNCTION_NAME} letters, digits, `_` or `-`; got {name:?}"
            ),
        ));
    }
    let parameters = f
        .parameters
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(ApiError::invalid(
            format!("{at}.function.parameters"),
            "`parameters` must be a JSON schema object",
        ));
    }
    // In OpenAI's order (templates print the definitions as JSON).
    let mut definition = serde_json::Map::new();
    definition.insert("name".into(), name.clone().into());
    if let Some(d) = &f.description {
        definition.insert("description".into(), d.clone().into());
    }
    definition.insert("parameters".into(), parameters.clone());
    if let Some(strict) = f.strict {
        definition.insert("strict".into(), strict.into());
    }
    Ok(Function {
        name,
        description: f.description,
        parameters,
        strict: f.strict.unwrap_or(false),
        definition: serde_json::json!({"type": "function", "function": definition}),
    })
}

fn choice(v: Option<serde_json::Value>, has_tools: bool) -> Result<ToolChoice, ApiError> {
    let bad = |msg: String| ApiError::invalid("tool_choice", msg);
    let Some(v) = v else {
        return Ok(if has_tools {
            ToolChoice::Auto
        } else {
            ToolChoice::None
        });
    };
    match &v {
        serde_json::Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!(
                "unknown tool_choice `{other}` (none, auto, required, or a function)"
            ))),
        },
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) != Some("function") {
                return Err(bad(
                    "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": …}}"
                        .into(),
                ));
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("a named tool_choice needs `function.name`".into()))?;
            Ok(ToolChoice::Function(name.to_string()))
        }
        _ => Err(bad("`tool_choice` must be a string or an object".into())),
    }
}

/// Checks the tool fields of a chat request.
pub fn tool_request(
    tools: Option<Vec<ToolDefinition>>,
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<bool>,
) -> Result<ToolRequest, ApiError> {
    let functions = tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| function(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, f) in functions.iter().enumerate() {
        if functions[..i].iter().any(|g| g.name == f.name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!("two tools are named `{}`", f.name),
            ));
        }
    }
    let choice = choice(tool_choice, !functions.is_empty())?;
    match &choice {
        ToolChoice::Required if functions.is_empty() => {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice: required` needs `tools`",
            ))
        }
        ToolChoice::Function(name) if !functions.iter().any(|f| &f.name == name) => {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("tool_choice names `{name}`, which is not one of `tools`"),
            ))
        }
        _ => {}
    }
    Ok(ToolRequest {
        functions,
        choice,
        parallel: parallel_tool_calls.unwrap_or(true),
    })
}
