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
    /// Mistral's `[TOOL_CALLS]` followed by a JSON array of call objects
    /// (Mistral 7B v0.3, Nemo, Mixtral 8x22B); call ids are nine letters
    /// and digits, as its templates require.
    Mistral,
    /// Generic fallback: the whole output is a call object or an array of them.
    Json,
}

impl ToolCallFormat {
    /// Detects the format from a chat template's source.
    pub fn detect(template_source: &str) -> Self {
        let t = template_source;
        if t.contains("<｜tool▁calls▁begin｜>") {
            Self::DeepSeek
        } else if t.contains("[TOOL_CALLS]") {
            Self::Mistral
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

    /// The canonical name (used in logs and error messages).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::DeepSeek => "deepseek",
            Self::Mistral => "mistral",
            Self::Json => "json",
        }
    }

    /// A fresh id for a call the model made: `call_` and 24 random letters
    /// and digits, or nine letters and digits for Mistral, whose templates
    /// refuse any other id when the call comes back in a later turn.
    pub fn new_call_id(self) -> String {
        use rand::distr::{Alphanumeric, SampleString};
        let mut rng = rand::rng();
        match self {
            Self::Mistral => Alphanumeric.sample_string(&mut rng, MISTRAL_ID_LEN),
            _ => format!("call_{}", Alphanumeric.sample_string(&mut rng, 24)),
        }
    }

    /// The id a client sent back (in an assistant turn's `tool_calls` or a
    /// tool result's `tool_call_id`) as this format's template takes it:
    /// unchanged, except for Mistral, which needs nine letters and digits:
    /// the id's last nine letters and digits (as vLLM truncates them),
    /// left-padded with `0` when it has fewer. The same id always maps to
    /// the same nine characters, so a call and its result still match.
    pub fn template_call_id(self, id: &str) -> String {
        match self {
            Self::Mistral => {
                let alnum: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
                let tail = &alnum[alnum.len().saturating_sub(MISTRAL_ID_LEN)..];
                let pad = MISTRAL_ID_LEN - tail.len();
                std::iter::repeat_n('0', pad)
                    .chain(tail.iter().copied())
                    .collect()
            }
            _ => id.to_string(),
        }
    }

    /// Whether an assistant turn's `tool_calls[].function.arguments` reach
    /// this format's chat template as a parsed JSON object (Hermes/Qwen and
    /// Llama 3 templates apply `tojson` to them) rather than as the JSON
    /// string OpenAI sends (DeepSeek's template concatenates the string; the
    /// generic fallback keeps it).
    pub fn template_wants_argument_objects(self) -> bool {
        matches!(self, Self::Hermes | Self::Llama3Json | Self::Mistral)
    }
}

/// The length of a Mistral tool-call id.
const MISTRAL_ID_LEN: usize = 9;

/// `--tool-call-parser`: a format by name, or `auto` (the chat template's).
/// Checked by the command line before the model loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolCallParserArg {
    /// The format the chat template writes (plain JSON without a template).
    Auto,
    /// `<tool_call>` JSON (Hermes, Qwen).
    #[value(alias = "qwen")]
    Hermes,
    /// Llama 3's bare JSON calls.
    #[value(name = "llama3_json", alias = "llama3")]
    Llama3Json,
    /// DeepSeek R1's markup.
    #[value(alias = "deepseek_r1")]
    Deepseek,
    /// Mistral's `[TOOL_CALLS]` JSON array.
    Mistral,
    /// A bare JSON call object or an array of them.
    Json,
}

impl ToolCallParserArg {
    /// The format to parse, given the served chat template.
    pub fn resolve(self, template: Option<&pagoda_models::ChatTemplate>) -> ToolCallFormat {
        match self {
            Self::Auto => template
                .map(|t| ToolCallFormat::detect(t.source()))
                .unwrap_or(ToolCallFormat::Json),
            Self::Hermes => ToolCallFormat::Hermes,
            Self::Llama3Json => ToolCallFormat::Llama3Json,
            Self::Deepseek => ToolCallFormat::DeepSeek,
            Self::Mistral => ToolCallFormat::Mistral,
            Self::Json => ToolCallFormat::Json,
        }
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
    fn names_and_aliases_parse_and_name_their_format() {
        use clap::ValueEnum;
        let parse = |name: &str| ToolCallParserArg::from_str(name, false).map(|a| a.resolve(None));
        for (name, format) in [
            ("hermes", ToolCallFormat::Hermes),
            ("qwen", ToolCallFormat::Hermes),
            ("llama3_json", ToolCallFormat::Llama3Json),
            ("llama3", ToolCallFormat::Llama3Json),
            ("deepseek", ToolCallFormat::DeepSeek),
            ("deepseek_r1", ToolCallFormat::DeepSeek),
            ("mistral", ToolCallFormat::Mistral),
            ("json", ToolCallFormat::Json),
            ("auto", ToolCallFormat::Json),
        ] {
            assert_eq!(parse(name), Ok(format), "{name}");
            assert_eq!(parse(format.name()), Ok(format));
        }
        assert!(parse("pythonic").is_err());
        assert!(ToolCallFormat::Hermes.template_wants_argument_objects());
        assert!(ToolCallFormat::Llama3Json.template_wants_argument_objects());
        assert!(!ToolCallFormat::DeepSeek.template_wants_argument_objects());
        assert!(!ToolCallFormat::Json.template_wants_argument_objects());
    }

    #[test]
    fn mistral_call_ids_are_nine_letters_and_digits() {
        let m = ToolCallFormat::Mistral;
        let id = m.new_call_id();
        assert_eq!(id.len(), 9);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(m.template_call_id(&id), id);
        assert_eq!(m.template_call_id("call_1"), "0000call1");
        assert_eq!(
            m.template_call_id("call_abcdefghijklmnop12"),
            "hijklmnop12"[2..].to_string()
        );
        assert_eq!(m.template_call_id(""), "000000000");
        assert_eq!(ToolCallFormat::Hermes.template_call_id("call_1"), "call_1");
        assert!(ToolCallFormat::Hermes.new_call_id().starts_with("call_"));
        assert_eq!(
            ToolCallFormat::detect(&template("mistral-nemo")),
            ToolCallFormat::Mistral
        );
        assert_eq!(
            ToolCallFormat::detect(&template("qwen3")),
            ToolCallFormat::Hermes
        );
    }
}
