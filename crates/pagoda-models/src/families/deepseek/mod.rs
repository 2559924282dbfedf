//! The DeepSeek-V2/V3 decoder: multi-head latent attention
//! ([`mla_attention`]) and, past the first dense layers, a mixture
//! of experts in every block.
//!
//!
//! The mixture of experts is [`crate::layers::moe`], shared with Qwen3-MoE
//! and Mixtral.
//!
//! Papers: DeepSeek-V2 <https://arxiv.org/abs/2405.04434>, DeepSeek-V3
//! <https://arxiv.org/abs/2412.19437>. Reference implementation: Hugging
//! Face transformers `models/deepseek_v2/modeling_deepseek_v2.py` and
//! `models/deepseek_v3/modeling_deepseek_v3.py` (5.x); types and fields are
//! named after their tensors. V3's multi-token-prediction layers
//! (`model.layers.{num_hidden_layers}.*`) are not loaded.
//!
//! As in [`crate::families::llama`], the batch is flattened into one matrix so every
//! projection is one matrix product; attention runs per sequence through
//! its block table. The KV pool holds only the compressed latent and the
//! rotated rope key of each token ([`crate::layers::kv_cache::KvKind::Latent`]).
//!
//! The folder holds the decoder itself (here), its configuration
//! (`config`), latent attention ([`mla_attention`], its kernels in
//! `mla_kernels`, and the per-head split of `kv_b_proj` both use in
//! `absorbed_kv_b`).

pub(crate) mod absorbed_kv_b;
pub(crate) mod config;
pub mod mla_attention;
pub(crate) mod mla_kernels;

use crate::batch::{check_batch, flat_tokens, Logits, SeqChunk};
use crate::error::{ModelError, Result};
use crate::families::config::ModelConfig;
use crate::families::decoder::{load_embedding, load_lm_head, output_logits, residual_block};
use crate::families::deepseek::config::{DeepseekConfig, DeepseekVersion, MlaConfig, MoeConfig};
use crate::families::deepseek::mla_attention::{
    latent_attention, AbsorbedKvB, LatentQueries, MlaShape,
};
use crate::formats::tensor_source::TensorSource;
use crate::layers::embedding::Embedding;
use crate::layers::kv_cache::{KvLayout, LatentKv, PagedKvCache};
use crate::layers::linear::{Activations, Linear};
use crate::layers::moe::{load_experts, ExpertNames, Moe, Router};
use crate::layers::norm::RmsNorm;
use crate::layers::rope::{Rope, RopeAngles};
use crate::layers::swiglu::SwiGlu;
use crate::model::CausalLm;

/// The epsilon of `q_a_layernorm` and `kv_a_layernorm`: transformers (and
/// DeepSeek's code) build them with the RMSNorm default, not `rms_norm_eps`.
const LATENT_NORM_EPS: f32 = 1e-6;

/// How the queries are projected.
#[derive(Debug)]
enum QProj {
    /// `q_proj` straight from the hidden state (`q_lora_rank: null`, V2-Lite).
    Plain { q_proj: Linear },
    /// Through a compressed query: `q_b_proj(q_a_layernorm(q_a_proj(x)))`.
    LowRank {
        q_a_proj: Linear,
        q_a_layernorm: RmsNorm,
        q_b_proj: Linear,
    },
}

/// Multi-head latent attention's projections around the latent kernel.
#[derive(Debug)]
struct MlaAttention {
    q: QProj,
    /// `[kv_lora_rank + qk_rope_head_dim, hidden]`: the latent and the shared rope key.
    kv_a_proj_with_mqa: Linear,
    kv_a_layernorm: RmsNorm,
    /// `kv_b_proj`, split per head and absorbed into the attention.
    kv_b_proj: AbsorbedKvB,
    o_proj: Linear,
}

/// The feed-forward half of a block.
#[derive(Debug)]
enum Mlp {
    /// A SwiGLU MLP of `intermediate_size` (the first layers).
    Dense(SwiGlu),
    /// Routed and shared experts.
    Moe(Moe),
}

