//! From validated options and prompt tokens to an engine request, and from
//! engine events to each choice's text (incremental detokenization, stop
//! strings, finish reasons, log-probabilities).

use pagoda_api::{ApiError, GenerationOptions};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::{EngineEvent, FinishReason, Request, SamplingParams, StopCondition};
use pagoda_models::IncrementalDecoder;

use crate::state::AppState;
use crate::stop_strings::StopMatcher;

/// Builds the engine request, applying the checkpoint's defaults and
/// checking the context window.
pub fn engine_request(
    state: &AppState,
    prompt: Vec<u32>,
    o: &GenerationOptions,
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
    })
}

/// The text of one token, for log-probability entries.
pub fn token_text(state: &AppState, id: u32) -> String {
    state.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// What a choice produced in one step.
#[derive(Debug, Default)]
pub struct ChoiceDelta {
    /// New text.
    pub text: String,
    /// Log-probabilities of the tokens behind it: (token text, logprobs).
    pub logprobs: Vec<(String, TokenLogprobs)>,
    /// Set when the choice is done.
    pub finish_reason: Option<&'static str>,
}

/// One choice's detokenizer and stop matcher.
pub struct ChoiceOutput {
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// Tokens generated.
    pub tokens: usize,
    /// Set once finished.
    pub finish_reason: Option<&'static str>,
}

impl ChoiceOutput {
    /// A fresh choice with these stop strings.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            decoder: IncrementalDecoder::new(true),
            stops: StopMatcher::new(stops),
            tokens: 0,
            finish_reason: None,
        }
    }
}

impl ChoiceOutput {
    /// Ends the choice with `reason` (the engine finished it, or the
    /// request ran out of time): what is held back is released, unless it
    /// completes a stop string, which makes the reason `stop`.
    pub fn finish(&mut self, state: &AppState, reason: &'static str) -> ChoiceDelta {
        let mut text = self.decoder.flush(&state.tokenizer).unwrap_or_default();
        let released = self.stops.push(&text);
        text = released.text;
        let reason = if released.stopped {
            "stop"
        } else {
            text.push_str(&self.stops.flush());
            reason
        };
        self.finish_reason = Some(reason);
        ChoiceDelta {
            text,
            logprobs: Vec::new(),
            finish_reason: Some(reason),
        }
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
            let released = c.stops.push(&piece);
            let mut delta = ChoiceDelta {
                text: released.text,
                ..ChoiceDelta::default()
            };
            if let Some(lp) = logprobs {
                delta.logprobs.push((token_text(state, token), lp));
            }
            if released.stopped {
                c.finish_reason = Some("stop");
                delta.finish_reason = Some("stop");
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
