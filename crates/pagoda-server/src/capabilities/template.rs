//! What the served chat template renders of tool use, read once at load
//! (not rescanned per request).

use pagoda_models::{ChatTemplate, RenderOptions};

/// What a chat template renders of tool use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TemplateSupport {
    /// It reads the `tools` variable (function definitions).
    pub tools: bool,
    /// It renders assistant turns' `tool_calls`.
    pub calls: bool,
    /// It renders `tool` messages (tool results). Gemma's template refuses
    /// any role but user and assistant, Phi-3's drops the others silently:
    /// for those, results go in as user turns.
    pub results: bool,
}

/// The text of the probe result: found in the rendering only when the
/// template renders tool messages.
const PROBE_RESULT: &str = "pagoda-probe-result-7f3a";

impl TemplateSupport {
    /// What `template` renders: `tools` and `tool_calls` from its source,
    /// tool results by rendering a short conversation that ends with one.
    pub fn of(template: &ChatTemplate) -> Self {
        let source = template.source();
        let probe = serde_json::json!([
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
            // Nine letters and digits: Mistral's templates refuse others.
            {"role": "tool", "tool_call_id": "abcdefghi", "content": PROBE_RESULT}
        ]);
        let results = template
            .render(
                probe.as_array().map(Vec::as_slice).unwrap_or_default(),
                &RenderOptions::default(),
            )
            .is_ok_and(|text| text.contains(PROBE_RESULT));
        Self {
            tools: source.contains("tools"),
            calls: source.contains("tool_calls"),
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::template_fixture;

    fn support(name: &str) -> TemplateSupport {
        let source = template_fixture(&format!("{name}.jinja"));
        TemplateSupport::of(&ChatTemplate::new(&source, "<s>", "</s>").expect("template"))
    }

    #[test]
    fn real_templates_say_what_they_render() {
        for (name, tools, calls, results) in [
            ("qwen3", true, true, true),
            ("mistral-nemo", true, true, true),
            ("llama3.1", true, true, true),
            ("deepseek-r1-distill-qwen", false, true, true),
            // ChatML renders any role.
            ("smollm2", false, false, true),
            ("gemma3", false, false, false),
            ("phi3.5", false, false, false),
        ] {
            assert_eq!(
                support(name),
                TemplateSupport {
                    tools,
                    calls,
                    results
                },
                "{name}"
            );
        }
    }
}
