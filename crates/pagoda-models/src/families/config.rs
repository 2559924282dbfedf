//! Model hyper-parameters: the Hugging Face `config.json` as written, and the
//! resolved [`ModelConfig`] the forward pass runs on.
//!
//! Field names follow `config.json` of `LlamaForCausalLM` and
//! `Qwen2ForCausalLM` in Hugging Face transformers so that the struct reads
//! like the file.

use serde::Deserialize;

/// The model families pagoda implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, SmolLM2, DeepSeek-R1-Distill-Llama: no projection biases.
    Llama,
    /// Qwen2 and DeepSeek-R1-Distill-Qwen: biases on the q/k/v projections.
    Qwen2,
    /// Mistral: llama's block with every layer attending over a sliding
    /// window (`sliding_window`) when the checkpoint sets one.
    Mistral,
    /// Phi-3 / Phi-4: fused `qkv_proj` and `gate_up_proj`, LongRoPE,
    /// partial rotation, a sliding window when the checkpoint sets one.
    Phi3,
    /// Qwen3-MoE: Qwen3's attention, a mixture of experts in the sparse
    /// layers (softmax top-k, `norm_topk_prob`, no shared experts).
    Qwen3Moe,
    /// Mixtral: Mistral's block with a mixture of experts in every layer
    /// (softmax top-2, always renormalised).
    Mixtral,
    /// Qwen3 (dense): no projection biases; q and k RMS-normalised per head
    /// before the rotary embedding; heads may be wider than
    /// `hidden_size / num_attention_heads`.
    Qwen3,
    /// Gemma 3 (text): sliding-window and global layers, sandwich norms,
    /// GeGLU ([`crate::families::gemma3`]). Its [`ModelConfig`] is a summary;
    /// the model keeps its full `Gemma3Config`.
    Gemma3,
    /// DeepSeek-V2 (and V2-Lite, Coder-V2): multi-head latent attention and
    /// softmax-routed experts ([`crate::families::deepseek`]). Its [`ModelConfig`] is
    /// a summary; the model keeps its full `DeepseekConfig`.
    DeepseekV2,
    /// DeepSeek-V3 (and R1): V2's attention with sigmoid routing corrected by
    /// a per-expert bias ([`crate::families::deepseek`]).
    DeepseekV3,
}

impl Architecture {
    /// The name used in logs and in `config.json`'s `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Mistral => "mistral",
            Architecture::Qwen3Moe => "qwen3_moe",
            Architecture::Phi3 => "phi3",
            Architecture::Mixtral => "mixtral",
            Architecture::Gemma3 => "gemma3",
            Architecture::DeepseekV2 => "deepseek_v2",
            Architecture::DeepseekV3 => "deepseek_v3",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dimension `2i` rotates with `2i+1` (GGUF llama: the converter permuted
    /// the q/k rows so that this equals Hugging Face's `rotate_half`).
    Interleaved,
    /// Dimension `i` rotates with `i + d/2` (Hugging Face `rotate_half`, GGUF qwen2).
    Halves,
}

/// Frequency scaling applied to the rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor of every position.
        factor: f32,
    },
    /// Llama 3.1 style: low frequencies slowed by `factor`, high ones kept,
    /// smoothly blended in between.
    Llama3 {
        /// How much low frequencies are slowed.
        factor: f32,
        /// Wavelength threshold factor below which frequencies are scaled.
        low_freq_factor: f32,
        /// Wavelength threshold factor above which frequencies are kept.
        high_freq_factor: f32,
        /// The context length the model was pre-trained on.
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors read from a GGUF `rope_freqs.weight` tensor.
    FreqFactors(Vec<f32>),
    /// LongRoPE (Phi-3): per-frequency divisors — the short or the long set,
    /// chosen for the context served — and a factor on every cos and sin.
    LongRope {
        /// One divisor per rotated pair.
        factors: Vec<f32>,
        /// `sqrt(1 + ln(s) / ln(original))` for an extension `s > 1`, else 1.
        attention_factor: f64,
    },
    /// YaRN (Peng et al., <https://arxiv.org/abs/2309.00071>) as Hugging
    /// Face's `_compute_yarn_parameters` computes it: frequencies blended
    /// between interpolated and kept along a ramp between the dimensions
    /// that rotate `beta_fast` and `beta_slow` times over the original
    /// context, and cos/sin scaled by an attention factor. (DeepSeek-V2/V3
    /// also multiply their softmax scale by `mscale²`, see
    /// [`RopeScaling::yarn_softmax_mscale`].) Values are kept in f64 as the
    /// reference computes them.
    Yarn {
        /// How much the context is extended.
        factor: f64,
        /// The context length the model was pre-trained on.
        original_max_position_embeddings: usize,
        /// Rotations above which dimensions are kept (extrapolated).
        beta_fast: f64,
        /// Rotations below which dimensions are interpolated.
        beta_slow: f64,
        /// Numerator coefficient of the default attention factor; 0 when absent.
        mscale: f64,
        /// Denominator coefficient of the default attention factor (and
        /// DeepSeek's softmax correction); 0 when absent.
        mscale_all_dim: f64,
        /// The cos/sin factor, when the config sets it explicitly.
        attention_factor: Option<f64>,
        /// Whether the ramp's bounds are rounded to whole dimensions.
        truncate: bool,
    },
}

