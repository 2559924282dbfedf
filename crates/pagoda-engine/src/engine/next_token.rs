//! The rules for a choice's next token, in one place and in the order they
//! apply: a spent thinking budget closes the block instead of sampling;
//! stop tokens are suppressed before `min_tokens` (and, with a grammar,
//! while thinking, with the single-token answer markers); the grammar masks
//! the logits of the answer; the sampler picks; the grammar has the last
//! word on the token and on whether the choice ends; the thinking state
//! advances.

use crate::reasoning::Thinking;
use crate::request::EngineFailure;
use crate::sampler::{History, TokenLogprobs};

use super::state::{answer_grammar, ChoiceState, RequestState};

/// What a choice does next.
pub(super) enum Next {
    /// The thinking budget is spent: append these tokens (the close tag)
    /// as if generated, instead of sampling.
    Close(Vec<u32>),
    /// A token was picked.
    Token {
        /// The token.
        token: u32,
        /// Its log-probabilities, when asked for.
        logprobs: Option<TokenLogprobs>,
        /// Whether it ends the choice (a stop token, or a complete grammar).
        stop: bool,
    },
    /// The grammar could not be applied or advanced.
    Failed(EngineFailure),
}

/// Decides `choice`'s next token from `logits` (changed in place); `tokens`
/// is its sequence so far (prompt, then output).
pub(super) fn next_token(
    choice: &mut ChoiceState,
    request: &RequestState,
    tokens: &[u32],
    logits: &mut [f32],
) -> Next {
    let ChoiceState {
        sampler,
        prompt_len,
        thinking,
        constraint,
        ..
    } = choice;
    let limit = request.request.reasoning.as_ref();
    if let (Some(limit), Some(state)) = (limit, *thinking) {
        if state.must_close(limit) {
            *thinking = Some(Thinking::Done);
            return Next::Close(limit.close_with.clone());
        }
    }
    let (prompt, output) = tokens.split_at((*prompt_len).min(tokens.len()));
    let stop_ids = &request.stop_ids;
    let inside = matches!(thinking, Some(Thinking::Inside(_)));
    let suppressed: &[u32] = if inside && constraint.is_some() {
        &request.banned_while_thinking
    } else if output.len() < request.request.stop.min_tokens {
        stop_ids
    } else {
        &[]
    };
    let mut grammar = answer_grammar(*thinking, constraint);
    if let Some(g) = grammar.as_deref_mut() {
        if let Err(e) = g.apply(logits) {
            return Next::Failed(EngineFailure::Grammar(e.to_string()));
        }
    }
    let history = History {
        prompt,
        output,
        suppressed,
    };
    let mut sampled = sampler.sample(logits, history);
    let mut stop = stop_ids.contains(&sampled.token);
    if let Some(g) = grammar {
        match g.settle(sampled.token, stop_ids) {
            Ok((token, ends)) => (sampled.token, stop) = (token, ends),
            Err(e) => return Next::Failed(EngineFailure::Grammar(e.to_string())),
        }
    }
    if let (Some(limit), Some(state)) = (limit, *thinking) {
        *thinking = Some(state.after(limit, output, sampled.token));
    }
    Next::Token {
        token: sampled.token,
        logprobs: sampled.logprobs,
        stop,
    }
}
