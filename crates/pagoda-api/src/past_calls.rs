//! The `tool_calls` of earlier assistant turns, checked: each a function
//! call with a name and its arguments, so that rendering them back into
//! the prompt cannot meet a malformed entry.

use crate::error::ApiError;

/// One call an earlier assistant turn made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastCall {
    /// Its id (what the `tool` message answering it names); may be empty.
    pub id: String,
    /// The function called.
    pub name: String,
    /// The arguments as the JSON text OpenAI sends (an object sent in their
    /// place is written out as JSON).
    pub arguments: String,
}

impl PastCall {
    /// The arguments parsed, or the text itself when it is not JSON.
    pub fn argument_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.arguments).unwrap_or_else(|_| self.arguments.clone().into())
    }
}

/// Checks `messages[i].tool_calls`.
pub fn past_calls(i: usize, value: serde_json::Value) -> Result<Vec<PastCall>, ApiError> {
    let at = format!("messages[{i}].tool_calls");
    let serde_json::Value::Array(entries) = value else {
        return Err(ApiError::invalid(at, "`tool_calls` must be a list"));
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(j, entry)| call(&format!("{at}[{j}]"), entry))
        .collect()
}

fn call(at: &str, entry: serde_json::Value) -> Result<PastCall, ApiError> {
    let serde_json::Value::Object(mut entry) = entry else {
        return Err(ApiError::invalid(at, "a tool call must be an object"));
    };
    match entry.get("type") {
        None | Some(serde_json::Value::Null) => {}
        Some(t) if t == "function" => {}
        Some(t) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("unknown tool call type {t} (only `function`)"),
            ))
        }
    }
    let id = match entry.remove("id") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(id)) => id,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.id"),
                "a tool call's `id` must be a string",
            ))
        }
    };
    let Some(serde_json::Value::Object(mut function)) = entry.remove("function") else {
        return Err(ApiError::invalid(
            format!("{at}.function"),
            "a tool call needs a `function` object",
        ));
    };
    let name = match function.remove("name") {
        Some(serde_json::Value::String(name)) if !name.is_empty() => name,
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.function.name"),
                "a tool call needs the function's `name`",
            ))
        }
    };
    let arguments = match function.remove("arguments") {
        None | Some(serde_json::Value::Null) => "{}".to_string(),
        Some(serde_json::Value::String(text)) => text,
        Some(object @ serde_json::Value::Object(_)) => object.to_string(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.function.arguments"),
                "`arguments` must be a JSON string",
            ))
        }
    };
    Ok(PastCall {
        id,
        name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(v: serde_json::Value) -> Option<String> {
        past_calls(2, v).err().and_then(|e| e.param)
    }

    #[test]
    fn well_formed_calls_pass_and_malformed_ones_name_the_field() {
        let ok = past_calls(
            0,
            serde_json::json!([
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                {"function": {"name": "g", "arguments": {"b": 2}}}
            ]),
        )
        .expect("valid");
        assert_eq!(ok[0].argument_value()["a"], 1);
        assert_eq!(
            (ok[1].id.as_str(), ok[1].arguments.as_str()),
            ("", "{\"b\":2}")
        );
        let cases = [
            (serde_json::json!({}), "messages[2].tool_calls"),
            (serde_json::json!([1]), "messages[2].tool_calls[0]"),
            (serde_json::json!(["x"]), "messages[2].tool_calls[0]"),
            (
                serde_json::json!([{"function": "f"}]),
                "messages[2].tool_calls[0].function",
            ),
            (
                serde_json::json!([{"function": {}}]),
                "messages[2].tool_calls[0].function.name",
            ),
            (
                serde_json::json!([{"function": {"name": "f", "arguments": 3}}]),
                "messages[2].tool_calls[0].function.arguments",
            ),
            (
                serde_json::json!([{"type": "x", "function": {"name": "f"}}]),
                "messages[2].tool_calls[0].type",
            ),
            (
                serde_json::json!([{"id": 1, "function": {"name": "f"}}]),
                "messages[2].tool_calls[0].id",
            ),
        ];
        for (value, want) in cases {
            assert_eq!(param(value.clone()).as_deref(), Some(want), "{value}");
        }
    }
}