/// One transformer block.
#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: MlaAttention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// A DeepSeek-V2 or V3 causal language model.
#[derive(Debug)]
pub struct Deepseek {
    config: DeepseekConfig,
    /// The llama-shaped summary [`CausalLm::config`] returns.
    summary: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

impl MlaAttention {
    fn load(
        c: &MlaConfig,
        hidden: usize,
        src: &dyn TensorSource,
        prefix: &str,
        act: Activations,
    ) -> Result<Self> {
        let q_out = c.num_heads * c.qk_head_dim();
        let bias = c.attention_bias;
        let q = match c.q_lora_rank {
            None => QProj::Plain {
                q_proj: Linear::load(src, &format!("{prefix}.q_proj"), q_out, hidden, false, act)?,
            },
            Some(rank) => QProj::LowRank {
                q_a_proj: Linear::load(
                    src,
                    &format!("{prefix}.q_a_proj"),
                    rank,
                    hidden,
                    bias,
                    act,
                )?,
                q_a_layernorm: RmsNorm::new(
                    src.require_vector(&format!("{prefix}.q_a_layernorm.weight"), rank)?,
                    LATENT_NORM_EPS,
                ),
                q_b_proj: Linear::load(
                    src,
                    &format!("{prefix}.q_b_proj"),
                    q_out,
                    rank,
                    false,
                    act,
                )?,
            },
        };
        let kv_b_name = format!("{prefix}.kv_b_proj.weight");
        let kv_b_weight = src
            .require_shape(
                &kv_b_name,
                &[
                    c.num_heads * (c.qk_nope_head_dim + c.v_head_dim),
                    c.kv_lora_rank,
                ],
            )?
            .to_f32_vec()?;
        let shape = MlaShape {
            num_heads: c.num_heads,
            qk_nope_head_dim: c.qk_nope_head_dim,
            qk_rope_head_dim: c.qk_rope_head_dim,
            v_head_dim: c.v_head_dim,
            kv_lora_rank: c.kv_lora_rank,
            softmax_scale: c.softmax_scale,
        };
        Ok(Self {
            q,
            kv_a_proj_with_mqa: Linear::load(
                src,
                &format!("{prefix}.kv_a_proj_with_mqa"),
                c.kv_lora_rank + c.qk_rope_head_dim,
                hidden,
                bias,
                act,
            )?,
            kv_a_layernorm: RmsNorm::new(
                src.require_vector(&format!("{prefix}.kv_a_layernorm.weight"), c.kv_lora_rank)?,
                LATENT_NORM_EPS,
            ),
            kv_b_proj: AbsorbedKvB::new(kv_b_weight, shape)
                .map_err(|e| e.for_tensor(src.path(), &kv_b_name))?,
            o_proj: Linear::load(
                src,
                &format!("{prefix}.o_proj"),
                hidden,
                c.num_heads * c.v_head_dim,
                bias,
                act,
            )?,
        })
    }

