//! The grammar of a forced tool call (`tool_choice: required` or a named
//! function), in the model's own call format: a Lark grammar whose call
//! bodies embed each function's `parameters` schema, so a forced call
//! always names an offered function and carries valid arguments. With
//! `parallel_tool_calls`, one turn may hold several calls.

use pagoda_api::Function;
use pagoda_engine::lark_json;

use crate::capabilities::tool_format::ToolCallFormat;

/// A Lark string literal of `s`.
fn literal(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The JSON of one call of `f`: `{"name": …, "<key>": arguments}`.
fn call_object(f: &Function, key: &str) -> String {
    let (parameters, defs) = nested_under(&f.parameters, key);
    let mut schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"const": f.name},
            key: parameters,
        },
        "required": ["name", key],
        "additionalProperties": false,
    });
    for (name, value) in defs {
        schema[name] = value;
    }
    lark_json(&schema, f.strict)
}

/// `parameters` made ready to sit at `properties.<key>` of a wrapper
/// schema: its `$defs` / `definitions` come out (to go at the wrapper's
/// root, where `#/$defs/…` references then resolve, as pydantic writes
/// them), and its other local references (`#`, `#/properties/…`) are
/// rewritten to point under `properties.<key>`.
fn nested_under(
    parameters: &serde_json::Value,
    key: &str,
) -> (serde_json::Value, Vec<(&'static str, serde_json::Value)>) {
    let mut schema = parameters.clone();
    let mut defs = Vec::new();
    if let Some(obj) = schema.as_object_mut() {
        for name in ["$defs", "definitions"] {
            if let Some(value) = obj.remove(name) {
                defs.push((name, value));
            }
        }
    }
    let base = format!("#/properties/{key}");
    rebase_refs(&mut schema, &base);
    for (_, value) in &mut defs {
        rebase_refs(value, &base);
    }
    (schema, defs)
}

/// Rewrites local `$ref`s other than into `$defs` / `definitions` to sit
/// under `base`.
fn rebase_refs(schema: &mut serde_json::Value, base: &str) {
    match schema {
        serde_json::Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    serde_json::Value::String(r) if k == "$ref" => {
                        let kept = r.starts_with("#/$defs/") || r.starts_with("#/definitions/");
                        if r == "#" {
                            *r = base.to_string();
                        } else if r.starts_with("#/") && !kept {
                            *r = format!("{base}{}", &r[1..]);
                        }
                    }
                    _ => rebase_refs(v, base),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, base)),
        _ => {}
    }
}

