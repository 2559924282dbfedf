//! Gemma 3 GGUF files (`general.architecture = "gemma3"`, as llama.cpp's
//! converter writes them): the configuration from `gemma3.*` keys plus what
//! llama.cpp hard-codes (every sixth layer global, the others over the
//! window, with rope base 10,000 unless `rope.freq_base_swa` says; the
//! score scale), and the tensors under
//! Hugging Face names. The converter stores norm weights as `1 + w`.

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::families::config::{Architecture, ModelConfig, RopeConfig, RopeLayout, RopeScaling};
use crate::families::gemma3::config::Gemma3Config;
use crate::formats::gguf::config::rope_scaling;
use crate::formats::gguf::file::GgufFile;
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;

/// llama.cpp's layer pattern: layer `i` is global when `i % 6 == 5`.
const GLOBAL_EVERY: usize = 6;
/// The rope base of the sliding layers where the file has no
/// `gemma3.rope.freq_base_swa` (llama.cpp's fixed value before that key).
const LOCAL_ROPE_THETA: f32 = 10_000.0;

/// Reads a `gemma3` file's configuration.
pub fn gemma3_config_from_gguf(file: &GgufFile) -> Result<Gemma3Config> {
    let meta = file.meta();
    let key = |k: &str| format!("gemma3.{k}");
    let hidden = meta.usize(&key("embedding_length"))?;
    let heads = meta.usize(&key("attention.head_count"))?;
    let layers = meta.usize(&key("block_count"))?;
    let invalid = |reason: String| ModelError::InvalidFile {
        path: file.path().to_path_buf(),
        format: "GGUF",
        reason,
    };
    if heads == 0 {
        return Err(invalid(
            "gemma3.attention.head_count must be positive".into(),
        ));
    }
    let head_dim = meta
        .optional(&key("attention.key_length"), |m, k| m.usize(k))?
        .unwrap_or(hidden / heads);
    let window = meta.optional(&key("attention.sliding_window"), |m, k| m.usize(k))?;
    let vocab_size = meta.strings("tokenizer.ggml.tokens")?.len();
    let base = ModelConfig {
        architecture: Architecture::Gemma3,
        hidden_size: hidden,
        intermediate_size: meta.usize(&key("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: meta
            .optional(&key("attention.head_count_kv"), |m, k| m.usize(k))?
            .unwrap_or(heads),
        head_dim,
        vocab_size,
        rms_norm_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
        max_position_embeddings: meta.usize(&key("context_length"))?,
        rope: RopeConfig {
            theta: meta
                .optional(&key("rope.freq_base"), |m, k| m.f32(k))?
                .unwrap_or(1_000_000.0),
            dim: head_dim,
            layout: RopeLayout::Halves,
            scaling: rope_scaling(file, "gemma3", head_dim)?,
        },
        qkv_bias: false,
        qk_norm: true,
        sliding_window: None,
        experts: None,
        tie_word_embeddings: !file.has_tensor("output.weight"),
    };
    base.validate().map_err(invalid)?;
    let config = Gemma3Config {
        sliding: (0..layers)
            .map(|i| window.is_some_and(|w| w > 0) && i % GLOBAL_EVERY != GLOBAL_EVERY - 1)
            .collect(),
        sliding_window: window.unwrap_or(0),
        local_rope: RopeConfig {
            theta: meta
                .optional(&key("rope.freq_base_swa"), |m, k| m.f32(k))?
                .unwrap_or(LOCAL_ROPE_THETA),
            dim: head_dim,
            layout: RopeLayout::Halves,
            scaling: RopeScaling::None,
        },
        // As llama.cpp: the 27B model (62 layers) scales by hidden/heads,
        // the others by head_dim (the value not being in the file).
        query_pre_attn_scalar: if layers == 62 {
            (hidden / heads) as f32
        } else {
            head_dim as f32
        },
        norm_offset: 0.0,
        embed_scale: (hidden as f32).sqrt(),
        base,
    };
    config.validate().map_err(invalid)?;
    Ok(config)
}

/// A `gemma3` file serving Hugging Face tensor names: Gemma's four norms
/// per layer have names of their own in GGUF.
pub struct Gemma3Gguf<'a>(pub &'a GgufFile);

impl TensorSource for Gemma3Gguf<'_> {
    fn path(&self) -> &Path {
        self.0.path()
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        let gemma = name.strip_prefix("model.layers.").and_then(|rest| {
            let (layer, module) = rest.split_once('.')?;
            let gguf = match module {
                "post_attention_layernorm.weight" => "post_attention_norm",
                "pre_feedforward_layernorm.weight" => "ffn_norm",
                "post_feedforward_layernorm.weight" => "post_ffw_norm",
                _ => return None,
            };
            Some(format!("blk.{layer}.{gguf}.weight"))
        });
        match gemma {
            Some(g) => self.0.tensor(&g),
            None => self.0.get(name),
        }
    }
}