/// YaRN's magnitude correction `0.1 · mscale · ln(scale) + 1` (1 for
/// `scale <= 1`), as `yarn_get_mscale` in transformers.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl RopeScaling {
    /// The factor applied to every cos and sin (YaRN's attention factor; 1
    /// for the other scalings).
    pub fn attention_factor(&self) -> f64 {
        match *self {
            RopeScaling::Yarn {
                factor,
                mscale,
                mscale_all_dim,
                attention_factor,
                ..
            } => attention_factor.unwrap_or_else(|| {
                if mscale != 0.0 && mscale_all_dim != 0.0 {
                    yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
                } else {
                    yarn_get_mscale(factor, 1.0)
                }
            }),
            RopeScaling::LongRope {
                attention_factor, ..
            } => attention_factor,
            _ => 1.0,
        }
    }

    /// DeepSeek-V2/V3's correction of the softmax scale under YaRN:
    /// `mscale²` with `mscale = yarn_get_mscale(factor, mscale_all_dim)`
    /// when `mscale_all_dim` is set, else 1 (transformers' `yarn_apply_mscale`).
    pub fn yarn_softmax_mscale(&self) -> f64 {
        match *self {
            RopeScaling::Yarn {
                factor,
                mscale_all_dim,
                ..
            } if mscale_all_dim != 0.0 => {
                let m = yarn_get_mscale(factor, mscale_all_dim);
                m * m
            }
            _ => 1.0,
        }
    }
}

/// Rotary embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the geometric frequency progression (`rope_theta`).
    pub theta: f32,
    /// Number of rotated dimensions per head (the head dimension for these families).
    pub dim: usize,
    /// Pairing of rotated dimensions.
    pub layout: RopeLayout,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// Resolved hyper-parameters of a llama-style decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA when smaller than the query heads).
    pub num_key_value_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and the output head).
    pub vocab_size: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f32,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Rotary embedding parameters.
    pub rope: RopeConfig,
    /// Whether q/k/v projections carry a bias.
    pub qkv_bias: bool,
    /// Whether q and k are RMS-normalised per head (weights of `head_dim`)
    /// before the rotary embedding (Qwen3's `q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// Keys every query sees, counting its own position, when every layer
    /// attends over a sliding window (Mistral); `None`: the whole context.
    pub sliding_window: Option<usize>,
    /// Whether the output head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// The mixture of experts of Qwen3-MoE and Mixtral (DeepSeek keeps its
    /// own); `None`: every layer has a dense MLP.
    pub experts: Option<ExpertsConfig>,
}

/// A llama-style decoder's mixture of experts.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertsConfig {
    /// Routed experts per sparse layer.
    pub num_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Width of an expert's middle layer.
    pub inner: usize,
    /// Whether the chosen experts' weights are renormalised to sum to 1.
    pub norm_topk_prob: bool,
    /// Per layer: experts (else the dense MLP of `intermediate_size`).
    pub sparse_layers: Vec<bool>,
    /// The module holding router and experts (`mlp`; Mixtral's
    /// `block_sparse_moe`).
    pub module: &'static str,
    /// The experts' projection names.
    pub names: crate::layers::moe::ExpertNames,
}