/// The Lark grammar of calls of `functions` (not empty) in `format`; with
/// `parallel`, one or more calls, otherwise exactly one. A function's own
/// `strict` decides how strictly its arguments follow `parameters`.
pub fn forced_calls(format: ToolCallFormat, functions: &[&Function], parallel: bool) -> String {
    let mut rules = Vec::new();
    let repeat = |call: &str, sep: &str| {
        if parallel {
            format!("{call} ({} {call})*", literal(sep))
        } else {
            call.to_string()
        }
    };
    let alternatives = |prefix: &str| {
        (0..functions.len())
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    match format {
        ToolCallFormat::Hermes
        | ToolCallFormat::Llama3Json
        | ToolCallFormat::Json
        | ToolCallFormat::Mistral => {
            let key = if format == ToolCallFormat::Llama3Json {
                "parameters"
            } else {
                "arguments"
            };
            for (i, f) in functions.iter().enumerate() {
                rules.push(format!("fn{i}: {}", call_object(f, key)));
            }
            rules.push(format!("body: {}", alternatives("fn")));
            let start = match format {
                ToolCallFormat::Hermes => {
                    rules.push(format!(
                        "call: {} body {}",
                        literal("<tool_call>\n"),
                        literal("\n</tool_call>")
                    ));
                    repeat("call", "\n")
                }
                ToolCallFormat::Llama3Json => repeat("body", "; "),
                // Always an array, as Mistral models write their calls (the
                // `[TOOL_CALLS]` control token before it is not forced: a
                // grammar cannot spell a control token, and the parser
                // reads the array without it).
                ToolCallFormat::Mistral => format!("\"[\" {} \"]\"", repeat("body", ", ")),
                _ if parallel => format!("\"[\" {} \"]\"", repeat("body", ", ")),
                _ => "body".into(),
            };
            rules.insert(0, format!("start: {start}"));
        }
        ToolCallFormat::DeepSeek => {
            for (i, f) in functions.iter().enumerate() {
                let head = format!("{}\n```json\n", f.name);
                rules.push(format!(
                    "fn{i}: {} {}",
                    literal(&head),
                    lark_json(&f.parameters, f.strict)
                ));
            }
            rules.push(format!(
                "call: {} ({}) {}",
                literal("<｜tool▁call▁begin｜>function<｜tool▁sep｜>"),
                alternatives("fn"),
                literal("\n```<｜tool▁call▁end｜>")
            ));
            rules.insert(
                0,
                format!(
                    "start: {} {} {}",
                    literal("<｜tool▁calls▁begin｜>"),
                    repeat("call", "\n"),
                    literal("<｜tool▁calls▁end｜>")
                ),
            );
        }
    }
    rules.join("\n")
}

/// The Lark grammar of an answer that is either calls of `functions` (as
/// [`forced_calls`]) or JSON valid against `answer` (a `tool_choice: auto`
/// request that also asks for a JSON response).
pub fn calls_or_json(
    format: ToolCallFormat,
    functions: &[&Function],
    parallel: bool,
    answer: &serde_json::Value,
    strict: bool,
) -> String {
    let calls = forced_calls(format, functions, parallel).replacen("start:", "calls:", 1);
    format!(
        "start: calls | answer\nanswer: {}\n{calls}",
        lark_json(answer, strict)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str) -> Function {
        let parameters = serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        });
        Function {
            name: name.into(),
            description: None,
            definition: serde_json::json!({"type": "function", "function": {"name": name, "parameters": parameters}}),
            parameters,
            strict: false,
        }
    }

    #[test]
    fn every_format_names_each_function_and_repeats_only_when_parallel() {
        let (a, b) = (function("get_weather"), function("get_time"));
        for format in [
            ToolCallFormat::Hermes,
            ToolCallFormat::Llama3Json,
            ToolCallFormat::DeepSeek,
            ToolCallFormat::Mistral,
            ToolCallFormat::Json,
        ] {
            let one = forced_calls(format, &[&a, &b], false);
            let many = forced_calls(format, &[&a, &b], true);
            assert!(one.starts_with("start:"), "{one}");
            for g in [&one, &many] {
                assert!(g.contains("get_weather") && g.contains("get_time"), "{g}");
            }
            assert!(!one.lines().next().unwrap_or("").contains(")*"), "{one}");
            assert!(many.lines().next().unwrap_or("").contains(")*"), "{many}");
        }
        let g = calls_or_json(
            ToolCallFormat::Hermes,
            &[&a],
            true,
            &serde_json::json!({"type": "object"}),
            false,
        );
        assert!(g.starts_with("start: calls | answer\n"), "{g}");
        assert_eq!(g.matches("calls:").count(), 1, "{g}");
    }

    #[test]
    fn definitions_move_to_the_root_and_local_references_follow() {
        let parameters = serde_json::json!({
            "type": "object",
            "properties": {
                "home": {"$ref": "#/$defs/City"},
                "others": {"type": "array", "items": {"$ref": "#/properties/home"}},
                "next": {"$ref": "#"},
            },
            "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}}},
        });
        let (schema, defs) = nested_under(&parameters, "arguments");
        assert!(schema.get("$defs").is_none());
        assert_eq!(schema["properties"]["home"]["$ref"], "#/$defs/City");
        assert_eq!(
            schema["properties"]["others"]["items"]["$ref"],
            "#/properties/arguments/properties/home"
        );
        assert_eq!(
            schema["properties"]["next"]["$ref"],
            "#/properties/arguments"
        );
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].0, "$defs");
        let mut f = function("save");
        f.parameters = parameters;
        let g = forced_calls(ToolCallFormat::Hermes, &[&f], false);
        assert!(g.contains("\"$defs\":{\"City\""), "{g}");
    }
}
