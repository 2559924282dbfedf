//! A served model's reasoning support: whether its output opens with a
//! thinking block (detected from the chat template and the tokenizer, or
//! set in the configuration), the tags' token ids the engine watches, and
//! the token budgets that `reasoning_effort` names.

use std::sync::Arc;

use pagoda_api::{ReasoningEffort, ReasoningRequest};
use pagoda_engine::ReasoningLimit;
use pagoda_models::{ChatTemplate, Tokenizer};

use crate::output::reasoning_parser::{ReasoningParser, ReasoningTags};

/// Whether a model's output is split into thinking and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasoningMode {
    /// On when the chat template uses the tags and the tokenizer has them
    /// as tokens (DeepSeek-R1 and its distills, QwQ, Qwen3).
    Auto,
    /// Always on.
    On,
    /// Always off: the output is all content, tags and all.
    Off,
}

/// Thinking budgets, in tokens, of each `reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffortBudgets {
    /// `minimal`.
    pub minimal: usize,
    /// `low`.
    pub low: usize,
    /// `medium`.
    pub medium: usize,
    /// `high`.
    pub high: usize,
}

/// Tool-call openings of the formats pagoda knows: inside an unclosed
/// thinking block they begin the answer, where the template uses them.
/// DeepSeek's markup cannot be mistaken for prose; Hermes' `<tool_call>`
/// can, so it counts only where it is a single token of the vocabulary
/// (as in Qwen2.5 and Qwen3).
const TOOL_CALL_MARKERS: [(&str, bool); 2] =
    [("<｜tool▁calls▁begin｜>", false), ("<tool_call>", true)];

/// How the served model reasons.
#[derive(Debug, Clone)]
pub struct Reasoning {
    tags: Arc<ReasoningTags>,
    open_ids: Vec<u32>,
    close_ids: Vec<u32>,
    marker_ids: Vec<Vec<u32>>,
    close_with: Vec<u32>,
    budgets: EffortBudgets,
}