/// Fails naming the first of `fields` (name, value) that is zero.
pub(crate) fn check_positive(fields: &[(&str, usize)]) -> Result<(), String> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(format!("{name} must be positive")),
        None => Ok(()),
    }
}

impl ModelConfig {
    /// Number of values one token's K (or V) occupies in one layer.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Checks the relations between fields that the forward pass relies on.
    pub fn validate(&self) -> Result<(), String> {
        check_positive(&[
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
        ])?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.rope.dim > self.head_dim || !self.rope.dim.is_multiple_of(2) {
            return Err(format!(
                "rotary dimension {} must be even and at most head_dim {}",
                self.rope.dim, self.head_dim
            ));
        }
        if let RopeScaling::FreqFactors(f) | RopeScaling::LongRope { factors: f, .. } =
            &self.rope.scaling
        {
            if f.len() != self.rope.dim / 2 {
                return Err(format!(
                    "rope_freqs has {} entries, expected {}",
                    f.len(),
                    self.rope.dim / 2
                ));
            }
        }
        Ok(())
    }
}

/// `eos_token_id` and friends may be one id or a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single token id.
    One(u32),
    /// Several token ids.
    Many(Vec<u32>),
}

impl OneOrMany {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![*id],
            OneOrMany::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` as written in `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct HfRopeScaling {
    /// `rope_type` (newer configs).
    pub rope_type: Option<String>,
    /// `type` (older configs; transformers 5 writes both).
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    /// LongRoPE's per-frequency divisors up to the original context.
    pub short_factor: Option<Vec<f32>>,
    /// LongRoPE's per-frequency divisors beyond it.
    pub long_factor: Option<Vec<f32>>,
    /// The share of each head that rotates (Phi-4-mini's 0.75), inside
    /// `rope_parameters` in transformers 5 configs.
    pub partial_rotary_factor: Option<f32>,
    /// Scaling factor.
    pub factor: Option<f64>,
    /// Llama 3 low-frequency factor.
    pub low_freq_factor: Option<f32>,
    /// Llama 3 high-frequency factor.
    pub high_freq_factor: Option<f32>,
    /// Llama 3 original context length.
    pub original_max_position_embeddings: Option<usize>,
    /// RoPE base, inside `rope_parameters` (transformers 5 configs).
    pub rope_theta: Option<f32>,
    /// YaRN: rotations above which dimensions are kept (default 32).
    pub beta_fast: Option<f64>,
    /// YaRN: rotations below which dimensions are interpolated (default 1).
    pub beta_slow: Option<f64>,
    /// YaRN: numerator coefficient of the attention factor.
    pub mscale: Option<f64>,
    /// YaRN: denominator coefficient of the attention factor (and of
    /// DeepSeek's softmax correction).
    pub mscale_all_dim: Option<f64>,
    /// YaRN: an explicit cos/sin factor.
    pub attention_factor: Option<f64>,
    /// YaRN: whether the ramp's bounds are rounded (default true).
    pub truncate: Option<bool>,
}

fn default_rope_theta() -> f32 {
    10_000.0
}

fn default_rms_norm_eps() -> f32 {
    1e-6
}

fn default_max_position_embeddings() -> usize {
    4096
}

/// A Hugging Face `config.json` of a llama-style model, field for field.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    /// `llama` or `qwen2`.
    pub model_type: Option<String>,
    /// E.g. `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads; defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Head dimension; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling, if any (transformers 4 configs).
    pub rope_scaling: Option<HfRopeScaling>,
    /// RoPE base and scaling together (transformers 5 configs).
    pub rope_parameters: Option<HfRopeScaling>,
    /// Qwen2's sliding-window attention switch (not implemented).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Mistral's window (`None` or absent: the whole context).
    pub sliding_window: Option<usize>,
    /// Qwen3-MoE's routed experts (`num_experts`).
    pub num_experts: Option<usize>,
    /// Mixtral's routed experts (also what transformers 5 writes for Qwen3-MoE).
    pub num_local_experts: Option<usize>,
    /// Experts chosen per token.
    pub num_experts_per_tok: Option<usize>,
    /// Qwen3-MoE's expert width.
    pub moe_intermediate_size: Option<usize>,
    /// Qwen3-MoE's renormalisation of the chosen weights (default false).
    pub norm_topk_prob: Option<bool>,
    /// Qwen3-MoE: every `decoder_sparse_step`-th layer is sparse (default 1).
    pub decoder_sparse_step: Option<usize>,
    /// Qwen3-MoE: layers kept dense.
    pub mlp_only_layers: Option<Vec<usize>>,
    /// Phi's rotated share of each head (transformers 4 configs).
    pub partial_rotary_factor: Option<f32>,
    /// Phi-3's pre-training context, for LongRoPE (transformers 4 configs).
    pub original_max_position_embeddings: Option<usize>,
    /// Context length.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Whether `lm_head` is the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's optional projection bias.
    #[serde(default)]
    pub attention_bias: bool,
    /// The activation; only `silu` is implemented.
    pub hidden_act: Option<String>,
    /// Begin-of-sequence id.
    pub bos_token_id: Option<OneOrMany>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<OneOrMany>,
    /// The dtype the weights were saved in.
    #[allow(dead_code, reason = "parsed as transformers writes it, not used")]
    pub torch_dtype: Option<String>,
    /// How the weights are quantized, if they are (DeepSeek-V3's FP8).
    pub quantization_config: Option<HfQuantizationConfig>,
}

