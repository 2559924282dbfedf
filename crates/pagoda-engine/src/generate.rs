//! Generation for one sequence at a time, straight on the model: the
//! smallest end-to-end path (`pagoda generate`). The sequence's KV lives in a
//! paged cache whose blocks it owns in order; the batched, scheduled engine
//! replaces this for serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagoda_models::{BlockId, CausalLm, LogitsWanted, PagedKvCache, SeqChunk};

use crate::sampler::{Sampler, SamplingParams};

/// Errors of a generation run.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Prompt plus generation does not fit the model's context window.
    #[error("the prompt ({prompt} tokens) plus {max_tokens} new tokens exceeds the context window of {context}")]
    ContextExceeded {
        /// Prompt tokens.
        prompt: usize,
        /// Requested new tokens.
        max_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] pagoda_models::ModelError),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// `max_tokens` were produced.
    Length,
}

/// The outcome of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (a final stop token included).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Time spent on the prompt (through the first token).
    pub prefill_time: Duration,
    /// Time spent producing the remaining tokens.
    pub decode_time: Duration,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Ids that end generation.
    pub stop_ids: Vec<u32>,
}

/// Block size of the single-sequence cache.
const BLOCK_SIZE: usize = 16;

/// Generates for one request, calling `on_token` with each new id as it is chosen.
pub fn generate(
    model: &Arc<dyn CausalLm>,
    request: &GenerateRequest,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, GenerateError> {
    if request.prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let context = model.config().max_position_embeddings;
    let total = request.prompt.len() + request.max_tokens;
    if total > context {
        return Err(GenerateError::ContextExceeded {
            prompt: request.prompt.len(),
            max_tokens: request.max_tokens,
            context,
        });
    }
    let num_blocks = total.div_ceil(BLOCK_SIZE).max(1);
    let mut cache = PagedKvCache::new(model.kv_layout(), BLOCK_SIZE, num_blocks)?;
    let table: Vec<BlockId> = (0..num_blocks as u32).map(BlockId).collect();
    let mut sampler = Sampler::new(request.sampling.clone());

    let start = Instant::now();
    let mut tokens = Vec::with_capacity(request.max_tokens);
    let mut prefill_time = Duration::ZERO;
    let mut pending: Vec<u32> = request.prompt.clone();
    let mut pos = 0;
    let mut finish_reason = FinishReason::Length;
    while tokens.len() < request.max_tokens {
        let chunk = SeqChunk {
            tokens: &pending,
            start_pos: pos,
            block_table: &table,
            logits: LogitsWanted::Last,
        };
        let logits = model.forward(&[chunk], &mut cache)?;
        pos += pending.len();
        let next = sampler.sample(logits.row(0));
        if tokens.is_empty() {
            prefill_time = start.elapsed();
        }
        tokens.push(next);
        on_token(next);
        if request.stop_ids.contains(&next) {
            finish_reason = FinishReason::Stop;
            break;
        }
        pending = vec![next];
    }
    Ok(Generation {
        tokens,
        finish_reason,
        prefill_time,
        decode_time: start.elapsed().saturating_sub(prefill_time),
    })
}
