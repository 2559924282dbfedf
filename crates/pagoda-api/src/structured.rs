//! What shape the output must take: `response_format` and the vLLM-style
//! extensions (`structured_outputs`, `guided_json`, `guided_regex`,
//! `guided_grammar`, `guided_choice`), checked into one [`OutputFormat`]
//! with the parameter it came from (grammar errors found later name it).

use crate::error::ApiError;
use crate::wire::{CommonFields, ResponseFormat, StructuredOutputs};

/// The constraint on a request's output.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against a schema.
    JsonSchema {
        /// The schema.
        schema: serde_json::Value,
        /// Every keyword enforced (OpenAI's `strict`).
        strict: bool,
    },
    /// Text matching a regular expression.
    Regex(String),
    /// Text of a Lark grammar.
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// A checked output constraint and the parameter that set it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutputConstraint {
    /// What the output must be.
    pub format: OutputFormat,
    /// The request field it came from (for errors), e.g.
    /// `response_format.json_schema.schema`.
    pub param: String,
}

impl OutputConstraint {
    /// Whether the output is constrained at all.
    pub fn is_constrained(&self) -> bool {
        self.format != OutputFormat::Text
    }
}

/// A schema given as an object, or as its JSON text.
fn schema_value(param: &str, v: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    let v = match v {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::invalid(param, format!("`{param}` is not valid JSON: {e}")))?,
        v => v,
    };
    if !(v.is_object() || v.is_boolean()) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON schema (an object)"),
        ));
    }
    Ok(v)
}

fn response_format(f: ResponseFormat) -> Result<OutputConstraint, ApiError> {
    let format = match f.kind.as_str() {
        "text" => OutputFormat::Text,
        "json_object" => OutputFormat::JsonObject,
        "json_schema" => {
            let js = f.json_schema.ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema",
                    "`json_schema` is required with type `json_schema`",
                )
            })?;
            let param = "response_format.json_schema.schema";
            let schema = js
                .schema
                .map(|s| schema_value(param, s))
                .transpose()?
                // OpenAI allows a format without a schema: any JSON object.
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            return Ok(OutputConstraint {
                format: OutputFormat::JsonSchema {
                    schema,
                    strict: js.strict.unwrap_or(false),
                },
                param: param.into(),
            });
        }
        other => {
            return Err(ApiError::invalid(
                "response_format.type",
                format!(
                    "unknown response_format type `{other}` (text, json_object or json_schema)"
                ),
            ))
        }
    };
    Ok(OutputConstraint {
        format,
        param: "response_format".into(),
    })
}

fn choice(param: &str, choices: Vec<String>) -> Result<OutputFormat, ApiError> {
    if choices.is_empty() || choices.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` needs at least one choice, none empty"),
        ));
    }
    Ok(OutputFormat::Choice(choices))
}

fn structured_outputs(s: StructuredOutputs) -> Result<Vec<OutputConstraint>, ApiError> {
    let mut found = Vec::new();
    let mut add = |param: &str, format: OutputFormat| {
        found.push(OutputConstraint {
            format,
            param: param.into(),
        })
    };
    if let Some(json) = s.json {
        let p = "structured_outputs.json";
        add(
            p,
            OutputFormat::JsonSchema {
                schema: schema_value(p, json)?,
                strict: true,
            },
        );
    }
    if let Some(rx) = s.regex {
        add("structured_outputs.regex", OutputFormat::Regex(rx));
    }
    if let Some(g) = s.grammar {
        add("structured_outputs.grammar", OutputFormat::Lark(g));
    }
    if let Some(c) = s.choice {
        let p = "structured_outputs.choice";
        add(p, choice(p, c)?);
    }
    if s.json_object == Some(true) {
        add("structured_outputs.json_object", OutputFormat::JsonObject);
    }
    Ok(found)
}

/// Reads the output constraint of either endpoint; more than one is an
/// error naming the second.
pub fn output_constraint(c: &mut CommonFields) -> Result<OutputConstraint, ApiError> {
    let mut found = Vec::new();
    if let Some(f) = c.response_format.take() {
        let f = response_format(f)?;
        if f.is_constrained() {
            found.push(f);
        }
    }
    if let Some(s) = c.structured_outputs.take() {
        found.extend(structured_outputs(s)?);
    }
    if let Some(json) = c.guided_json.take() {
        found.push(OutputConstraint {
            format: OutputFormat::JsonSchema {
                schema: schema_value("guided_json", json)?,
                strict: true,
            },
            param: "guided_json".into(),
        });
    }
    if let Some(rx) = c.guided_regex.take() {
        found.push(OutputConstraint {
            format: OutputFormat::Regex(rx),
            param: "guided_regex".into(),
        });
    }
    if let Some(g) = c.guided_grammar.take() {
        found.push(OutputConstraint {
            format: OutputFormat::Lark(g),
            param: "guided_grammar".into(),
        });
    }
    if let Some(ch) = c.guided_choice.take() {
        found.push(OutputConstraint {
            format: choice("guided_choice", ch)?,
            param: "guided_choice".into(),
        });
    }
    match found.len() {
        0 => Ok(OutputConstraint::default()),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::invalid(
            found[1].param.clone(),
            format!(
                "only one output constraint per request: `{}` and `{}` were both given",
                found[0].param, found[1].param
            ),
        )),
    }
}