    /// Attention of the batch's new tokens (`x`: `[rows, hidden]`, normed),
    /// writing their latent rows into `cache` first.
    fn forward(
        &self,
        x: &[f32],
        layer: usize,
        step: &Step<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<Vec<f32>> {
        let (c, angles, batch, rows) = (step.attention, step.angles, step.batch, step.rows);
        let first = match &self.q {
            QProj::Plain { q_proj } => q_proj,
            QProj::LowRank { q_a_proj, .. } => q_a_proj,
        };
        let projected = Linear::forward_group(&[first, &self.kv_a_proj_with_mqa], x, rows)?;
        let Ok([q_first, mut latent]) = <[Vec<f32>; 2]>::try_from(projected) else {
            return Err(ModelError::InvalidBatch("two projections expected".into()));
        };
        let mut q = match &self.q {
            QProj::Plain { .. } => q_first,
            QProj::LowRank {
                q_a_layernorm,
                q_b_proj,
                ..
            } => q_b_proj.forward(&q_a_layernorm.forward(&q_first), rows)?,
        };
        let (lora, rope) = (c.kv_lora_rank, c.qk_rope_head_dim);
        let width = lora + rope;
        // Each cache row: the normed latent, then the rotated rope key.
        for row in latent.chunks_exact_mut(width) {
            let normed = self.kv_a_layernorm.forward(&row[..lora]);
            row[..lora].copy_from_slice(&normed);
        }
        angles.apply_at(&mut latent, 1, width, lora);
        angles.apply_at(&mut q, c.num_heads, c.qk_head_dim(), c.qk_nope_head_dim);

        let q_row = c.num_heads * c.qk_head_dim();
        let mut offset = 0;
        let mut seqs = Vec::with_capacity(batch.len());
        for chunk in batch {
            let n = chunk.tokens.len();
            cache.write_latent(
                layer,
                chunk.block_table,
                chunk.start_pos,
                &latent[offset * width..(offset + n) * width],
            )?;
            seqs.push(LatentQueries {
                q: &q[offset * q_row..(offset + n) * q_row],
                start_pos: chunk.start_pos,
                block_table: chunk.block_table,
            });
            offset += n;
        }
        let attn = latent_attention(cache.latent_layer(layer)?, &seqs, &self.kv_b_proj);
        self.o_proj.forward(&attn, rows)
    }
}

impl Mlp {
    fn load_moe(
        m: &MoeConfig,
        c: &DeepseekConfig,
        src: &dyn TensorSource,
        prefix: &str,
        act: Activations,
    ) -> Result<Self> {
        let (h, n) = (c.hidden_size, m.router.n_routed_experts);
        // The router runs on f32 activations whatever the checkpoint's kernels.
        let gate = Linear::load(
            src,
            &format!("{prefix}.gate"),
            n,
            h,
            false,
            Activations::F32,
        )?;
        let (bias_name, gate_name) = (
            format!("{prefix}.gate.e_score_correction_bias"),
            format!("{prefix}.gate.weight"),
        );
        let bias = match c.version {
            DeepseekVersion::V3 => Some(src.require_vector(&bias_name, n)?),
            DeepseekVersion::V2 => None,
        };
        let router_tensor = match c.version {
            DeepseekVersion::V3 => &bias_name,
            DeepseekVersion::V2 => &gate_name,
        };
        let router = Router::new(m.router.clone(), bias)
            .map_err(|e| e.for_tensor(src.path(), router_tensor))?;
        let experts = load_experts(
            src,
            prefix,
            (n, h, m.moe_intermediate_size),
            ExpertNames::PROJ,
            act,
        )?;
        let shared_experts = m
            .n_shared_experts
            .map(|k| {
                SwiGlu::load(
                    src,
                    &format!("{prefix}.shared_experts"),
                    h,
                    k * m.moe_intermediate_size,
                    c.mlp_bias,
                    act,
                )
            })
            .transpose()?;
        let moe = Moe::new(gate, router, experts, shared_experts)
            .map_err(|e| e.for_tensor(src.path(), &gate_name))?;
        Ok(Mlp::Moe(moe))
    }

    fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match self {
            Mlp::Dense(mlp) => mlp.forward(x, rows),
            Mlp::Moe(moe) => moe.forward(x, rows),
        }
    }
}

/// What every layer of one forward pass shares.
struct Step<'a> {
    attention: &'a MlaConfig,
    angles: &'a RopeAngles,
    batch: &'a [SeqChunk<'a>],
    /// Total new tokens in the batch.
    rows: usize,
}

impl Deepseek {
    /// Builds the model from `src`, checking every tensor's shape against
    /// `config`, with f32 activations.
    pub fn load(config: DeepseekConfig, src: &dyn TensorSource) -> Result<Self> {
        Self::load_with(config, src, Activations::F32)
    }

