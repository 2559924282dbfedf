//! What a chat request gives the chat template: its messages (assistant
//! turns with `tool_calls`, tool results with `tool_call_id`) and its
//! `tools`. A template that takes `tools` gets them as they were sent; for
//! one that does not (SmolLM2's, DeepSeek-R1's), the functions and the call
//! format are described in the system message instead. Earlier calls reach
//! a template that renders `tool_calls` as such; for one that does not,
//! they are written into their assistant turns the way the model was told
//! to write them.

use pagoda_api::{PastCall, ToolChoice, ValidChat, ValidMessage};

use crate::capabilities::template::TemplateSupport;
use crate::capabilities::tool_format::ToolCallFormat;

/// The template input of one request.
pub struct ChatPrompt {
    /// The messages.
    pub messages: Vec<serde_json::Value>,
    /// The template's `tools`, when it takes them and calls are possible.
    pub tools: Option<serde_json::Value>,
}

/// Builds the template input of `req` for a model writing calls in `format`
/// through a template that renders what `support` says.
pub fn chat_prompt(
    req: &ValidChat,
    format: ToolCallFormat,
    support: TemplateSupport,
) -> ChatPrompt {
    let mut messages: Vec<serde_json::Value> = if support.results {
        req.messages
            .iter()
            .map(|m| message(m, format, support.calls))
            .collect()
    } else {
        results_as_user_turns(req, format, support.calls)
    };
    let offered = req.tools.calls_possible();
    let definitions = || {
        serde_json::Value::Array(
            req.tools
                .functions
                .iter()
                .map(|f| f.definition.clone())
                .collect(),
        )
    };
    if offered && !support.tools {
        let forced = req.tools.choice != ToolChoice::Auto;
        let text = instructions(format, &definitions(), forced);
        match messages.first_mut() {
            Some(first) if first["role"] == "system" => {
                let content = first["content"].as_str().unwrap_or_default();
                first["content"] = format!("{content}\n\n{text}").trim_start().into();
            }
            _ => messages.insert(0, serde_json::json!({"role": "system", "content": text})),
        }
    }
    ChatPrompt {
        messages,
        tools: (offered && support.tools).then(definitions),
    }
}