impl Reasoning {
    /// Sets up reasoning for a model per `mode`; `None` when it is off.
    pub fn setup(
        mode: ReasoningMode,
        open: &str,
        close: &str,
        template: Option<&ChatTemplate>,
        tokenizer: &Tokenizer,
        budgets: EffortBudgets,
    ) -> anyhow::Result<Option<Self>> {
        let source = template.map(ChatTemplate::source).unwrap_or_default();
        match mode {
            ReasoningMode::Off => return Ok(None),
            ReasoningMode::On => {}
            ReasoningMode::Auto => {
                let in_template = source.contains(open) || source.contains(close);
                let tokens =
                    tokenizer.token_to_id(open).is_some() && tokenizer.token_to_id(close).is_some();
                if !(in_template && tokens) {
                    return Ok(None);
                }
            }
        }
        if open.is_empty() || close.is_empty() || open == close {
            anyhow::bail!("reasoning tags must be two different, non-empty strings");
        }
        let answer_markers: Vec<String> = TOOL_CALL_MARKERS
            .iter()
            .filter(|(m, needs_token)| {
                source.contains(m) && (!needs_token || tokenizer.token_to_id(m).is_some())
            })
            .map(|(m, _)| m.to_string())
            .collect();
        // Decoding skips special tokens: a tag that is one is fed to the
        // splitter by id.
        let added = tokenizer.inner().get_added_tokens_decoder();
        let special_ids = [open, close]
            .into_iter()
            .filter_map(|tag| {
                let id = tokenizer.token_to_id(tag)?;
                added
                    .get(&id)
                    .is_some_and(|t| t.special)
                    .then(|| (id, tag.to_string()))
            })
            .collect();
        let encode = |text: &str| tokenizer.encode(text, false);
        let marker_ids = answer_markers
            .iter()
            .map(|m| encode(m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            open_ids: encode(open)?,
            close_with: encode(&format!("\n{close}\n\n"))?,
            close_ids: encode(close)?,
            marker_ids,
            tags: Arc::new(ReasoningTags {
                open: open.to_string(),
                close: close.to_string(),
                answer_markers,
                special_ids,
            }),
            budgets,
        }))
    }

    /// The tags.
    pub fn tags(&self) -> &ReasoningTags {
        &self.tags
    }

    /// Whether a prompt rendered as `prompt` leaves the model inside the
    /// thinking block (templates that end the prompt with `<think>\n`).
    pub fn starts_inside(&self, prompt: &str) -> bool {
        prompt.trim_end().ends_with(self.tags.open.as_str())
    }

    /// A fresh output splitter for one choice.
    pub fn parser(&self, starts_inside: bool) -> ReasoningParser {
        ReasoningParser::new(self.tags.clone(), starts_inside)
    }

    /// The thinking budget a request asks for: its `max_reasoning_tokens`
    /// or its effort's budget, the smaller of the two; `None`: no limit.
    pub fn budget(&self, asked: ReasoningRequest) -> Option<usize> {
        let effort = asked.effort.map(|e| match e {
            ReasoningEffort::None => 0,
            ReasoningEffort::Minimal => self.budgets.minimal,
            ReasoningEffort::Low => self.budgets.low,
            ReasoningEffort::Medium => self.budgets.medium,
            ReasoningEffort::High => self.budgets.high,
        });
        match (effort, asked.max_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the engine needs to hold a choice to `budget` tokens of thinking.
    pub fn limit(&self, starts_inside: bool, budget: usize) -> ReasoningLimit {
        ReasoningLimit {
            starts_inside,
            open: self.open_ids.clone(),
            close: self.close_ids.clone(),
            markers: self.marker_ids.clone(),
            max_tokens: budget,
            close_with: self.close_with.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const BUDGETS: EffortBudgets = EffortBudgets {
        minimal: 8,
        low: 16,
        medium: 32,
        high: 64,
    };

    /// A model file fetched by `scripts/fetch-model.sh` (the test command
    /// runs it first).
    fn fetched(name: &str) -> (Tokenizer, Option<ChatTemplate>) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: run scripts/fetch-model.sh",
            path.display()
        );
        pagoda_models::load_tokenizer(&path).expect("tokenizer")
    }

    fn auto(tokenizer: &Tokenizer, template: Option<&ChatTemplate>) -> Option<Reasoning> {
        Reasoning::setup(
            ReasoningMode::Auto,
            "<think>",
            "</think>",
            template,
            tokenizer,
            BUDGETS,
        )
        .expect("setup")
    }

    #[test]
    fn the_real_r1_distill_is_detected_and_smollm2_is_not() {
        // The header of the real DeepSeek-R1-Distill-Qwen-7B GGUF.
        let (tokenizer, template) = fetched("DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf");
        let r = auto(&tokenizer, template.as_ref()).expect("R1 reasons");
        assert_eq!(
            r.tags().answer_markers,
            ["<｜tool▁calls▁begin｜>"],
            "R1's template writes DeepSeek's tool-call markup"
        );
        assert!(r.tags().special_ids.is_empty(), "R1's tags decode as text");
        let think = tokenizer.token_to_id("<think>").expect("a token");
        assert_eq!(r.limit(true, 5).open, [think]);
        assert!(!r.starts_inside("<｜User｜>Hi<｜Assistant｜>"));
        assert!(r.starts_inside("<｜User｜>Hi<｜Assistant｜><think>\n"));
        // Off overrides the detection.
        let off = Reasoning::setup(
            ReasoningMode::Off,
            "<think>",
            "</think>",
            template.as_ref(),
            &tokenizer,
            BUDGETS,
        )
        .expect("setup");
        assert!(off.is_none());

        let (tokenizer, template) = fetched("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(auto(&tokenizer, template.as_ref()).is_none());
    }

    #[test]
    fn budgets_take_the_smaller_of_effort_and_max_tokens() {
        let (tokenizer, template) = fetched("DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf");
        let r = auto(&tokenizer, template.as_ref()).expect("R1 reasons");
        let ask = |effort, max_tokens| r.budget(ReasoningRequest { effort, max_tokens });
        assert_eq!(ask(None, None), None);
        assert_eq!(ask(Some(ReasoningEffort::None), None), Some(0));
        assert_eq!(ask(Some(ReasoningEffort::Minimal), None), Some(8));
        assert_eq!(ask(Some(ReasoningEffort::Medium), None), Some(32));
        assert_eq!(ask(Some(ReasoningEffort::High), Some(40)), Some(40));
        assert_eq!(ask(Some(ReasoningEffort::Low), Some(40)), Some(16));
        assert_eq!(ask(None, Some(3)), Some(3));
    }
}