/// The `quantization_config` of a `config.json`: the fields pagoda reads
/// to tell a supported layout ([`crate::formats::hf::fp8`]) from the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HfQuantizationConfig {
    /// `fp8`, `gptq`, `awq`, `bitsandbytes`, `compressed-tensors`...
    pub quant_method: Option<String>,
    /// FP8's format (`e4m3`).
    pub fmt: Option<String>,
    /// FP8's activation quantization (`dynamic`).
    pub activation_scheme: Option<String>,
    /// FP8's block of weights per scale (`[128, 128]`).
    pub weight_block_size: Option<Vec<usize>>,
}

impl HfConfig {
    /// The family this config describes, from `model_type` or `architectures`.
    pub fn architecture(&self) -> Result<Architecture, String> {
        let model_type = self.model_type.as_deref().unwrap_or("");
        let arch = self.architectures.first().map(String::as_str).unwrap_or("");
        match (model_type, arch) {
            ("llama", _) | (_, "LlamaForCausalLM") => Ok(Architecture::Llama),
            ("qwen2", _) | (_, "Qwen2ForCausalLM") => Ok(Architecture::Qwen2),
            ("qwen3", _) | (_, "Qwen3ForCausalLM") => Ok(Architecture::Qwen3),
            ("mistral", _) | (_, "MistralForCausalLM") => Ok(Architecture::Mistral),
            ("qwen3_moe", _) | (_, "Qwen3MoeForCausalLM") => Ok(Architecture::Qwen3Moe),
            ("mixtral", _) | (_, "MixtralForCausalLM") => Ok(Architecture::Mixtral),
            ("phi3", _) | (_, "Phi3ForCausalLM") => Ok(Architecture::Phi3),
            _ => Err(format!(
                "model_type `{model_type}` (architectures `{arch}`); supported: llama, mistral, mixtral, phi3, qwen2, qwen3, qwen3_moe, gemma3_text, deepseek_v2, deepseek_v3"
            )),
        }
    }

