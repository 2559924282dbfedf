//! DeepSeek-V2/V3 GGUF files (`general.architecture = deepseek2`), as
//! llama.cpp's `convert_hf_to_gguf.py` writes them: the `deepseek2.*`
//! metadata read into a [`DeepseekHfConfig`] (so a GGUF resolves and is
//! validated exactly like a `config.json`), and a [`TensorSource`] that
//! serves the checkpoint's Hugging Face tensor names from llama.cpp's.
//!
//! Reference: llama.cpp `src/llama-model.cpp` (`LLM_ARCH_DEEPSEEK2`) and
//! `convert_hf_to_gguf.py` (`DeepseekV2Model`). Where they differ from the
//! checkpoint's own semantics pagoda follows the checkpoint (transformers):
//!
//! - GGUF has no key for V2's `topk_method`. llama.cpp ranks expert groups
//!   by the sum of their two best scores whenever `expert_group_count > 1`
//!   (V3's rule); a softmax-gated (V2) file with groups is routed here with
//!   V2's `group_limited_greedy` (a group ranks by its best expert), as
//!   transformers and DeepSeek's code do.
//! - Which generation a file is comes from `expert_gating_func`: sigmoid
//!   (2) is V3 (and needs `exp_probs_b`), otherwise V2.
//!
//! Both layouts of the latent up-projection are read: `attn_kv_b` (older
//! converters) and the per-head `attn_k_b` (`W_UK,hᵀ`, `[heads,
//! kv_lora_rank, qk_nope]`) with `attn_v_b` (`W_UV,h`, `[heads, v_head_dim,
//! kv_lora_rank]`) of current ones. Routed experts are stored as one 3-D
//! tensor per projection and served per expert. F32/F16/BF16 matrices are
//! widened to dense f32, so they run on pagoda's batch-invariant dense kernel.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::families::config::HfRopeScaling;
use crate::families::deepseek::config::{DeepseekConfig, DeepseekHfConfig};
use crate::formats::gguf::experts::{expert_name, ExpertTensors};
use crate::formats::gguf::file::{gguf_name, GgufFile};
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;

/// The `general.architecture` of DeepSeek-V2/V3 GGUF files.
pub const ARCHITECTURE: &str = "deepseek2";

