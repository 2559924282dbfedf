//! What the engine is asked to do and what it answers, free of any wire
//! format: a validated request and the events of its choices.

use crate::grammar::Grammar;
use crate::reasoning::ReasoningLimit;
use crate::sampler::{SamplingParams, TokenLogprobs};

/// When a choice stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCondition {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop tokens cannot be chosen before this many tokens.
    pub min_tokens: usize,
    /// The model's end-of-sequence ids (ignored with `ignore_eos`).
    pub eos_token_ids: Vec<u32>,
    /// Further ids that end a choice.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl StopCondition {
    /// Every id that ends a choice.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = self.stop_token_ids.clone();
        if !self.ignore_eos {
            ids.extend(&self.eos_token_ids);
        }
        ids
    }
}

/// A request the engine accepts: token ids and engine-neutral parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Prompt token ids (not empty).
    pub prompt: Vec<u32>,
    /// How tokens are picked; choice `i` of a seeded request uses `seed + i`.
    pub sampling: SamplingParams,
    /// When each choice stops.
    pub stop: StopCondition,
    /// Number of choices (at least 1); they share the prompt's KV blocks.
    pub n: usize,
    /// A thinking budget for reasoning models (none: think freely).
    pub reasoning: Option<ReasoningLimit>,
    /// What every choice's output must match (after any thinking), if
    /// anything; a choice ends when its grammar is complete.
    pub grammar: Option<Grammar>,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop or end-of-sequence token was produced (it is the last token sent).
    Stop,
    /// `max_tokens` were produced.
    Length,
}

/// What the engine sends back for a request, in order per choice.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A new token of choice `choice`.
    Token {
        /// Which choice (0-based).
        choice: usize,
        /// The token id.
        token: u32,
        /// Its log-probability and alternatives, when asked for.
        logprobs: Option<TokenLogprobs>,
    },
    /// Choice `choice` ended.
    Finished {
        /// Which choice.
        choice: usize,
        /// Why.
        reason: FinishReason,
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens generated for this choice.
        completion_tokens: usize,
    },
    /// The request failed inside the engine; no more events follow.
    Failed(EngineFailure),
}

/// Why a request failed inside the engine after it was admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineFailure {
    /// The model's forward pass failed (the whole step's requests fail).
    #[error("the forward pass failed: {0}")]
    Forward(String),
    /// The output grammar could not be applied or advanced.
    #[error("the output grammar failed: {0}")]
    Grammar(String),
    /// The engine refused the request when it took it from the queue.
    #[error(transparent)]
    Refused(#[from] crate::admission::SubmitError),
}