    /// The mixture of experts Qwen3-MoE and Mixtral configs describe.
    fn experts(&self, architecture: Architecture) -> Result<Option<ExpertsConfig>, String> {
        let n = self.num_experts.or(self.num_local_experts).unwrap_or(0);
        let top_k = self.num_experts_per_tok.unwrap_or(0);
        let layers = self.num_hidden_layers;
        let config = match architecture {
            Architecture::Qwen3Moe => {
                let step = self.decoder_sparse_step.unwrap_or(1).max(1);
                let dense = self.mlp_only_layers.clone().unwrap_or_default();
                ExpertsConfig {
                    num_experts: n,
                    top_k,
                    inner: self
                        .moe_intermediate_size
                        .ok_or("qwen3_moe needs moe_intermediate_size")?,
                    norm_topk_prob: self.norm_topk_prob.unwrap_or(false),
                    sparse_layers: (0..layers)
                        .map(|i| !dense.contains(&i) && n > 0 && (i + 1) % step == 0)
                        .collect(),
                    module: "mlp",
                    names: crate::layers::moe::ExpertNames::PROJ,
                }
            }
            Architecture::Mixtral => ExpertsConfig {
                num_experts: n,
                top_k,
                inner: self.intermediate_size,
                norm_topk_prob: true,
                sparse_layers: vec![true; layers],
                module: "block_sparse_moe",
                names: crate::layers::moe::ExpertNames::MIXTRAL,
            },
            _ => return Ok(None),
        };
        if config.top_k == 0 || config.top_k > config.num_experts {
            return Err(format!(
                "{} experts per token of {} experts",
                config.top_k, config.num_experts
            ));
        }
        Ok(Some(config))
    }

    /// Resolves defaults and scaling into the config the forward pass uses.
    pub fn resolve(&self) -> Result<ModelConfig, String> {
        let architecture = self.architecture()?;
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(format!("hidden_act `{act}`: only silu is implemented"));
            }
        }
        if self.num_attention_heads == 0 {
            return Err("num_attention_heads must be positive".into());
        }
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        if self.use_sliding_window {
            return Err("use_sliding_window: sliding-window attention is not implemented".into());
        }
        let rope = self
            .rope_scaling
            .as_ref()
            .or(self.rope_parameters.as_ref())
            .map(|s| {
                let mut s = s.clone();
                s.original_max_position_embeddings = s
                    .original_max_position_embeddings
                    .or(self.original_max_position_embeddings);
                s
            });
        let scaling = match &rope {
            None => RopeScaling::None,
            Some(s) => resolve_hf_scaling(s, self.max_position_embeddings)?,
        };
        let rotary_share = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.partial_rotary_factor)
            .or(self.partial_rotary_factor)
            .unwrap_or(1.0);
        let rope_dim = ((head_dim as f32 * rotary_share) as usize) & !1;
        let theta = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .unwrap_or(self.rope_theta);
        let config = ModelConfig {
            architecture,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            rope: RopeConfig {
                theta,
                dim: rope_dim,
                layout: RopeLayout::Halves,
                scaling,
            },
            qkv_bias: architecture == Architecture::Qwen2 || self.attention_bias,
            qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Moe),
            sliding_window: match architecture {
                Architecture::Mistral | Architecture::Mixtral | Architecture::Phi3 => {
                    self.sliding_window
                }
                _ => None,
            },
            experts: self.experts(architecture)?,
            tie_word_embeddings: self.tie_word_embeddings,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The scaling `rope_scaling` (or `rope_parameters`) describes, for a model
