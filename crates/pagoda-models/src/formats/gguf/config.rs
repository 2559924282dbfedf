//! The model configuration of a GGUF file, read from its `{arch}.*` metadata
//! the way llama.cpp's `llama-model.cpp` reads it.

use crate::error::{ModelError, Result};
use crate::families::config::{Architecture, ModelConfig, RopeConfig, RopeLayout, RopeScaling};
use crate::formats::gguf::file::GgufFile;

/// Resolves the [`ModelConfig`] of a llama or qwen2 GGUF file.
pub fn gguf_model_config(file: &GgufFile) -> Result<ModelConfig> {
    let meta = file.meta();
    let arch_name = meta.str("general.architecture")?;
    let (architecture, layout) = match arch_name {
        // convert_hf_to_gguf.py permutes llama's q/k rows so that llama.cpp's
        // interleaved rotation equals Hugging Face's rotate_half.
        "llama" => (Architecture::Llama, RopeLayout::Interleaved),
        "qwen2" => (Architecture::Qwen2, RopeLayout::Halves),
        "qwen3" => (Architecture::Qwen3, RopeLayout::Halves),
        other => {
            return Err(ModelError::Unsupported {
                path: file.path().to_path_buf(),
                what: "architecture",
                value: format!("`{other}` (supported: llama, qwen2, qwen3, gemma3, deepseek2)"),
            })
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    if meta
        .optional(&key("expert_count"), |m, k| m.usize(k))?
        .is_some_and(|n| n > 0)
    {
        return Err(ModelError::Unsupported {
            path: file.path().to_path_buf(),
            what: "architecture",
            value: format!(
                "`{arch_name}` with a mixture of experts (Mixtral): experts are read from \
                 safetensors checkpoints and DeepSeek GGUF files only"
            ),
        });
    }
    let hidden_size = meta.usize(&key("embedding_length"))?;
    let heads = meta.usize(&key("attention.head_count"))?;
    if heads == 0 {
        return Err(ModelError::Metadata {
            path: file.path().to_path_buf(),
            key: key("attention.head_count"),
            reason: "must be positive".into(),
        });
    }
    let kv_heads = meta
        .optional(&key("attention.head_count_kv"), |m, k| m.usize(k))?
        .unwrap_or(heads);
    let head_dim = meta
        .optional(&key("attention.key_length"), |m, k| m.usize(k))?
        .unwrap_or(hidden_size / heads);
    let rope_dim = meta
        .optional(&key("rope.dimension_count"), |m, k| m.usize(k))?
        .unwrap_or(head_dim);
    let vocab_size = match meta.optional(&key("vocab_size"), |m, k| m.usize(k))? {
        Some(v) => v,
        None => meta.strings("tokenizer.ggml.tokens")?.len(),
    };
    let scaling = rope_scaling(file, arch_name, rope_dim)?;
    let config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: meta.usize(&key("feed_forward_length"))?,
        num_hidden_layers: meta.usize(&key("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
        max_position_embeddings: meta.usize(&key("context_length"))?,
        rope: RopeConfig {
            theta: meta
                .optional(&key("rope.freq_base"), |m, k| m.f32(k))?
                .unwrap_or(10_000.0),
            dim: rope_dim,
            layout,
            scaling,
        },
        qkv_bias: architecture == Architecture::Qwen2,
        qk_norm: architecture == Architecture::Qwen3,
        // llama.cpp writes no window for `llama` files (Mistral's included)
        // and attends over the whole context.
        sliding_window: None,
        experts: None,
        tie_word_embeddings: !file.has_tensor("output.weight"),
    };
    config
        .validate()
        .map_err(|reason| ModelError::InvalidFile {
            path: file.path().to_path_buf(),
            format: "GGUF",
            reason,
        })?;
    Ok(config)
}

pub(crate) fn rope_scaling(file: &GgufFile, arch: &str, rope_dim: usize) -> Result<RopeScaling> {
    let meta = file.meta();
    // Llama 3.1-style scaling is stored as per-frequency divisors.
    if let Some(factors) = file.tensor("rope_freqs.weight")? {
        let factors = factors.to_f32_vec()?;
        if factors.len() != rope_dim / 2 {
            return Err(ModelError::Tensor {
                path: file.path().to_path_buf(),
                name: "rope_freqs.weight".into(),
                reason: format!("{} values, expected {}", factors.len(), rope_dim / 2),
            });
        }
        return Ok(RopeScaling::FreqFactors(factors));
    }
    let type_key = format!("{arch}.rope.scaling.type");
    match meta.optional(&type_key, |m, k| m.str(k))? {
        None | Some("none") => Ok(RopeScaling::None),
        Some("linear") => {
            let factor_key = format!("{arch}.rope.scaling.factor");
            Ok(RopeScaling::Linear {
                factor: meta.f32(&factor_key)?,
            })
        }
        Some(other) => Err(ModelError::Unsupported {
            path: file.path().to_path_buf(),
            what: "rope scaling",
            value: other.to_string(),
        }),
    }
}
