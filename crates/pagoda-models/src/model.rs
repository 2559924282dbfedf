//! The interface the engine drives: a causal language model that keeps no
//! per-request state and computes a batch against a paged KV cache.

use crate::batch::{Logits, SeqChunk};
use crate::error::Result;
use crate::families::config::ModelConfig;
use crate::layers::kv_cache::{KvLayout, PagedKvCache};

/// A causal language model, stateless between calls: everything a sequence
/// remembers lives in the KV cache blocks its block table names.
pub trait CausalLm: Send + Sync {
    /// The model's hyper-parameters.
    fn config(&self) -> &ModelConfig;

    /// What the KV pool must hold per token per layer for this model.
    fn kv_layout(&self) -> KvLayout;

    /// Runs one forward pass over every chunk of `batch` (flattened, so every
    /// linear layer runs once for the whole batch), writes their K/V into
    /// `cache` and returns the logits the chunks asked for.
    fn forward(&self, batch: &[SeqChunk<'_>], cache: &mut PagedKvCache) -> Result<Logits>;
}
