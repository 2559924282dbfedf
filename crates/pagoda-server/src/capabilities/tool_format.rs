//! Which markup a model writes its tool calls in: detected from its chat
//! template, or named in the configuration. The parser of each format is
//! in `output::tool_calls`.

/// How a model writes tool calls in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes, Qwen).
    Hermes,
    /// Bare `{"name": …, "parameters": {…}}` objects, maybe after
    /// `<|python_tag|>` and separated by `;` (Llama 3.1 and later).
    Llama3Json,
    /// DeepSeek R1's `<｜tool▁calls▁begin｜>` … markup.
    DeepSeek,
    /// Generic fallback: the whole output is a call object or an array of them.
    Json,
}

impl ToolCallFormat {
    /// Every accepted name, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "hermes",
        "qwen",
        "llama3_json",
        "llama3",
        "deepseek",
        "deepseek_r1",
        "json",
    ];

    /// Detects the format from a chat template's source.
    pub fn detect(template_source: &str) -> Self {
        let t = template_source;
        if t.contains("<｜tool▁calls▁begin｜>") {
            Self::DeepSeek
        } else if t.contains("<tool_call>") {
            Self::Hermes
        } else if t.contains("<|python_tag|>")
            || (t.contains("\"parameters\"") && (t.contains("<|eot_id|>") || t.contains("ipython")))
        {
            Self::Llama3Json
        } else {
            Self::Json
        }
    }

    /// Parses a configuration or command-line name (see [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hermes" | "qwen" => Some(Self::Hermes),
            "llama3_json" | "llama3" => Some(Self::Llama3Json),
            "deepseek" | "deepseek_r1" => Some(Self::DeepSeek),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The canonical name (used in logs and error messages).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::DeepSeek => "deepseek",
            Self::Json => "json",
        }
    }

    /// Whether an assistant turn's `tool_calls[].function.arguments` reach
    /// this format's chat template as a parsed JSON object (Hermes/Qwen and
    /// Llama 3 templates apply `tojson` to them) rather than as the JSON
    /// string OpenAI sends (DeepSeek's template concatenates the string; the
    /// generic fallback keeps it).
    pub fn template_wants_argument_objects(self) -> bool {
        matches!(self, Self::Hermes | Self::Llama3Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::template_fixture;

    fn template(name: &str) -> String {
        template_fixture(&format!("{name}.jinja"))
    }

    #[test]
    fn formats_are_detected_from_real_templates() {
        assert_eq!(
            ToolCallFormat::detect(&template("deepseek-r1-distill-qwen")),
            ToolCallFormat::DeepSeek
        );
        assert_eq!(
            ToolCallFormat::detect(&template("llama3.1")),
            ToolCallFormat::Llama3Json
        );
        assert_eq!(
            ToolCallFormat::detect(&template("smollm2")),
            ToolCallFormat::Json
        );
        // Qwen 2's template has no tools section.
        assert_eq!(
            ToolCallFormat::detect(&template("qwen2")),
            ToolCallFormat::Json
        );
    }

    #[test]
    fn hermes_is_detected_from_its_tool_call_tags() {
        let qwen25 = r#"{%- for tool_call in message.tool_calls %}{{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}{%- endfor %}"#;
        assert_eq!(ToolCallFormat::detect(qwen25), ToolCallFormat::Hermes);
        assert_eq!(ToolCallFormat::detect(""), ToolCallFormat::Json);
    }

    #[test]
    fn names_round_trip() {
        for &name in ToolCallFormat::NAMES {
            let format = ToolCallFormat::from_name(name).expect("a listed name parses");
            assert_eq!(ToolCallFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(
            ToolCallFormat::from_name("qwen"),
            Some(ToolCallFormat::Hermes)
        );
        assert_eq!(
            ToolCallFormat::from_name("deepseek_r1"),
            Some(ToolCallFormat::DeepSeek)
        );
        assert_eq!(ToolCallFormat::from_name("mistral"), None);
        assert!(ToolCallFormat::Hermes.template_wants_argument_objects());
        assert!(ToolCallFormat::Llama3Json.template_wants_argument_objects());
        assert!(!ToolCallFormat::DeepSeek.template_wants_argument_objects());
        assert!(!ToolCallFormat::Json.template_wants_argument_objects());
    }
}
