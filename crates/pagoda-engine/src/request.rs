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
    Failed(String),
}

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many requests are waiting; try again later.
    #[error("the engine's queue is full")]
    QueueFull,
    /// The prompt is empty, or `n` or `max_tokens` is zero.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Prompt plus `max_tokens` do not fit the context window or the KV pool.
    #[error("{needed} positions needed but only {limit} fit ({what})")]
    TooLong {
        /// Positions the request may reach.
        needed: usize,
        /// The limit.
        limit: usize,
        /// Which limit: the model's context window or the KV pool.
        what: &'static str,
    },
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Closed,
}