/// whose context is `max_position_embeddings` (YaRN's defaults derive from it).
pub fn resolve_hf_scaling(
    s: &HfRopeScaling,
    max_position_embeddings: usize,
) -> Result<RopeScaling, String> {
    let kind = s
        .rope_type
        .as_deref()
        .or(s.legacy_type.as_deref())
        .unwrap_or("default");
    let factor = || {
        s.factor
            .map(|f| f as f32)
            .ok_or_else(|| format!("rope_scaling of type `{kind}` needs `factor`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
        "yarn" => {
            // transformers' `standardize_rope_params` and `_compute_yarn_parameters`.
            let original = s
                .original_max_position_embeddings
                .unwrap_or(max_position_embeddings);
            if original == 0 {
                return Err("rope_scaling: original_max_position_embeddings must be positive".into());
            }
            let factor = s
                .factor
                .unwrap_or(max_position_embeddings as f64 / original as f64);
            let nonzero_or = |v: Option<f64>, default: f64| v.filter(|&v| v != 0.0).unwrap_or(default);
            Ok(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: nonzero_or(s.beta_fast, 32.0),
                beta_slow: nonzero_or(s.beta_slow, 1.0),
                mscale: s.mscale.unwrap_or(0.0),
                mscale_all_dim: s.mscale_all_dim.unwrap_or(0.0),
                attention_factor: s.attention_factor,
                truncate: s.truncate.unwrap_or(true),
            })
        }
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
            high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
            original_max_position_embeddings: s.original_max_position_embeddings.unwrap_or(8192),
        }),
        "longrope" | "su" => {
            // transformers' `_compute_longrope_parameters`, with the factors
            // chosen once for the context served (as llama.cpp does; transformers
            // switches per call, at the original length).
            let original = s
                .original_max_position_embeddings
                .unwrap_or(max_position_embeddings);
            if original == 0 {
                return Err("rope_scaling: original_max_position_embeddings must be positive".into());
            }
            let long = max_position_embeddings > original;
            let factors = if long { &s.long_factor } else { &s.short_factor };
            let factors = factors
                .clone()
                .ok_or("a longrope rope_scaling needs short_factor and long_factor")?;
            let factor = s
                .factor
                .unwrap_or(max_position_embeddings as f64 / original as f64);
            let attention_factor = s.attention_factor.unwrap_or(if factor <= 1.0 {
                1.0
            } else {
                (1.0 + factor.ln() / (original as f64).ln()).sqrt()
            });
            Ok(RopeScaling::LongRope {
                factors,
                attention_factor,
            })
        }
        other => Err(format!(
            "rope_scaling type `{other}` is not implemented (supported: default, linear, llama3, yarn, longrope)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> HfConfig {
        serde_json::from_str(json).expect("valid config")
    }

    #[test]
    fn llama3_config_resolves_gqa_and_scaling() {
        let c = parse(
            r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
            "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
            "vocab_size":128256,"rope_theta":500000.0,"max_position_embeddings":131072,
            "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"},
            "eos_token_id":[128001,128008,128009]}"#,
        )
        .resolve()
        .expect("resolves");
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.kv_dim(), 1024);
        assert!(!c.qkv_bias);
        assert!(matches!(c.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn transformers5_rope_parameters_are_read() {
        let c = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,
            "rope_parameters":{"rope_theta":5000.0,"rope_type":"linear","factor":2.0}}"#,
        )
        .resolve()
        .expect("resolves");
        assert_eq!(c.rope.theta, 5000.0);
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let c = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300}"#,
        )
        .resolve()
        .expect("resolves");
        assert_eq!(c.architecture, Architecture::Qwen2);
        assert!(c.qkv_bias);
    }

    #[test]
    fn unknown_family_and_scaling_are_named() {
        let err = parse(
            r#"{"model_type":"mamba","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300}"#,
        )
        .resolve()
        .unwrap_err();
        assert!(err.contains("mamba"), "{err}");
        let err = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,
            "rope_scaling":{"type":"dynamic","factor":2.0}}"#,
        )
        .resolve()
        .unwrap_err();
        assert!(err.contains("dynamic"), "{err}");
    }

    #[test]
    fn heads_must_divide() {
        let err = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":300}"#,
        )
        .resolve()
        .unwrap_err();
        assert!(err.contains("multiple"), "{err}");
    }

    #[test]
    fn longrope_takes_the_long_factors_past_the_original_context() {
        // Phi-3-mini-128k's shape: a 4k original context served at 128k.
        let c = parse(
            r#"{"model_type":"phi3","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
            "max_position_embeddings":131072,"original_max_position_embeddings":4096,
            "partial_rotary_factor":0.75,
            "rope_scaling":{"type":"longrope","short_factor":[1,1,1,1,1,1],
            "long_factor":[2,2,2,2,2,2]}}"#,
        )
        .resolve()
        .expect("resolves");
        assert_eq!(c.architecture, Architecture::Phi3);
        assert_eq!(c.rope.dim, 12);
        let RopeScaling::LongRope {
            factors,
            attention_factor,
        } = &c.rope.scaling
        else {
            panic!("{:?}", c.rope.scaling)
        };
        assert_eq!(factors, &vec![2.0f32; 6]);
        // sqrt(1 + ln(32) / ln(4096)) as transformers computes it.
        assert!(
            (attention_factor - 1.190_238_3).abs() < 1e-6,
            "{attention_factor}"
        );
    }
}
