//! From validated options and prompt tokens to an engine request, and from
//! engine events to each choice's text (incremental detokenization, stop
//! strings, finish reasons, log-probabilities).

use pagoda_api::{ApiError, GenerationOptions};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::{EngineEvent, FinishReason, Request, SamplingParams, StopCondition};
use pagoda_models::IncrementalDecoder;

use crate::reasoning_parser::{ReasoningParser, Split};
use crate::state::AppState;
use crate::stop_strings::StopMatcher;

/// Builds the engine request, applying the checkpoint's defaults and
/// checking the context window; `reasoning` bounds a reasoning model's
/// thinking.
pub fn engine_request(
    state: &AppState,
    prompt: Vec<u32>,
    o: &GenerationOptions,
    reasoning: Option<pagoda_engine::ReasoningLimit>,
) -> Result<Request, ApiError> {
    let context = state.context_length;
    if prompt.len() >= context {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {} tokens; the model's context window is {context}",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let max_tokens = o.max_tokens.unwrap_or(context - prompt.len());
    if prompt.len() + max_tokens > context {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceeds the context window of {context}",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let vocab = state.tokenizer.vocab_size();
    if let Some(bad) = prompt
        .iter()
        .chain(o.logit_bias.iter().map(|(t, _)| t))
        .find(|&&t| t as usize >= vocab)
    {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let d = &state.defaults;
    Ok(Request {
        prompt,
        sampling: SamplingParams {
            temperature: o.temperature.or(d.temperature).unwrap_or(1.0),
            top_k: o.top_k.or(d.top_k.map(|k| k as usize)).unwrap_or(0),
            top_p: o.top_p.or(d.top_p).unwrap_or(1.0),
            min_p: o.min_p.unwrap_or(0.0),
            repetition_penalty: o.repetition_penalty.or(d.repetition_penalty).unwrap_or(1.0),
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            logit_bias: o.logit_bias.clone(),
            seed: o.seed,
            logprobs: o.logprobs,
        },
        stop: StopCondition {
            max_tokens,
            min_tokens: o.min_tokens,
            eos_token_ids: state.tokenizer.stop_ids().to_vec(),
            stop_token_ids: Vec::new(),
            ignore_eos: o.ignore_eos,
        },
        n: o.n,
        reasoning,
    })
}

/// The text of one token, for log-probability entries.
pub fn token_text(state: &AppState, id: u32) -> String {
    state.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// What a choice produced in one step.
#[derive(Debug, Default)]
pub struct ChoiceDelta {
    /// New text (the answer, for a reasoning model).
    pub text: String,
    /// New thinking text of a reasoning model (always before any answer text).
    pub reasoning: String,
    /// Log-probabilities of the tokens behind it: (token text, logprobs).
    pub logprobs: Vec<(String, TokenLogprobs)>,
    /// Set when the choice is done.
    pub finish_reason: Option<&'static str>,
}

/// One choice's detokenizer, reasoning splitter and stop matcher. Stop
/// strings apply to the answer only, not to a reasoning model's thinking.
pub struct ChoiceOutput {
    decoder: IncrementalDecoder,
    reasoning: Option<ReasoningParser>,
    stops: StopMatcher,
    /// Tokens generated.
    pub tokens: usize,
    /// Of them, tokens of the thinking block (its tags included).
    pub reasoning_tokens: usize,
    /// Set once finished.
    pub finish_reason: Option<&'static str>,
}

impl ChoiceOutput {
    /// A fresh choice with these stop strings; `reasoning` splits a
    /// reasoning model's thinking from its answer.
    pub fn new(stops: Vec<String>, reasoning: Option<ReasoningParser>) -> Self {
        Self {
            decoder: IncrementalDecoder::new(true),
            reasoning,
            stops: StopMatcher::new(stops),
            tokens: 0,
            reasoning_tokens: 0,
            finish_reason: None,
        }
    }

    /// Runs decoded text through the reasoning splitter and the stop
    /// matcher; `end` releases everything held.
    fn release(&mut self, piece: &str, end: bool) -> ChoiceDelta {
        let split = match &mut self.reasoning {
            Some(parser) => {
                let mut split = parser.push(piece);
                if end {
                    let rest = parser.finish();
                    split.reasoning.push_str(&rest.reasoning);
                    split.content.push_str(&rest.content);
                }
                split
            }
            None => Split {
                reasoning: String::new(),
                content: piece.to_string(),
            },
        };
        let released = self.stops.push(&split.content);
        let mut text = released.text;
        if end && !released.stopped {
            text.push_str(&self.stops.flush());
        }
        ChoiceDelta {
            text,
            reasoning: split.reasoning,
            logprobs: Vec::new(),
            finish_reason: released.stopped.then_some("stop"),
        }
    }

    /// Ends the choice with `reason` (the engine finished it, or the
    /// request ran out of time): what is held back is released, unless it
    /// completes a stop string, which makes the reason `stop`.
    pub fn finish(&mut self, state: &AppState, reason: &'static str) -> ChoiceDelta {
        let text = self.decoder.flush(&state.tokenizer).unwrap_or_default();
        let mut delta = self.release(&text, true);
        let reason = delta.finish_reason.unwrap_or(reason);
        self.finish_reason = Some(reason);
        delta.finish_reason = Some(reason);
        delta
    }
}

fn reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Applies one engine event to the choices; returns the choice index and
/// its delta, or an error for a failed request.
pub fn apply_event(
    state: &AppState,
    choices: &mut [ChoiceOutput],
    event: EngineEvent,
) -> Result<Option<(usize, ChoiceDelta)>, ApiError> {
    match event {
        EngineEvent::Token {
            choice,
            token,
            logprobs,
        } => {
            let Some(c) = choices.get_mut(choice) else {
                return Ok(None);
            };
            if c.finish_reason.is_some() {
                return Ok(None);
            }
            c.tokens += 1;
            let piece = c
                .decoder
                .push(&state.tokenizer, token)
                .map_err(|e| crate::api_error::internal("decoding tokens", e))?;
            let was_reasoning = c
                .reasoning
                .as_ref()
                .is_some_and(ReasoningParser::in_reasoning);
            let mut delta = c.release(&piece, false);
            if was_reasoning
                || c.reasoning
                    .as_ref()
                    .is_some_and(ReasoningParser::in_reasoning)
            {
                c.reasoning_tokens += 1;
            }
            if let Some(lp) = logprobs {
                delta.logprobs.push((token_text(state, token), lp));
            }
            if delta.finish_reason.is_some() {
                c.finish_reason = delta.finish_reason;
            }
            Ok(Some((choice, delta)))
        }
        EngineEvent::Finished {
            choice, reason: r, ..
        } => {
            let Some(c) = choices.get_mut(choice) else {
                return Ok(None);
            };
            if c.finish_reason.is_some() {
                return Ok(None);
            }
            Ok(Some((choice, c.finish(state, reason(r)))))
        }
        EngineEvent::Failed(e) => Err(crate::api_error::internal("generating", e)),
    }
}
