//! The `config.json` of a DeepSeek-V2/V3 checkpoint as written
//! ([`DeepseekHfConfig`], field for field, with transformers' defaults), and
//! the [`DeepseekConfig`] the forward pass runs on, resolved from it once.
//!
//! Papers: DeepSeek-V2 <https://arxiv.org/abs/2405.04434>, DeepSeek-V3
//! <https://arxiv.org/abs/2412.19437>. Reference implementation: Hugging
//! Face transformers `models/deepseek_v2/configuration_deepseek_v2.py` and
//! `models/deepseek_v3/configuration_deepseek_v3.py` (5.x), and DeepSeek's
//! own `modeling_deepseek.py` for the fields transformers does not read
//! (`moe_layer_freq`, `scoring_func`, `topk_method` of V3).

use serde::Deserialize;

use crate::families::config::{
    check_positive, resolve_hf_scaling, Architecture, HfRopeScaling, ModelConfig, OneOrMany,
    RopeConfig, RopeLayout, RopeScaling,
};
use crate::layers::moe::{Gate, RouterConfig, SoftmaxTopk};

/// Which generation of the architecture a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeepseekVersion {
    /// `deepseek_v2`: softmax routing.
    V2,
    /// `deepseek_v3`: sigmoid routing with a selection bias.
    V3,
}

fn default_hidden_act() -> String {
    "silu".into()
}

fn default_rms_norm_eps() -> f32 {
    1e-6
}

fn default_rope_theta() -> f32 {
    10_000.0
}

fn default_q_lora_rank() -> Option<usize> {
    // Both versions default to 1536; an explicit `null` means a plain q_proj.
    Some(1536)
}

fn default_moe_layer_freq() -> usize {
    1
}