    /// [`Deepseek::load`], with block-quantized layers treating activations
    /// as `act` says.
    pub fn load_with(
        config: DeepseekConfig,
        src: &dyn TensorSource,
        act: Activations,
    ) -> Result<Self> {
        let c = &config;
        let h = c.hidden_size;
        let embed_tokens = load_embedding(src, c.vocab_size, h, act)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let mlp = match &c.moe {
                    Some(m) if c.is_moe_layer(i) => {
                        Mlp::load_moe(m, c, src, &format!("{p}.mlp"), act)?
                    }
                    _ => Mlp::Dense(SwiGlu::load(
                        src,
                        &format!("{p}.mlp"),
                        h,
                        c.intermediate_size,
                        c.mlp_bias,
                        act,
                    )?),
                };
                Ok(DecoderLayer {
                    input_layernorm: RmsNorm::new(
                        src.require_vector(&format!("{p}.input_layernorm.weight"), h)?,
                        c.rms_norm_eps,
                    ),
                    self_attn: MlaAttention::load(
                        &c.attention,
                        h,
                        src,
                        &format!("{p}.self_attn"),
                        act,
                    )?,
                    post_attention_layernorm: RmsNorm::new(
                        src.require_vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
                        c.rms_norm_eps,
                    ),
                    mlp,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(src.require_vector("model.norm.weight", h)?, c.rms_norm_eps);
        let lm_head = load_lm_head(
            src,
            c.tie_word_embeddings,
            c.vocab_size,
            h,
            &embed_tokens,
            act,
        )?;
        let rope = Rope::new(&c.rope);
        let summary = c.model_config();
        Ok(Self {
            config,
            summary,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
        })
    }

    /// The full DeepSeek hyper-parameters ([`CausalLm::config`] gives the
    /// llama-shaped summary).
    pub fn deepseek_config(&self) -> &DeepseekConfig {
        &self.config
    }
}

impl CausalLm for Deepseek {
    fn config(&self) -> &ModelConfig {
        &self.summary
    }

    fn kv_layout(&self) -> KvLayout {
        let a = &self.config.attention;
        KvLayout::latent(
            self.config.num_hidden_layers,
            LatentKv {
                kv_lora_rank: a.kv_lora_rank,
                qk_rope_head_dim: a.qk_rope_head_dim,
                num_heads: a.num_heads,
                qk_nope_head_dim: a.qk_nope_head_dim,
                v_head_dim: a.v_head_dim,
            },
        )
    }

    fn forward(&self, batch: &[SeqChunk<'_>], cache: &mut PagedKvCache) -> Result<Logits> {
        let c = &self.config;
        check_batch(batch, cache, self.kv_layout(), c.max_position_embeddings)?;
        let (tokens, positions) = flat_tokens(batch);
        let rows = tokens.len();
        let angles = self.rope.angles(&positions);
        let step = Step {
            attention: &c.attention,
            angles: &angles,
            batch,
            rows,
        };
        let mut x = self.embed_tokens.forward(&tokens, c.vocab_size)?;
        for (i, layer) in self.layers.iter().enumerate() {
            residual_block(
                &mut x,
                &layer.input_layernorm,
                |h| layer.self_attn.forward(h, i, &step, cache),
                &layer.post_attention_layernorm,
                |h| layer.mlp.forward(h, rows),
            )?;
        }
        output_logits(
            batch,
            &x,
            &self.norm,
            &self.lm_head,
            c.hidden_size,
            c.vocab_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::formats::weight::Weight;

    /// Tensors held in memory, by name.
    struct Memory(HashMap<String, Weight>);

    impl TensorSource for Memory {
        fn path(&self) -> &Path {
            Path::new("memory")
        }

        fn get(&self, name: &str) -> Result<Option<Weight>> {
            Ok(self.0.get(name).cloned())
        }
    }

    fn tensor(dims: &[usize], seed: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).expect("tensor")
    }

    #[test]
    fn fused_and_per_expert_layouts_load_the_same_experts() {
        let (n, hidden, inner) = (3, 32, 8);
        let gate_up = tensor(&[n, 2 * inner, hidden], 1.0);
        let down = tensor(&[n, hidden, inner], 2.0);
        let fused = Memory(HashMap::from([
            (
                "mlp.experts.gate_up_proj".to_string(),
                Weight::Dense(gate_up.clone()),
            ),
            (
                "mlp.experts.down_proj".to_string(),
                Weight::Dense(down.clone()),
            ),
        ]));
        let mut split = HashMap::new();
        for e in 0..n {
            let gu = gate_up.get(e).expect("expert");
            for (proj, t) in [
                ("gate_proj", gu.narrow(0, 0, inner).expect("gate")),
                ("up_proj", gu.narrow(0, inner, inner).expect("up")),
                ("down_proj", down.get(e).expect("down")),
            ] {
                let t = t.contiguous().expect("contiguous");
                split.insert(format!("mlp.experts.{e}.{proj}.weight"), Weight::Dense(t));
            }
        }
        let a = load_experts(
            &fused,
            "mlp",
            (n, hidden, inner),
            ExpertNames::PROJ,
            Activations::F32,
        )
        .expect("fused");
        let b = load_experts(
            &Memory(split),
            "mlp",
            (n, hidden, inner),
            ExpertNames::PROJ,
            Activations::F32,
        )
        .expect("per expert");
        let x: Vec<f32> = (0..2 * hidden).map(|i| (i as f32 * 0.1).cos()).collect();
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.forward(&x, 2).expect("a"), b.forward(&x, 2).expect("b"));
        }
        let missing = Memory(HashMap::new());
        let err = load_experts(
            &missing,
            "mlp",
            (n, hidden, inner),
            ExpertNames::PROJ,
            Activations::F32,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("mlp.experts.0.gate_proj.weight"),
            "{err}"
        );
    }
}
