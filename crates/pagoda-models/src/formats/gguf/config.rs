//! The model configuration of a GGUF file, read from its `{arch}.*` metadata
//! the way llama.cpp's `llama-model.cpp` reads it.

use crate::error::{ModelError, Result};
use crate::families::config::{
    Architecture, ExpertsConfig, ModelConfig, RopeConfig, RopeLayout, RopeScaling,
};
use crate::formats::gguf::file::GgufFile;
use crate::layers::moe::ExpertNames;

/// Resolves the [`ModelConfig`] of a llama (Mixtral too), qwen2, qwen3 or
/// qwen3moe GGUF file.
pub fn gguf_model_config(file: &GgufFile) -> Result<ModelConfig> {
    let meta = file.meta();
    let arch_name = meta.str("general.architecture")?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let num_experts = meta
        .optional(&key("expert_count"), |m, k| m.usize(k))?
        .unwrap_or(0);
    let (architecture, layout) = match arch_name {
        // convert_hf_to_gguf.py permutes llama's q/k rows so that llama.cpp's
        // interleaved rotation equals Hugging Face's rotate_half. Mixtral is
        // written as `llama` with experts.
        "llama" if num_experts > 0 => (Architecture::Mixtral, RopeLayout::Interleaved),
        "llama" => (Architecture::Llama, RopeLayout::Interleaved),
        "qwen2" => (Architecture::Qwen2, RopeLayout::Halves),
        "qwen3" => (Architecture::Qwen3, RopeLayout::Halves),
        "qwen3moe" => (Architecture::Qwen3Moe, RopeLayout::Halves),
        // Phi-3 and Phi-4: fused `attn_qkv`, `ffn_up` holding gate and up.
        "phi3" => (Architecture::Phi3, RopeLayout::Halves),
        other => {
            return Err(ModelError::Unsupported {
                path: file.path().to_path_buf(),
                what: "architecture",
                value: format!(
                    "`{other}` (supported: llama, qwen2, qwen3, qwen3moe, phi3, gemma3, deepseek2)"
                ),
            })
        }
    };
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
    let num_hidden_layers = meta.usize(&key("block_count"))?;
    let intermediate_size = meta.usize(&key("feed_forward_length"))?;
    let experts = if num_experts > 0 {
        Some(ExpertsConfig {
            num_experts,
            top_k: meta.usize(&key("expert_used_count"))?,
            inner: meta
                .optional(&key("expert_feed_forward_length"), |m, k| m.usize(k))?
                .unwrap_or(intermediate_size),
            // llama.cpp renormalises the chosen experts' weights of
            // qwen3moe and llama (Mixtral) files unconditionally (released
            // Qwen3-MoE checkpoints set norm_topk_prob); a file may say
            // otherwise.
            norm_topk_prob: meta
                .optional(&key("expert_weights_norm"), |m, k| m.bool(k))?
                .unwrap_or(true),
            // A layer is sparse where its router is (Qwen3-MoE's
            // `mlp_only_layers` are written as dense feed-forwards).
            sparse_layers: (0..num_hidden_layers)
                .map(|l| file.has_tensor(&format!("blk.{l}.ffn_gate_inp.weight")))
                .collect(),
            module: "mlp",
            names: ExpertNames::PROJ,
        })
    } else {
        None
    };
    let config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
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
        qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Moe),
        // llama.cpp writes no window for `llama` files (Mistral's included)
        // and attends over the whole context; Phi-3's is written (0: none,
        // as for Phi-4).
        sliding_window: match architecture {
            Architecture::Phi3 => meta
                .optional(&key("attention.sliding_window"), |m, k| m.usize(k))?
                .filter(|&w| w > 0),
            _ => None,
        },
        experts,
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
    // LongRoPE (Phi-3): both factor sets as tensors; the long set serves a
    // context longer than the original one, as in llama.cpp (and the
    // safetensors path).
    if let (Some(long), Some(short)) = (
        file.tensor("rope_factors_long.weight")?,
        file.tensor("rope_factors_short.weight")?,
    ) {
        let context = meta.usize(&format!("{arch}.context_length"))?;
        let original = meta
            .optional(
                &format!("{arch}.rope.scaling.original_context_length"),
                |m, k| m.usize(k),
            )?
            .unwrap_or(context);
        let (name, factors) = if context > original {
            ("rope_factors_long.weight", long)
        } else {
            ("rope_factors_short.weight", short)
        };
        let factors = factors.to_f32_vec()?;
        if factors.len() != rope_dim / 2 {
            return Err(ModelError::Tensor {
                path: file.path().to_path_buf(),
                name: name.into(),
                reason: format!("{} values, expected {}", factors.len(), rope_dim / 2),
            });
        }
        // The converter writes the attention factor it computed
        // (`sqrt(1 + ln(s) / ln(original))`, 1 without extension).
        let attention_factor = meta
            .optional(&format!("{arch}.rope.scaling.attn_factor"), |m, k| m.f32(k))?
            .map_or(1.0, f64::from);
        return Ok(RopeScaling::LongRope {
            factors,
            attention_factor,
        });
    }
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