/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID`.
const GATING_SIGMOID: u32 = 2;

/// Reads the `deepseek2.*` metadata into the fields of a `config.json`.
pub fn deepseek_hf_config_from_gguf(file: &GgufFile) -> Result<DeepseekHfConfig> {
    let meta = file.meta();
    let key = |k: &str| format!("{ARCHITECTURE}.{k}");
    let opt_usize = |k: &str| meta.optional(&key(k), |m, k| m.usize(k));
    let opt_f32 = |k: &str| meta.optional(&key(k), |m, k| m.f32(k));
    let sigmoid =
        meta.optional(&key("expert_gating_func"), |m, k| m.u32(k))? == Some(GATING_SIGMOID);
    let rope_dim = meta.usize(&key("rope.dimension_count"))?;
    // Current converters write the MQA view of the latent as key/value_length
    // and the per-head sizes as *_mla; older ones only the per-head sizes.
    let key_length = match opt_usize("attention.key_length_mla")? {
        Some(k) => k,
        None => meta.usize(&key("attention.key_length"))?,
    };
    let v_head_dim = match opt_usize("attention.value_length_mla")? {
        Some(v) => v,
        None => meta.usize(&key("attention.value_length"))?,
    };
    let qk_nope_head_dim =
        key_length
            .checked_sub(rope_dim)
            .ok_or_else(|| ModelError::Metadata {
                path: file.path().to_path_buf(),
                key: key("attention.key_length_mla"),
                reason: format!("{key_length} is smaller than rope.dimension_count {rope_dim}"),
            })?;
    let n_group = opt_usize("expert_group_count")?;
    let topk_method = if sigmoid {
        "noaux_tc"
    } else if n_group.is_some_and(|g| g > 1) {
        "group_limited_greedy"
    } else {
        "greedy"
    };
    let rope_scaling = match meta.optional(&key("rope.scaling.type"), |m, k| m.str(k))? {
        None | Some("none") => None,
        Some(kind) => {
            // llama.cpp's `yarn_log_multiplier` is 0.1 · mscale_all_dim, and
            // its DeepSeek graph assumes mscale = mscale_all_dim (cos/sin unscaled).
            // Divided in f32, where the multiplier was stored, so that the
            // usual mscale_all_dim of 1 comes back exactly.
            let mscale_all_dim =
                opt_f32("rope.scaling.yarn_log_multiplier")?.map(|m| f64::from(m / 0.1));
            Some(HfRopeScaling {
                rope_type: Some(kind.to_string()),
                legacy_type: None,
                short_factor: None,
                long_factor: None,
                partial_rotary_factor: None,
                factor: opt_f32("rope.scaling.factor")?.map(f64::from),
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: opt_usize(
                    "rope.scaling.original_context_length",
                )?,
                rope_theta: None,
                beta_fast: opt_f32("rope.scaling.yarn_beta_fast")?.map(f64::from),
                beta_slow: opt_f32("rope.scaling.yarn_beta_slow")?.map(f64::from),
                mscale: mscale_all_dim,
                mscale_all_dim,
                attention_factor: None,
                truncate: None,
            })
        }
    };
    let vocab_size = match opt_usize("vocab_size")? {
        Some(v) => v,
        None => meta.strings("tokenizer.ggml.tokens")?.len(),
    };
    let n_routed_experts = opt_usize("expert_count")?;
    Ok(DeepseekHfConfig {
        model_type: if sigmoid {
            "deepseek_v3"
        } else {
            "deepseek_v2"
        }
        .to_string(),
        architectures: Vec::new(),
        vocab_size,
        hidden_size: meta.usize(&key("embedding_length"))?,
        intermediate_size: meta.usize(&key("feed_forward_length"))?,
        moe_intermediate_size: opt_usize("expert_feed_forward_length")?,
        num_hidden_layers: meta.usize(&key("block_count"))?,
        num_attention_heads: meta.usize(&key("attention.head_count"))?,
        // The GGUF's head_count_kv describes llama.cpp's MQA view (1); MLA
        // expands the latent to every head.
        num_key_value_heads: None,
        n_shared_experts: opt_usize("expert_shared_count")?,
        n_routed_experts,
        routed_scaling_factor: opt_f32("expert_weights_scale")?.map(f64::from),
        kv_lora_rank: meta.usize(&key("attention.kv_lora_rank"))?,
        q_lora_rank: opt_usize("attention.q_lora_rank")?.filter(|&r| r > 0),
        qk_rope_head_dim: rope_dim,
        v_head_dim,
        qk_nope_head_dim,
        topk_method: Some(topk_method.to_string()),
        n_group,
        topk_group: opt_usize("expert_group_used_count")?,
        num_experts_per_tok: opt_usize("expert_used_count")?,
        moe_layer_freq: 1,
        first_k_dense_replace: Some(opt_usize("leading_dense_block_count")?.unwrap_or(0)),
        norm_topk_prob: Some(
            meta.optional(&key("expert_weights_norm"), |m, k| m.bool(k))?
                .unwrap_or(false),
        ),
        scoring_func: Some(if sigmoid { "sigmoid" } else { "softmax" }.to_string()),
        hidden_act: "silu".to_string(),
        max_position_embeddings: Some(meta.usize(&key("context_length"))?),
        rms_norm_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
        rope_scaling,
        rope_parameters: None,
        rope_interleave: Some(true),
        attention_bias: false,
        mlp_bias: false,
        tie_word_embeddings: !file.has_tensor("output.weight"),
        bos_token_id: None,
        eos_token_id: None,
    })
}

/// Resolves a `deepseek2` GGUF file's configuration.
pub fn deepseek_config_from_gguf(file: &GgufFile) -> Result<DeepseekConfig> {
    deepseek_hf_config_from_gguf(file)?
        .resolve()
        .map_err(|reason| ModelError::InvalidFile {
            path: file.path().to_path_buf(),
            format: "GGUF",
            reason,
        })
}

/// A `deepseek2` GGUF file serving Hugging Face tensor names.
pub struct DeepseekGguf<'a> {
    file: &'a GgufFile,
    num_heads: usize,
    qk_nope_head_dim: usize,
    v_head_dim: usize,
    kv_lora_rank: usize,
    /// The routed experts, split out of their 3-D tensors.
    experts: ExpertTensors<'a>,
}

impl std::fmt::Debug for DeepseekGguf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepseekGguf")
            .field("file", &self.file.path())
            .finish()
    }
}

/// What a Hugging Face name is in the file.
enum Mapped {
    /// One GGUF tensor.
    Tensor(String),
    /// Expert `expert` of a 3-D GGUF tensor.
    Expert(String, usize),
    /// `kv_b_proj` of layer `layer`.
    KvB(usize),
}

fn map_name(hf_name: &str) -> Option<Mapped> {
    if let Some(g) = gguf_name(hf_name) {
        return Some(Mapped::Tensor(g));
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    if rest == "mlp.gate.e_score_correction_bias" {
        return Some(Mapped::Tensor(format!("blk.{layer}.exp_probs_b.bias")));
    }
    if rest == "self_attn.kv_b_proj.weight" {
        return Some(Mapped::KvB(layer.parse().ok()?));
    }
    if let Some((name, expert)) = expert_name(layer, rest) {
        return Some(Mapped::Expert(name, expert));
    }
    let (module, kind) = rest.rsplit_once('.')?;
    let gguf = match module {
        "self_attn.q_a_proj" => "attn_q_a",
        "self_attn.q_a_layernorm" => "attn_q_a_norm",
        "self_attn.q_b_proj" => "attn_q_b",
        "self_attn.kv_a_proj_with_mqa" => "attn_kv_a_mqa",
        "self_attn.kv_a_layernorm" => "attn_kv_a_norm",
        "mlp.gate" => "ffn_gate_inp",
        "mlp.shared_experts.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_experts.up_proj" => "ffn_up_shexp",
        "mlp.shared_experts.down_proj" => "ffn_down_shexp",
        _ => return None,
    };
    Some(Mapped::Tensor(format!("blk.{layer}.{gguf}.{kind}")))
}

/// F32/F16/BF16 tensors as dense f32 (pagoda's dense kernel); others as read.
fn widen(w: Weight) -> Result<Weight> {
    match w {
        Weight::Quantized(q) if q.dtype() == GgmlDType::F32 => {
            Ok(Weight::Dense(q.dequantize(&Device::Cpu)?))
        }
        other => other.widened(),
    }
}

impl<'a> DeepseekGguf<'a> {
    /// Serves `file`'s tensors for a model of `config`.
    pub fn new(file: &'a GgufFile, config: &DeepseekConfig) -> Self {
        let a = &config.attention;
        Self {
            file,
            num_heads: a.num_heads,
            qk_nope_head_dim: a.qk_nope_head_dim,
            v_head_dim: a.v_head_dim,
            kv_lora_rank: a.kv_lora_rank,
            experts: ExpertTensors::new(file),
        }
    }

    /// `kv_b_proj` (`[heads · (qk_nope + v), kv_lora_rank]`) of `layer`:
    /// `attn_kv_b` as stored, or rebuilt from `attn_k_b` and `attn_v_b`.
    fn kv_b(&self, layer: usize) -> Result<Option<Weight>> {
        if let Some(w) = self.file.tensor(&format!("blk.{layer}.attn_kv_b.weight"))? {
            return widen(w).map(Some);
        }
        let (h, nope, vd, lora) = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.v_head_dim,
            self.kv_lora_rank,
        );
        let k_name = format!("blk.{layer}.attn_k_b.weight");
        let v_name = format!("blk.{layer}.attn_v_b.weight");
        let (Some(k_b), Some(v_b)) = (self.file.tensor(&k_name)?, self.file.tensor(&v_name)?)
        else {
            return Ok(None);
        };
        let k_b = self.checked(&k_name, k_b, &[h, lora, nope])?;
        let v_b = self.checked(&v_name, v_b, &[h, vd, lora])?;
        let mut kv_b = vec![0.0f32; h * (nope + vd) * lora];
        for head in 0..h {
            let base = head * (nope + vd) * lora;
            // W_UK,h[n][l] = k_b[h][l][n].
            for l in 0..lora {
                for n in 0..nope {
                    kv_b[base + n * lora + l] = k_b[(head * lora + l) * nope + n];
                }
            }
            let v = &v_b[head * vd * lora..(head + 1) * vd * lora];
            kv_b[base + nope * lora..base + (nope + vd) * lora].copy_from_slice(v);
        }
        let t = Tensor::from_vec(kv_b, (h * (nope + vd), lora), &Device::Cpu)?;
        Ok(Some(Weight::Dense(t)))
    }

    fn checked(&self, name: &str, w: Weight, dims: &[usize]) -> Result<Vec<f32>> {
        crate::formats::tensor_source::check_shape(self.file.path(), name, &w, dims)?;
        w.to_f32_vec()
    }
}

impl TensorSource for DeepseekGguf<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        match map_name(name) {
            Some(Mapped::Tensor(g)) => self.file.tensor(&g)?.map(widen).transpose(),
            Some(Mapped::Expert(g, e)) => self.experts.expert(&g, e),
            Some(Mapped::KvB(layer)) => self.kv_b(layer),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(name: &str) -> String {
        match map_name(name) {
            Some(Mapped::Tensor(g)) => g,
            Some(Mapped::Expert(g, e)) => format!("{g}[{e}]"),
            Some(Mapped::KvB(l)) => format!("kv_b({l})"),
            None => "-".into(),
        }
    }

    #[test]
    fn hf_names_map_to_llama_cpp_names() {
        for (hf, gguf) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            (
                "model.layers.3.input_layernorm.weight",
                "blk.3.attn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "blk.3.attn_q.weight",
            ),
            (
                "model.layers.3.self_attn.q_a_layernorm.weight",
                "blk.3.attn_q_a_norm.weight",
            ),
            (
                "model.layers.3.self_attn.kv_a_proj_with_mqa.weight",
                "blk.3.attn_kv_a_mqa.weight",
            ),
            ("model.layers.3.self_attn.kv_b_proj.weight", "kv_b(3)"),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.3.mlp.gate.weight",
                "blk.3.ffn_gate_inp.weight",
            ),
            (
                "model.layers.3.mlp.gate.e_score_correction_bias",
                "blk.3.exp_probs_b.bias",
            ),
            (
                "model.layers.3.mlp.experts.17.down_proj.weight",
                "blk.3.ffn_down_exps.weight[17]",
            ),
            (
                "model.layers.3.mlp.shared_experts.up_proj.weight",
                "blk.3.ffn_up_shexp.weight",
            ),
            (
                "model.layers.0.mlp.gate_proj.weight",
                "blk.0.ffn_gate.weight",
            ),
            ("model.layers.0.mlp.unknown.weight", "-"),
        ] {
            assert_eq!(mapped(hf), gguf, "{hf}");
        }
    }
}
