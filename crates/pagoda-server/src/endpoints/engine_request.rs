//! From validated options and prompt tokens to an admitted engine request:
//! the checkpoint's sampling defaults applied, and the engine's limits
//! checked (once: the engine takes the admitted request as it is).

use pagoda_api::{ApiError, GenerationOptions};
use pagoda_engine::{Admitted, Request, SamplingParams, Schedule, StopCondition};

use crate::http::errors::submit_error;
use crate::http::state::AppState;
use crate::http::tenant::Tenant;
use crate::output::label::Endpoint;

/// Builds the engine request, applying the checkpoint's defaults (an unset
/// `max_tokens` is what fits the served context), and admits it under the
/// engine's limits, so that a request that can never run is refused before
/// anything is submitted; `reasoning` bounds a reasoning model's thinking.
/// `n` may not exceed `--max-n`. It runs at its `priority` in `tenant`'s
/// share of the engine.
pub fn engine_request(
    state: &AppState,
    endpoint: Endpoint,
    prompt: Vec<u32>,
    o: &GenerationOptions,
    reasoning: Option<pagoda_engine::ReasoningLimit>,
    grammar: Option<pagoda_engine::Grammar>,
    tenant: Tenant,
) -> Result<Admitted, ApiError> {
    if o.n > state.limits.max_n {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n is {}; this server generates at most {} choices per request (--max-n)",
                o.n, state.limits.max_n
            ),
        ));
    }
    let limits = state.engine.limits();
    // At least 1, so that a prompt that fills the context is refused as such.
    let max_tokens = o
        .max_tokens
        .unwrap_or_else(|| limits.max_new_tokens(prompt.len()).max(1));
    let d = &state.text.defaults;
    let request = Request {
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
            eos_token_ids: state.text.tokenizer.stop_ids().to_vec(),
            stop_token_ids: Vec::new(),
            ignore_eos: o.ignore_eos,
        },
        n: o.n,
        reasoning,
        grammar,
    };
    let schedule = Schedule {
        priority: o.priority,
        tenant: tenant.0,
    };
    limits
        .admit(request)
        .map(|a| a.with_schedule(schedule))
        .map_err(|e| submit_error(e, endpoint.prompt_param()))
}
