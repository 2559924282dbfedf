//! What the engine keeps per request and per choice. A request's choices
//! are sequences of their own, and each sequence is one record, kept by the
//! scheduler: its tokens and progress beside its [`ChoiceState`] (whose it
//! is, its sampler, where it stands in its thinking, its grammar). Only its
//! KV blocks are elsewhere, with the block manager that owns every block
//! (as vLLM's KV cache manager keeps each request's block list).

use crate::constraint::Constraint;
use crate::ids::{RequestId, SeqId};
use crate::reasoning::Thinking;
use crate::request::Request;
use crate::sampler::Sampler;

use super::sink::EventSink;

/// One choice of a request, as it generates.
pub(super) struct ChoiceState {
    /// The request it belongs to.
    pub(super) request: RequestId,
    /// Which choice (0-based).
    pub(super) choice: usize,
    /// Its sampler (choice `i` of a seeded request uses `seed + i`).
    pub(super) sampler: Sampler,
    /// Tokens of the prompt: the rest of the sequence is output.
    pub(super) prompt_len: usize,
    /// Where the choice stands in its thinking (budgeted requests only).
    pub(super) thinking: Option<Thinking>,
    /// The grammar its output must match, if any.
    pub(super) constraint: Option<Constraint>,
}

impl ChoiceState {
    /// Choice `choice` of `request` (whose id is `id`), before its first token.
    pub(super) fn new(id: RequestId, choice: usize, request: &Request) -> Self {
        let mut sampling = request.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(choice as u64));
        Self {
            request: id,
            choice,
            sampler: Sampler::new(sampling),
            prompt_len: request.prompt.len(),
            thinking: request.reasoning.as_ref().map(Thinking::start),
            constraint: request.grammar.as_ref().map(Constraint::new),
        }
    }

    /// The grammar that applies to the choice's next token (see [`answer_grammar`]).
    pub(super) fn active_constraint(&mut self) -> Option<&mut Constraint> {
        answer_grammar(self.thinking, &mut self.constraint)
    }
}

/// The grammar that applies to a choice's next token: none while it is
/// thinking (a grammar shapes the answer, not the thinking).
pub(super) fn answer_grammar(
    thinking: Option<Thinking>,
    constraint: &mut Option<Constraint>,
) -> Option<&mut Constraint> {
    match thinking {
        Some(Thinking::Inside(_)) => None,
        _ => constraint.as_mut(),
    }
}

/// A request being served: its parameters, its listener and its choices.
pub(super) struct RequestState {
    /// The request as submitted.
    pub(super) request: Request,
    /// Where its events go.
    pub(super) sink: Box<dyn EventSink>,
    /// Its choices' sequences still generating.
    pub(super) seqs: Vec<SeqId>,
    /// Every id that ends a choice, computed once.
    pub(super) stop_ids: Vec<u32>,
    /// What a choice with a grammar may not sample while it thinks: the
    /// stop ids and the single-token answer markers, so that it ends its
    /// thinking only with the close tag and its answer always comes, held
    /// to the grammar (empty without a grammar or without reasoning).
    pub(super) banned_while_thinking: Vec<u32>,
    /// Choices still to fork from choice 0 once its prompt is computed.
    pub(super) unforked: bool,
}

impl RequestState {
    /// `request`, whose first choice runs as `seq`.
    pub(super) fn new(request: Request, sink: Box<dyn EventSink>, seq: SeqId) -> Self {
        let stop_ids = request.stop.stop_ids();
        let banned_while_thinking = match (&request.grammar, &request.reasoning) {
            (Some(_), Some(limit)) => stop_ids
                .iter()
                .copied()
                .chain(limit.single_token_markers())
                .collect(),
            _ => Vec::new(),
        };
        Self {
            unforked: request.n > 1,
            stop_ids,
            banned_while_thinking,
            request,
            sink,
            seqs: vec![seq],
        }
    }
}
