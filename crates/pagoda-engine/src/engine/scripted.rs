//! A scripted [`CausalLm`] for the engine's unit tests: a model whose next
//! token is a fixed function of everything its KV cache holds for the
//! sequence, so that the fork, abort, thinking-budget and preemption paths
//! run without loading a model, and any mistake in the KV the engine hands
//! it (a wrong block table, a partial block not copied on a fork, a
//! preempted sequence recomputed wrongly) changes the output.
//!
//! Each position's "key and value" is its token id. For a chunk that wants
//! logits, the model reads back every position of its sequence through the
//! block table and puts all the weight on [`next_after`] of their sum.

use pagoda_models::{
    Architecture, CausalLm, KvLayout, Logits, LogitsWanted, ModelConfig, ModelError, PagedKvCache,
    RopeConfig, RopeLayout, RopeScaling, SeqChunk,
};

/// Tokens of the scripted vocabulary.
pub(super) const VOCAB: usize = 64;
/// Generated tokens stay below this; the ids above are special.
const ORDINARY: u32 = 48;
/// Opens a thinking block.
pub(super) const OPEN: u32 = 60;
/// Closes a thinking block.
pub(super) const CLOSE: u32 = 61;
/// A prompt token that makes the forward pass fail.
pub(super) const FAIL: u32 = 63;
/// The scripted model's context window.
pub(super) const CONTEXT: usize = 512;

/// The token that follows a sequence whose ids sum to `sum`.
pub(super) fn next_after(sum: u64) -> u32 {
    (sum % ORDINARY as u64) as u32 + 1
}

/// What the scripted model generates greedily after `prompt`: `n` tokens.
pub(super) fn reference(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut sum: u64 = prompt.iter().map(|&t| t as u64).sum();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = next_after(sum);
        sum += t as u64;
        out.push(t);
    }
    out
}

/// The scripted model.
pub(super) struct Scripted {
    config: ModelConfig,
}

impl Scripted {
    pub(super) fn new() -> Self {
        Self {
            config: ModelConfig {
                architecture: Architecture::Llama,
                hidden_size: 1,
                intermediate_size: 1,
                num_hidden_layers: 1,
                num_attention_heads: 1,
                num_key_value_heads: 1,
                head_dim: 1,
                vocab_size: VOCAB,
                rms_norm_eps: 1e-5,
                max_position_embeddings: CONTEXT,
                rope: RopeConfig {
                    theta: 10_000.0,
                    dim: 1,
                    layout: RopeLayout::Halves,
                    scaling: RopeScaling::None,
                },
                qkv_bias: false,
                qk_norm: false,
                sliding_window: None,
                experts: None,
                tie_word_embeddings: false,
            },
        }
    }
}

impl CausalLm for Scripted {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout::per_head(1, 1, 1)
    }

    fn forward(
        &self,
        batch: &[SeqChunk<'_>],
        cache: &mut PagedKvCache,
    ) -> pagoda_models::Result<Logits> {
        let mut data = Vec::new();
        for chunk in batch {
            if chunk.tokens.contains(&FAIL) {
                return Err(ModelError::InvalidBatch("the scripted failure".into()));
            }
            let end = chunk.start_pos + chunk.tokens.len();
            cache.check_table(chunk.block_table, end)?;
            let kv: Vec<f32> = chunk.tokens.iter().map(|&t| t as f32).collect();
            cache.write(0, chunk.block_table, chunk.start_pos, &kv, &kv);
            if chunk.logits == LogitsWanted::None {
                continue;
            }
            let layer = cache.layer(0);
            let bs = layer.block_size();
            let sum: u64 = (0..end)
                .map(|pos| {
                    let slot = pos % bs;
                    layer
                        .values(chunk.block_table[pos / bs], 0, slot + 1)
                        .to_vec()[slot] as u64
                })
                .sum();
            let mut row = vec![0.0; VOCAB];
            row[next_after(sum) as usize] = 8.0;
            data.extend(row);
        }
        Ok(Logits {
            vocab_size: VOCAB,
            data,
        })
    }
}
