//! Gemma 3's hyper-parameters: its `config.json` (transformers 4's
//! `rope_local_base_freq` / `sliding_window_pattern` and transformers 5's
//! `layer_types` / per-layer-type `rope_parameters` alike) resolved into
//! [`Gemma3Config`].

use serde::Deserialize;

use crate::families::config::{
    resolve_hf_scaling, Architecture, HfRopeScaling, ModelConfig, RopeConfig, RopeLayout,
    RopeScaling,
};

/// Resolved hyper-parameters of a Gemma 3 text decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    /// What every family shares (the engine's view): the global layers'
    /// rope in `rope`.
    pub base: ModelConfig,
    /// Per layer: whether it attends over a sliding window (else over the
    /// whole context).
    pub sliding: Vec<bool>,
    /// Keys a sliding layer's query sees, counting its own position.
    pub sliding_window: usize,
    /// The rope of the sliding layers.
    pub local_rope: RopeConfig,
    /// Scores are scaled by `query_pre_attn_scalar^-1/2`.
    pub query_pre_attn_scalar: f32,
    /// Added to every norm weight at load: 1 for checkpoints that store
    /// `w` of `x · (1 + w)` (transformers), 0 where the converter already
    /// added it (GGUF).
    pub norm_offset: f32,
    /// The factor on embeddings, `sqrt(hidden_size)`.
    pub embed_scale: f32,
}

/// The rope settings of one layer type, as transformers 5 nests them.
#[derive(Debug, Clone, Deserialize)]
struct ByLayerType {
    full_attention: Option<HfRopeScaling>,
    sliding_attention: Option<HfRopeScaling>,
}

/// `config.json` of `Gemma3ForCausalLM` (`model_type` `gemma3_text`).
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3HfConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f32>,
    max_position_embeddings: Option<usize>,
    layer_types: Option<Vec<String>>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    hidden_sliding_window_pattern: Option<usize>,
    query_pre_attn_scalar: Option<f32>,
    rope_theta: Option<f32>,
    rope_local_base_freq: Option<f32>,
    rope_scaling: Option<HfRopeScaling>,
    rope_parameters: Option<serde_json::Value>,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f32>,
    attn_logit_softcapping: Option<f32>,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    /// The dtype the weights were saved in (`torch_dtype` before
    /// transformers 5).
    #[serde(alias = "torch_dtype")]
    dtype: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Gemma3HfConfig {
    /// Resolves defaults, the layer pattern and both ropes.
    pub fn resolve(&self) -> Result<Gemma3Config, String> {
        if let Some(act) = &self.hidden_activation {
            if act != "gelu_pytorch_tanh" {
                return Err(format!(
                    "hidden_activation `{act}`: only gelu_pytorch_tanh is implemented"
                ));
            }
        }
        if self.final_logit_softcapping.is_some() || self.attn_logit_softcapping.is_some() {
            return Err("logit soft-capping (Gemma 2's) is not implemented".into());
        }
        if self.attention_bias {
            return Err(
                "attention_bias: Gemma 3 has none; biased projections are not implemented".into(),
            );
        }
        let n = self.num_hidden_layers;
        let sliding = match &self.layer_types {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(format!("layer type `{other}` is not implemented")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let pattern = self
                    .sliding_window_pattern
                    .or(self.hidden_sliding_window_pattern)
                    .unwrap_or(6);
                (0..n)
                    .map(|i| pattern == 0 || (i + 1) % pattern != 0)
                    .collect()
            }
        };
        if sliding.len() != n {
            return Err(format!("{} layer types for {n} layers", sliding.len()));
        }
        let head_dim = self.head_dim.unwrap_or(256);
        let context = self.max_position_embeddings.unwrap_or(131_072);
        let (global, local) = match self.rope_parameters.clone() {
            Some(value) if value.get("full_attention").is_some() => {
                let by: ByLayerType =
                    serde_json::from_value(value).map_err(|e| format!("rope_parameters: {e}"))?;
                (by.full_attention, by.sliding_attention)
            }
            Some(value) => {
                let flat: HfRopeScaling =
                    serde_json::from_value(value).map_err(|e| format!("rope_parameters: {e}"))?;
                (Some(flat), None)
            }
            None => (self.rope_scaling.clone(), None),
        };
        let rope = |s: Option<&HfRopeScaling>, theta: f32| -> Result<RopeConfig, String> {
            Ok(RopeConfig {
                theta: s.and_then(|s| s.rope_theta).unwrap_or(theta),
                dim: head_dim,
                layout: RopeLayout::Halves,
                scaling: match s {
                    Some(s) => resolve_hf_scaling(s, context)?,
                    None => RopeScaling::None,
                },
            })
        };
        let global = rope(global.as_ref(), self.rope_theta.unwrap_or(1_000_000.0))?;
        let local = rope(
            local.as_ref(),
            self.rope_local_base_freq.unwrap_or(10_000.0),
        )?;
        let base = ModelConfig {
            architecture: Architecture::Gemma3,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: n,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: context,
            rope: global,
            qkv_bias: false,
            qk_norm: true,
            // Per layer, in `Gemma3Config::sliding`.
            sliding_window: None,
            experts: None,
            tie_word_embeddings: self.tie_word_embeddings,
        };
        base.validate()?;
        let config = Gemma3Config {
            sliding,
            sliding_window: self.sliding_window.unwrap_or(4096),
            local_rope: local,
            query_pre_attn_scalar: self.query_pre_attn_scalar.unwrap_or(head_dim as f32),
            norm_offset: 1.0,
            embed_scale: embed_scale(self.hidden_size, self.dtype.as_deref()),
            base,
        };
        config.validate()?;
        Ok(config)
    }
}

/// `sqrt(hidden_size)` as transformers multiplies it: cast to the weights'
/// dtype first (`embed_scale.to(self.weight.dtype)`), so a bf16 checkpoint
/// scales its embeddings by the bf16 rounding of the root (25.25 for a
/// width of 640, not 25.298). llama.cpp's GGUF path keeps it in f32.
fn embed_scale(hidden_size: usize, dtype: Option<&str>) -> f32 {
    let root = (hidden_size as f32).sqrt();
    match dtype {
        Some("bfloat16") => half::bf16::from_f32(root).to_f32(),
        Some("float16") => half::f16::from_f32(root).to_f32(),
        _ => root,
    }
}

impl Gemma3Config {
    /// Checks what the forward pass relies on beyond [`ModelConfig::validate`].
    pub fn validate(&self) -> Result<(), String> {
        if self.sliding.iter().any(|&s| s) && self.sliding_window == 0 {
            return Err("sliding_window must be positive".into());
        }
        if self.query_pre_attn_scalar <= 0.0 {
            return Err("query_pre_attn_scalar must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_scale_is_rounded_to_the_checkpoints_dtype() {
        assert_eq!(embed_scale(640, Some("bfloat16")), 25.25);
        assert_eq!(embed_scale(640, Some("float32")), 640f32.sqrt());
        assert_eq!(embed_scale(640, None), 640f32.sqrt());
        assert_eq!(
            embed_scale(640, Some("float16")),
            half::f16::from_f32(640f32.sqrt()).to_f32()
        );
        let json = r#"{"hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 256, "vocab_size": 1000, "sliding_window": 512,
            "torch_dtype": "bfloat16"}"#;
        let c: Gemma3HfConfig = serde_json::from_str(json).expect("config");
        assert_eq!(c.resolve().expect("resolves").embed_scale, 25.25);
    }
}