/// The system text that offers `functions` to a model whose template
/// cannot: the list, and how to write a call.
fn instructions(format: ToolCallFormat, functions: &serde_json::Value, forced: bool) -> String {
    let example = match format {
        ToolCallFormat::Hermes => {
            "<tool_call>\n{\"name\": \"<function name>\", \"arguments\": {<arguments>}}\n</tool_call>"
        }
        ToolCallFormat::Llama3Json => {
            "{\"name\": \"<function name>\", \"parameters\": {<arguments>}}"
        }
        ToolCallFormat::DeepSeek => {
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜><function name>\n```json\n{<arguments>}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
        }
        ToolCallFormat::Mistral => {
            "[TOOL_CALLS][{\"name\": \"<function name>\", \"arguments\": {<arguments>}}]"
        }
        ToolCallFormat::Json => "{\"name\": \"<function name>\", \"arguments\": {<arguments>}}",
    };
    let when = if forced {
        "Reply with a function call only."
    } else {
        "To call a function, reply with the call only; otherwise answer normally."
    };
    format!("You can call these functions:\n{functions}\n\n{when} A call is written as:\n{example}")
}

/// The messages for a template that renders no `tool` messages (Gemma's,
/// Phi-3's): each run of tool results becomes one user turn, a result per
/// paragraph named by the function it answers, so the roles still
/// alternate and nothing the client sent is dropped.
fn results_as_user_turns(
    req: &ValidChat,
    format: ToolCallFormat,
    native: bool,
) -> Vec<serde_json::Value> {
    let function_of = |id: &str| {
        req.messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == id)
            .map_or_else(|| "a function".to_string(), |c| format!("`{}`", c.name))
    };
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut results: Vec<String> = Vec::new();
    let flush = |results: &mut Vec<String>, out: &mut Vec<serde_json::Value>| {
        if !results.is_empty() {
            let content = results.join("\n\n");
            out.push(serde_json::json!({"role": "user", "content": content}));
            results.clear();
        }
    };
    for m in &req.messages {
        if m.role == pagoda_api::Role::Tool {
            let id = m.tool_call_id.as_deref().unwrap_or_default();
            results.push(format!("Result of {}:\n{}", function_of(id), m.content));
        } else {
            flush(&mut results, &mut out);
            out.push(message(m, format, native));
        }
    }
    flush(&mut results, &mut out);
    out
}

/// One message as the template sees it; `native`: the template renders
/// `tool_calls`.
fn message(m: &ValidMessage, format: ToolCallFormat, native: bool) -> serde_json::Value {
    let calls = &m.tool_calls;
    // An assistant turn that only calls has null content for DeepSeek's
    // template (it renders the calls only then) and empty content for the
    // others (Qwen3's fails on null: it looks for `</think>` in it).
    let content: serde_json::Value = match (calls.is_empty(), native) {
        (false, false) => written_calls(calls, format, &m.content).into(),
        (false, true) if m.content.is_empty() && format == ToolCallFormat::DeepSeek => {
            serde_json::Value::Null
        }
        _ => m.content.clone().into(),
    };
    let mut v = serde_json::json!({"role": m.role.template_name(), "content": content});
    if let Some(name) = &m.name {
        v["name"] = name.clone().into();
    }
    if !calls.is_empty() && native {
        v["tool_calls"] = template_calls(calls, format);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = format.template_call_id(id).into();
    }
    if let Some(r) = &m.reasoning_content {
        v["reasoning_content"] = r.clone().into();
    }
    v
}

/// The calls as the template expects them: OpenAI's shape, with the
/// arguments parsed into an object for templates that apply `tojson` to
/// them (the JSON string stays when it does not parse).
fn template_calls(calls: &[PastCall], format: ToolCallFormat) -> serde_json::Value {
    calls
        .iter()
        .map(|c| {
            let arguments = if format.template_wants_argument_objects() {
                c.argument_value()
            } else {
                c.arguments.clone().into()
            };
            serde_json::json!({
                "id": format.template_call_id(&c.id),
                "type": "function",
                "function": {"name": c.name, "arguments": arguments},
            })
        })
        .collect()
}

/// An earlier turn's calls written as text in `format`, after its content.
fn written_calls(calls: &[PastCall], format: ToolCallFormat, content: &str) -> String {
    let parsed: Vec<(String, serde_json::Value)> = calls
        .iter()
        .map(|c| (c.name.clone(), c.argument_value()))
        .collect();
    let object = |key: &str, (name, args): &(String, serde_json::Value)| {
        serde_json::json!({"name": name, key: args}).to_string()
    };
    let text = match format {
        ToolCallFormat::Hermes => parsed
            .iter()
            .map(|c| format!("<tool_call>\n{}\n</tool_call>", object("arguments", c)))
            .collect::<Vec<_>>()
            .join("\n"),
        ToolCallFormat::Llama3Json => parsed
            .iter()
            .map(|c| object("parameters", c))
            .collect::<Vec<_>>()
            .join("; "),
        ToolCallFormat::DeepSeek => {
            let body: Vec<String> = parsed
                .iter()
                .map(|(name, args)| {
                    format!("<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>")
                })
                .collect();
            format!(
                "<｜tool▁calls▁begin｜>{}<｜tool▁calls▁end｜>",
                body.join("\n")
            )
        }
        ToolCallFormat::Mistral => {
            let list: Vec<String> = parsed.iter().map(|c| object("arguments", c)).collect();
            format!("[TOOL_CALLS][{}]", list.join(", "))
        }
        ToolCallFormat::Json if parsed.len() == 1 => object("arguments", &parsed[0]),
        ToolCallFormat::Json => {
            let list: Vec<String> = parsed.iter().map(|c| object("arguments", c)).collect();
            format!("[{}]", list.join(", "))
        }
    };
    if content.is_empty() {
        text
    } else {
        format!("{content}\n{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: TemplateSupport = TemplateSupport {
        tools: true,
        calls: true,
        results: true,
    };
    const PLAIN: TemplateSupport = TemplateSupport {
        tools: false,
        calls: false,
        results: true,
    };

    fn chat(json: serde_json::Value) -> ValidChat {
        pagoda_api::parse_chat(json.to_string().as_bytes()).expect("valid")
    }

    fn history() -> serde_json::Value {
        serde_json::json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        })
    }

    #[test]
    fn native_templates_get_tools_and_calls_in_openai_shape() {
        let p = chat_prompt(&chat(history()), ToolCallFormat::Hermes, NATIVE);
        assert_eq!(
            p.tools.as_ref().and_then(|t| t.as_array()).map(Vec::len),
            Some(1)
        );
        let turn = &p.messages[1];
        assert_eq!(turn["content"], "");
        // Hermes templates apply `tojson` to the arguments: an object.
        assert_eq!(
            turn["tool_calls"][0]["function"]["arguments"]["city"],
            "Paris"
        );
        assert_eq!(p.messages[2]["tool_call_id"], "call_1");
        // DeepSeek's concatenates the string, and needs null content.
        let p = chat_prompt(&chat(history()), ToolCallFormat::DeepSeek, NATIVE);
        assert!(p.messages[1]["content"].is_null());
        assert_eq!(
            p.messages[1]["tool_calls"][0]["function"]["arguments"],
            "{\"city\": \"Paris\"}"
        );
    }

    #[test]
    fn other_templates_get_the_functions_in_the_system_message() {
        let p = chat_prompt(&chat(history()), ToolCallFormat::Json, PLAIN);
        assert!(p.tools.is_none());
        assert_eq!(p.messages[0]["role"], "system");
        let system = p.messages[0]["content"].as_str().expect("text");
        assert!(
            system.contains("get_weather") && system.contains("\"arguments\""),
            "{system}"
        );
        assert_eq!(
            p.messages[2]["content"],
            r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#
        );
        // tool_choice none: nothing is offered.
        let mut none = history();
        none["tool_choice"] = "none".into();
        let p = chat_prompt(&chat(none), ToolCallFormat::Json, PLAIN);
        assert_eq!(p.messages[0]["role"], "user");
    }

    /// Gemma 3's and Phi-3.5's templates render no tool messages: the
    /// results come in as one user turn, named by the function they
    /// answer, the calls as the model was told to write them, and the
    /// roles still alternate (Gemma's template would refuse otherwise).
    #[test]
    fn results_reach_templates_without_a_tool_role_as_user_turns() {
        use crate::test_support::template_fixture as fixture;
        use pagoda_models::{ChatTemplate, RenderOptions};
        let mut req = history();
        let calls = &mut req["messages"][1]["tool_calls"];
        calls
            .as_array_mut()
            .expect("calls")
            .push(serde_json::json!({"id": "call_2", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}));
        req["messages"]
            .as_array_mut()
            .expect("messages")
            .push(serde_json::json!({"role": "tool", "tool_call_id": "call_2", "content": "24 C"}));
        for name in ["gemma3", "phi3.5"] {
            let template = ChatTemplate::new(&fixture(&format!("{name}.jinja")), "<bos>", "<eos>")
                .expect("template");
            let support = TemplateSupport::of(&template);
            assert!(!support.results, "{name}");
            let p = chat_prompt(&chat(req.clone()), ToolCallFormat::Json, support);
            let roles: Vec<&str> = p
                .messages
                .iter()
                .filter_map(|m| m["role"].as_str())
                .collect();
            assert_eq!(roles, ["system", "user", "assistant", "user"], "{name}");
            assert_eq!(
                p.messages[3]["content"],
                "Result of `get_weather`:\n18 C\n\nResult of `get_weather`:\n24 C"
            );
            let text = template
                .render(
                    &p.messages,
                    &RenderOptions {
                        add_generation_prompt: true,
                        ..Default::default()
                    },
                )
                .expect("renders");
            for needle in ["18 C", "24 C", "\"city\":\"Rome\"", "get_weather"] {
                assert!(text.contains(needle), "{name}: {needle} in {text}");
            }
        }
    }

    /// The real Llama 3.1, DeepSeek-R1, Qwen3 and Mistral Nemo templates render OpenAI requests
    /// carrying calls, results and offered tools exactly as transformers
    /// renders the same conversation (`scripts/make_fixtures.py
    /// --templates` wrote the expectations); R1's template has no `tools`,
    /// so there the functions come first, in the system message.
    #[test]
    fn real_templates_render_calls_and_results_as_transformers_does() {
        use crate::test_support::template_fixture as fixture;
        use pagoda_models::{ChatTemplate, RenderOptions};
        let requests: serde_json::Value =
            serde_json::from_str(&fixture("tool_requests.json")).expect("json");
        let expected: serde_json::Value =
            serde_json::from_str(&fixture("tool_requests.expected.json")).expect("json");
        let specials: serde_json::Value =
            serde_json::from_str(&fixture("specials.json")).expect("json");
        let mut checked = 0;
        for case in expected.as_array().expect("cases") {
            let name = case["template"].as_str().expect("template");
            let source = fixture(&format!("{name}.jinja"));
            let template = ChatTemplate::new(
                &source,
                specials[name]["bos_token"].as_str().expect("bos"),
                specials[name]["eos_token"].as_str().expect("eos"),
            )
            .expect("template");
            let request = requests
                .as_array()
                .expect("requests")
                .iter()
                .find(|r| r["name"] == case["request"])
                .expect("request");
            let req = chat(request["request"].clone());
            let format = ToolCallFormat::detect(&source);
            let support = TemplateSupport::of(&template);
            let prompt = chat_prompt(&req, format, support);
            let got = template.render(
                &prompt.messages,
                &RenderOptions {
                    add_generation_prompt: true,
                    tools: prompt.tools.clone(),
                    ..Default::default()
                },
            );
            let label = format!("{name} / {}", case["request"]);
            match (case.get("rendered").and_then(|v| v.as_str()), got) {
                (Some(want), Ok(got)) if req.tools.calls_possible() && !support.tools => {
                    let system = prompt.messages[0]["content"].as_str().expect("system");
                    assert!(system.contains("get_weather"), "{label}: {system}");
                    assert_eq!(got.replacen(system, "", 1), want, "{label}");
                }
                (Some(want), Ok(got)) => assert_eq!(got, want, "{label}"),
                (None, Err(_)) => {}
                (want, got) => panic!("{label}: expected {want:?}, got {got:?}"),
            }
            checked += 1;
        }
        assert_eq!(checked, 16);
    }
}