/// A Hugging Face `config.json` of `DeepseekV2ForCausalLM` or
/// `DeepseekV3ForCausalLM`, field for field. Fields whose transformers
/// default differs between V2 and V3 are optional and resolved per version;
/// the shape fields every checkpoint writes are required.
#[derive(Debug, Clone, Deserialize)]
pub struct DeepseekHfConfig {
    /// `deepseek_v2` or `deepseek_v3`.
    pub model_type: String,
    /// E.g. `["DeepseekV3ForCausalLM"]`.
    #[serde(default)]
    #[allow(dead_code, reason = "parsed as transformers writes it, not used")]
    pub architectures: Vec<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the dense MLPs' inner layer.
    pub intermediate_size: usize,
    /// Width of one routed expert's inner layer (and the unit of the shared experts').
    pub moe_intermediate_size: Option<usize>,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Equal to `num_attention_heads` in every DeepSeek checkpoint (MLA has no GQA).
    pub num_key_value_heads: Option<usize>,
    /// Shared experts, each `moe_intermediate_size` wide, run as one MLP.
    pub n_shared_experts: Option<usize>,
    /// Routed experts per MoE layer; none means every layer is dense.
    pub n_routed_experts: Option<usize>,
    /// Factor on the routed experts' weights (V2 default 1, V3 2.5).
    pub routed_scaling_factor: Option<f64>,
    /// Width of the compressed key/value latent.
    pub kv_lora_rank: usize,
    /// Width of the compressed query; `null` for a plain `q_proj` (V2-Lite).
    #[serde(default = "default_q_lora_rank")]
    pub q_lora_rank: Option<usize>,
    /// Rotated dimensions per query/key head (the shared rope key's width).
    pub qk_rope_head_dim: usize,
    /// Value dimensions per head.
    pub v_head_dim: usize,
    /// Unrotated dimensions per query/key head.
    pub qk_nope_head_dim: usize,
    /// V2: `greedy` or `group_limited_greedy`; V3: `noaux_tc`.
    pub topk_method: Option<String>,
    /// Expert groups for group-limited routing.
    pub n_group: Option<usize>,
    /// Groups a token may route to.
    pub topk_group: Option<usize>,
    /// Routed experts per token.
    pub num_experts_per_tok: Option<usize>,
    /// Every `moe_layer_freq`-th layer (past the dense ones) is MoE.
    #[serde(default = "default_moe_layer_freq")]
    pub moe_layer_freq: usize,
    /// The first layers that stay dense (V2 default 0, V3 3).
    pub first_k_dense_replace: Option<usize>,
    /// Whether the chosen experts' weights are normalised (V2 default false, V3 true).
    pub norm_topk_prob: Option<bool>,
    /// `softmax` (V2) or `sigmoid` (V3).
    pub scoring_func: Option<String>,
    /// The activation; only `silu` is implemented.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Context length (V2 default 2048, V3 4096).
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling (transformers 4 and DeepSeek's own configs).
    pub rope_scaling: Option<HfRopeScaling>,
    /// RoPE base and scaling together (transformers 5 configs).
    pub rope_parameters: Option<HfRopeScaling>,
    /// V3: whether rotated dimensions pair up interleaved (default true).
    pub rope_interleave: Option<bool>,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the dense and shared MLPs (transformers' V2).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether `lm_head` is the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Begin-of-sequence id.
    #[allow(dead_code, reason = "parsed as transformers writes it, not used")]
    pub bos_token_id: Option<OneOrMany>,
    /// End-of-sequence id(s).
    #[allow(dead_code, reason = "parsed as transformers writes it, not used")]
    pub eos_token_id: Option<OneOrMany>,
}

/// Resolved shape of multi-head latent attention.
#[derive(Debug, Clone, PartialEq)]
pub struct MlaConfig {
    /// Attention heads.
    pub num_heads: usize,
    /// Width of the compressed query, or `None` for a plain `q_proj`.
    pub q_lora_rank: Option<usize>,
    /// Width of the compressed key/value latent.
    pub kv_lora_rank: usize,
    /// Unrotated query/key dimensions per head.
    pub qk_nope_head_dim: usize,
    /// Rotated query/key dimensions per head (and of the shared rope key).
    pub qk_rope_head_dim: usize,
    /// Value dimensions per head.
    pub v_head_dim: usize,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    pub attention_bias: bool,
    /// The softmax scale: `(qk_nope + qk_rope)^-½`, times YaRN's `mscale²`.
    pub softmax_scale: f32,
}

impl MlaConfig {
    /// Query/key dimensions per head.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

/// Resolved mixture-of-experts parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// How tokens are routed.
    pub router: RouterConfig,
    /// Width of one routed expert's inner layer.
    pub moe_intermediate_size: usize,
    /// Shared experts (one MLP `n × moe_intermediate_size` wide), if any.
    pub n_shared_experts: Option<usize>,
    /// The first layers that stay dense.
    pub first_k_dense_replace: usize,
    /// Every `moe_layer_freq`-th layer past those is MoE.
    pub moe_layer_freq: usize,
}

/// Resolved hyper-parameters of a DeepSeek-V2/V3 decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepseekConfig {
    /// V2 or V3.
    pub version: DeepseekVersion,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f32,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Whether the output head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Latent attention.
    pub attention: MlaConfig,
    /// Rotary embedding of the `qk_rope_head_dim` dimensions.
    pub rope: RopeConfig,
    /// Width of the dense MLPs' inner layer.
    pub intermediate_size: usize,
    /// Biases on the dense and shared MLPs.
    pub mlp_bias: bool,
    /// Experts, if the checkpoint has any.
    pub moe: Option<MoeConfig>,
}

impl DeepseekConfig {
    /// Whether layer `i` is a mixture of experts (else a dense MLP): past
    /// the first `first_k_dense_replace` layers, every `moe_layer_freq`-th.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| {
            i >= m.first_k_dense_replace && i.is_multiple_of(m.moe_layer_freq.max(1))
        })
    }

    /// The llama-shaped summary the engine and server read through
    /// [`crate::CausalLm::config`]: every head has its own (decompressed)
    /// key, so `num_key_value_heads = num_attention_heads`, and `head_dim`
    /// is the query/key head width; `intermediate_size` is the dense MLPs'.
    pub fn model_config(&self) -> ModelConfig {
        let a = &self.attention;
        ModelConfig {
            architecture: match self.version {
                DeepseekVersion::V2 => Architecture::DeepseekV2,
                DeepseekVersion::V3 => Architecture::DeepseekV3,
            },
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: a.num_heads,
            num_key_value_heads: a.num_heads,
            head_dim: a.qk_head_dim(),
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            rope: self.rope.clone(),
            qkv_bias: a.attention_bias,
            qk_norm: false,
            sliding_window: None,
            experts: None,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

impl DeepseekHfConfig {
    /// The version `model_type` names, if it is a DeepSeek one.
    pub fn version_of(model_type: &str) -> Option<DeepseekVersion> {
        match model_type {
            "deepseek_v2" => Some(DeepseekVersion::V2),
            "deepseek_v3" => Some(DeepseekVersion::V3),
            _ => None,
        }
    }

    /// Resolves defaults, routing and rope scaling into the config the
    /// forward pass uses; the error names the offending field.
    pub fn resolve(&self) -> Result<DeepseekConfig, String> {
        let version = Self::version_of(&self.model_type).ok_or_else(|| {
            format!(
                "model_type `{}` is not deepseek_v2 or deepseek_v3",
                self.model_type
            )
        })?;
        let v3 = version == DeepseekVersion::V3;
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act `{}`: only silu is implemented",
                self.hidden_act
            ));
        }
        check_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ])?;
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(format!(
                "qk_rope_head_dim ({}) must be even",
                self.qk_rope_head_dim
            ));
        }
        if self.q_lora_rank == Some(0) {
            return Err("q_lora_rank must be positive or null".into());
        }
        if let Some(kv) = self.num_key_value_heads {
            if kv != self.num_attention_heads {
                return Err(format!(
                    "num_key_value_heads ({kv}) differs from num_attention_heads ({}): \
                     latent attention expands the latent to every head",
                    self.num_attention_heads
                ));
            }
        }
        let max_position_embeddings =
            self.max_position_embeddings
                .unwrap_or(if v3 { 4096 } else { 2048 });
        // transformers' `convert_rope_params_to_dict`: `rope_scaling` wins.
        let rope_spec = self.rope_scaling.as_ref().or(self.rope_parameters.as_ref());
        let scaling = match rope_spec {
            None => RopeScaling::None,
            Some(s) => resolve_hf_scaling(s, max_position_embeddings)?,
        };
        let theta = rope_spec
            .and_then(|p| p.rope_theta)
            .unwrap_or(self.rope_theta);
        // V2 rotates interleaved pairs (complex multiplication); V3 too unless
        // `rope_interleave` is false. The interleaved output of
        // transformers' V3 is de-interleaved, a permutation shared by q and k
        // that leaves their dot products unchanged.
        let layout = if v3 && self.rope_interleave == Some(false) {
            RopeLayout::Halves
        } else {
            RopeLayout::Interleaved
        };
        let qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim;
        let softmax_scale =
            ((qk_head_dim as f64).powf(-0.5) * scaling.yarn_softmax_mscale()) as f32;
        let attention = MlaConfig {
            num_heads: self.num_attention_heads,
            q_lora_rank: self.q_lora_rank,
            kv_lora_rank: self.kv_lora_rank,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            attention_bias: self.attention_bias,
            softmax_scale,
        };
        let moe = match self.n_routed_experts {
            None | Some(0) => None,
            Some(n_routed_experts) => Some(self.resolve_moe(version, n_routed_experts)?),
        };
        Ok(DeepseekConfig {
            version,
            hidden_size: self.hidden_size,
            vocab_size: self.vocab_size,
            num_hidden_layers: self.num_hidden_layers,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            attention,
            rope: RopeConfig {
                theta,
                dim: self.qk_rope_head_dim,
                layout,
                scaling,
            },
            intermediate_size: self.intermediate_size,
            mlp_bias: self.mlp_bias,
            moe,
        })
    }

    fn resolve_moe(
        &self,
        version: DeepseekVersion,
        n_routed_experts: usize,
    ) -> Result<MoeConfig, String> {
        let v3 = version == DeepseekVersion::V3;
        let top_k = self
            .num_experts_per_tok
            .ok_or("num_experts_per_tok is needed with n_routed_experts")?;
        if top_k == 0 || top_k > n_routed_experts {
            return Err(format!(
                "num_experts_per_tok ({top_k}) must be in 1..={n_routed_experts} (n_routed_experts)"
            ));
        }
        let moe_intermediate_size =
            self.moe_intermediate_size
                .unwrap_or(if v3 { 2048 } else { 1407 });
        if moe_intermediate_size == 0 {
            return Err("moe_intermediate_size must be positive".into());
        }
        let groups = |n_group: Option<usize>, topk_group: Option<usize>| {
            let n_group = n_group.unwrap_or(1);
            let topk_group = topk_group.unwrap_or(n_group);
            if n_group == 0 || !n_routed_experts.is_multiple_of(n_group) {
                return Err(format!(
                    "n_group ({n_group}) must divide n_routed_experts ({n_routed_experts})"
                ));
            }
            if topk_group == 0 || topk_group > n_group {
                return Err(format!(
                    "topk_group ({topk_group}) must be in 1..={n_group} (n_group)"
                ));
            }
            if top_k > topk_group * (n_routed_experts / n_group) {
                return Err(format!(
                    "num_experts_per_tok ({top_k}) exceeds the experts of topk_group ({topk_group}) groups"
                ));
            }
            Ok((n_group, topk_group))
        };
        let norm_topk_prob = self.norm_topk_prob.unwrap_or(v3);
        let gate = match version {
            DeepseekVersion::V2 => {
                if let Some(f) = self.scoring_func.as_deref().filter(|f| *f != "softmax") {
                    return Err(format!(
                        "scoring_func `{f}`: DeepSeek-V2 routes with softmax"
                    ));
                }
                let topk = match self.topk_method.as_deref().unwrap_or("greedy") {
                    "greedy" => SoftmaxTopk::Greedy,
                    "group_limited_greedy" => {
                        let (n_group, topk_group) = groups(self.n_group, self.topk_group)?;
                        SoftmaxTopk::GroupLimitedGreedy {
                            n_group,
                            topk_group,
                        }
                    }
                    other => {
                        return Err(format!(
                            "topk_method `{other}` (supported for deepseek_v2: greedy, group_limited_greedy)"
                        ))
                    }
                };
                Gate::Softmax {
                    topk,
                    norm_topk_prob,
                }
            }
            DeepseekVersion::V3 => {
                if let Some(f) = self.scoring_func.as_deref().filter(|f| *f != "sigmoid") {
                    return Err(format!(
                        "scoring_func `{f}`: DeepSeek-V3 routes with sigmoid"
                    ));
                }
                if let Some(m) = self.topk_method.as_deref().filter(|m| *m != "noaux_tc") {
                    return Err(format!(
                        "topk_method `{m}` (supported for deepseek_v3: noaux_tc)"
                    ));
                }
                let (n_group, topk_group) = groups(self.n_group, self.topk_group)?;
                if n_routed_experts / n_group < 2 {
                    return Err(format!(
                        "groups of {} experts: V3 scores a group by its top two",
                        n_routed_experts / n_group
                    ));
                }
                Gate::Sigmoid {
                    n_group,
                    topk_group,
                    norm_topk_prob,
                }
            }
        };
        Ok(MoeConfig {
            router: RouterConfig {
                n_routed_experts,
                top_k,
                routed_scaling_factor: self.routed_scaling_factor.unwrap_or(if v3 {
                    2.5
                } else {
                    1.0
                }),
                gate,
            },
            moe_intermediate_size,
            n_shared_experts: self.n_shared_experts.filter(|&n| n > 0),
            first_k_dense_replace: self.first_k_dense_replace.unwrap_or(if v3 { 3 } else { 0 }),
            moe_layer_freq: self.moe_layer_freq.max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DeepseekHfConfig {
        serde_json::from_str(json).expect("valid config")
    }

    /// DeepSeek-V2-Lite's config.json (abridged to the fields it sets).
    const V2_LITE: &str = r#"{"model_type":"deepseek_v2","architectures":["DeepseekV2ForCausalLM"],
        "vocab_size":102400,"hidden_size":2048,"intermediate_size":10944,"moe_intermediate_size":1408,
        "num_hidden_layers":27,"num_attention_heads":16,"num_key_value_heads":16,
        "n_shared_experts":2,"n_routed_experts":64,"routed_scaling_factor":1.0,
        "kv_lora_rank":512,"q_lora_rank":null,"qk_rope_head_dim":64,"v_head_dim":128,
        "qk_nope_head_dim":128,"topk_method":"greedy","n_group":1,"topk_group":1,
        "num_experts_per_tok":6,"moe_layer_freq":1,"first_k_dense_replace":1,
        "norm_topk_prob":false,"scoring_func":"softmax","max_position_embeddings":163840,
        "rms_norm_eps":1e-06,"rope_theta":10000,
        "rope_scaling":{"beta_fast":32,"beta_slow":1,"factor":40,"mscale":0.707,
          "mscale_all_dim":0.707,"original_max_position_embeddings":4096,"type":"yarn"},
        "bos_token_id":100000,"eos_token_id":100001}"#;

    /// DeepSeek-V3's config.json (abridged).
    const V3: &str = r#"{"model_type":"deepseek_v3","architectures":["DeepseekV3ForCausalLM"],
        "vocab_size":129280,"hidden_size":7168,"intermediate_size":18432,"moe_intermediate_size":2048,
        "num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,
        "n_shared_experts":1,"n_routed_experts":256,"routed_scaling_factor":2.5,
        "kv_lora_rank":512,"q_lora_rank":1536,"qk_rope_head_dim":64,"v_head_dim":128,
        "qk_nope_head_dim":128,"topk_method":"noaux_tc","n_group":8,"topk_group":4,
        "num_experts_per_tok":8,"moe_layer_freq":1,"first_k_dense_replace":3,
        "norm_topk_prob":true,"scoring_func":"sigmoid","max_position_embeddings":163840,
        "rope_scaling":{"beta_fast":32,"beta_slow":1,"factor":40,"mscale":1.0,
          "mscale_all_dim":1.0,"original_max_position_embeddings":4096,"type":"yarn"}}"#;

    #[test]
    fn v2_lite_resolves_plain_q_and_greedy_softmax_routing() {
        let c = parse(V2_LITE).resolve().expect("resolves");
        assert_eq!(c.version, DeepseekVersion::V2);
        assert_eq!(c.attention.q_lora_rank, None);
        assert_eq!(c.rope.dim, 64);
        assert_eq!(c.rope.layout, RopeLayout::Interleaved);
        assert!(matches!(c.rope.scaling, RopeScaling::Yarn { factor, .. } if factor == 40.0));
        // 192^-½ · (0.1 · 0.707 · ln 40 + 1)².
        let m = 0.1 * 0.707 * 40f64.ln() + 1.0;
        let want = (192f64.powf(-0.5) * m * m) as f32;
        assert_eq!(c.attention.softmax_scale, want);
        let moe = c.moe.as_ref().expect("moe");
        assert_eq!(moe.router.top_k, 6);
        assert_eq!(
            moe.router.gate,
            Gate::Softmax {
                topk: SoftmaxTopk::Greedy,
                norm_topk_prob: false
            }
        );
        assert!(!c.is_moe_layer(0) && c.is_moe_layer(1) && c.is_moe_layer(26));
        let summary = c.model_config();
        assert_eq!(summary.architecture, Architecture::DeepseekV2);
        assert_eq!(
            (
                summary.num_attention_heads,
                summary.num_key_value_heads,
                summary.head_dim
            ),
            (16, 16, 192)
        );
    }

    #[test]
    fn v3_resolves_low_rank_q_and_biased_sigmoid_routing() {
        let c = parse(V3).resolve().expect("resolves");
        assert_eq!(c.attention.q_lora_rank, Some(1536));
        let moe = c.moe.as_ref().expect("moe");
        assert_eq!(
            moe.router.gate,
            Gate::Sigmoid {
                n_group: 8,
                topk_group: 4,
                norm_topk_prob: true
            }
        );
        assert_eq!(moe.router.routed_scaling_factor, 2.5);
        assert!(!c.is_moe_layer(2) && c.is_moe_layer(3));
        assert_eq!(c.model_config().architecture.name(), "deepseek_v3");
    }

    #[test]
    fn moe_layer_freq_and_missing_q_lora_rank() {
        let mut raw = parse(V3);
        raw.moe_layer_freq = 2;
        let c = raw.resolve().expect("resolves");
        assert!(!c.is_moe_layer(3) && c.is_moe_layer(4) && !c.is_moe_layer(5));
        // A config without the key gets transformers' default of 1536; `null` means none.
        let no_key = V2_LITE.replace(r#""q_lora_rank":null,"#, "");
        assert_eq!(parse(&no_key).q_lora_rank, Some(1536));
    }

    #[test]
    fn inconsistent_routing_is_named() {
        let err = parse(&V3.replace(r#""n_group":8"#, r#""n_group":7"#))
            .resolve()
            .unwrap_err();
        assert!(err.contains("n_group"), "{err}");
        let err = parse(&V2_LITE.replace("\"greedy\"", "\"noaux_tc\""))
            .resolve()
            .unwrap_err();
        assert!(err.contains("topk_method"), "{err}");
        let err = parse(&V3.replace("\"sigmoid\"", "\"softmax\""))
            .resolve()
            .unwrap_err();
        assert!(err.contains("scoring_func"), "{err}");
        let err = parse(&V2_LITE.replace(r#""num_experts_per_tok":6,"#, ""))
            .resolve()
            .unwrap_err();
        assert!(err.contains("num_experts_per_tok"), "{err}");
    }
}
