//! What the decoder families ([`crate::families::llama`],
//! [`crate::families::deepseek`]) share around their layers: the pre-norm residual block, the output head (its
//! own matrix or the tied embedding) and the logits of the rows a batch
//! asks for.
//!
//! Reference implementation: Hugging Face transformers' decoder layers
//! (`LlamaDecoderLayer`, `DeepseekV3DecoderLayer`): `x + attn(norm(x))`,
//! then `x + mlp(norm(x))`, and `lm_head(norm(x))`.

use crate::batch::{rows_wanting_logits, Logits, SeqChunk};
use crate::error::Result;
use crate::families::config::ModelConfig;
use crate::formats::tensor_source::{check_shape, TensorSource};
use crate::layers::attention::{paged_attention_in, AttentionSpan, SeqQueries};
use crate::layers::embedding::Embedding;
use crate::layers::kv_cache::PagedKvCache;
use crate::layers::linear::{Activations, Linear};
use crate::layers::norm::RmsNorm;

/// Writes every chunk's new keys and values (`k`, `v`: `[rows, kv_dim]`)
/// into layer `layer` of `cache`, then attends every chunk's queries (`q`:
/// `[rows, heads · head_dim]`, rotated) over its cached context as `span`
/// says; returns the outputs laid out like `q`.
pub(crate) fn attend_batch(
    batch: &[SeqChunk<'_>],
    cache: &mut PagedKvCache,
    layer: usize,
    [q, k, v]: [&[f32]; 3],
    c: &ModelConfig,
    span: AttentionSpan,
) -> Vec<f32> {
    let (q_row, kv_row) = (c.num_attention_heads * c.head_dim, c.kv_dim());
    let mut offset = 0;
    for chunk in batch {
        let (from, to) = (offset * kv_row, (offset + chunk.tokens.len()) * kv_row);
        cache.write(
            layer,
            chunk.table_for(cache, layer),
            chunk.start_pos,
            &k[from..to],
            &v[from..to],
        );
        offset += chunk.tokens.len();
    }
    let mut offset = 0;
    let seqs: Vec<SeqQueries<'_>> = batch
        .iter()
        .map(|chunk| {
            let n = chunk.tokens.len();
            let seq = SeqQueries {
                q: &q[offset * q_row..(offset + n) * q_row],
                start_pos: chunk.start_pos,
                block_table: chunk.table_for(cache, layer),
            };
            offset += n;
            seq
        })
        .collect();
    paged_attention_in(
        cache.layer(layer),
        &seqs,
        c.num_attention_heads,
        c.num_key_value_heads,
        span,
    )
}

/// `acc += delta`, element by element.
pub(crate) fn add_in_place(acc: &mut [f32], delta: &[f32]) {
    acc.iter_mut().zip(delta).for_each(|(a, d)| *a += d);
}

/// One pre-norm block on the residual stream `x`:
/// `x += attention(input_layernorm(x))`, then
/// `x += mlp(post_attention_layernorm(x))`.
pub(crate) fn residual_block(
    x: &mut [f32],
    input_layernorm: &RmsNorm,
    attention: impl FnOnce(&[f32]) -> Result<Vec<f32>>,
    post_attention_layernorm: &RmsNorm,
    mlp: impl FnOnce(&[f32]) -> Result<Vec<f32>>,
) -> Result<()> {
    let h = input_layernorm.forward(x);
    add_in_place(x, &attention(&h)?);
    let h = post_attention_layernorm.forward(x);
    add_in_place(x, &mlp(&h)?);
    Ok(())
}

/// `model.embed_tokens.weight` (`[vocab_size, hidden]`), laid out for the
/// output head's kernels in case it is tied to it.
pub(crate) fn load_embedding(
    src: &dyn TensorSource,
    vocab_size: usize,
    hidden: usize,
    act: Activations,
) -> Result<Embedding> {
    let name = "model.embed_tokens.weight";
    let embedding = Embedding::new(src.require_shape(name, &[vocab_size, hidden])?)
        .map_err(|e| e.for_tensor(src.path(), name))?;
    Ok(embedding.for_activations(act))
}

/// The output head: `lm_head.weight` (`[vocab_size, hidden]`), or the
/// embedding's matrix when the checkpoint ties them or has no head (GGUF
/// files omit `output.weight` in that case).
pub(crate) fn load_lm_head(
    src: &dyn TensorSource,
    tie_word_embeddings: bool,
    vocab_size: usize,
    hidden: usize,
    embed_tokens: &Embedding,
    act: Activations,
) -> Result<Linear> {
    let name = "lm_head.weight";
    match src.get(name)? {
        Some(w) if !tie_word_embeddings => {
            check_shape(src.path(), name, &w, &[vocab_size, hidden])?;
            Linear::with_activations(w, None, act).map_err(|e| e.for_tensor(src.path(), name))
        }
        _ => Linear::with_activations(embed_tokens.as_weight(), None, act)
            .map_err(|e| e.for_tensor(src.path(), "model.embed_tokens.weight")),
    }
}

/// The logits of the rows of `x` (`[tokens, hidden]`, the last layer's
/// output) that `batch` wants: only those go through the final norm and the
/// head.
pub(crate) fn output_logits(
    batch: &[SeqChunk<'_>],
    x: &[f32],
    norm: &RmsNorm,
    lm_head: &Linear,
    hidden: usize,
    vocab_size: usize,
) -> Result<Logits> {
    let selected = rows_wanting_logits(batch, x, hidden);
    let selected_rows = selected.len() / hidden;
    if selected_rows == 0 {
        return Ok(Logits {
            vocab_size,
            data: Vec::new(),
        });
    }
    let normed = norm.forward(&selected);
    let data = lm_head.forward(&normed, selected_rows)?;
    Ok(Logits { vocab_size, data })
}
