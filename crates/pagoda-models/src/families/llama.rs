//! The llama family of decoders: Llama 2/3, SmolLM2, DeepSeek-R1-Distill-Llama,
//! Qwen2 / DeepSeek-R1-Distill-Qwen (the same block with q/k/v biases),
//! Qwen3 dense (no biases; q and k RMS-normalised per head before the
//! rotation) and Mistral (every layer over a sliding window when the
//! checkpoint sets one).
//!
//! Paper: Touvron et al., <https://arxiv.org/abs/2302.13971>. Reference
//! implementation: Hugging Face transformers `models/llama/modeling_llama.py`,
//! `models/qwen2/modeling_qwen2.py` and `models/qwen3/modeling_qwen3.py`;
//! field names follow their tensor names.
//!
//! The forward pass takes the new tokens of a whole batch flattened into one
//! matrix: every projection is one matrix product for the batch; only
//! attention runs per sequence, through its block table into the paged cache.

use crate::batch::{check_batch, flat_tokens, Logits, SeqChunk};
use crate::error::{ModelError, Result};
use crate::families::config::ModelConfig;
use crate::families::decoder::{
    attend_batch, load_embedding, load_lm_head, output_logits, residual_block,
};
use crate::formats::tensor_source::TensorSource;
use crate::layers::attention::AttentionSpan;
use crate::layers::embedding::Embedding;
use crate::layers::kv_cache::{KvLayout, PagedKvCache};
use crate::layers::linear::{Activations, Linear};
use crate::layers::moe::{load_experts, Gate, Moe, Router, RouterConfig, SoftmaxTopk};
use crate::layers::norm::RmsNorm;
use crate::layers::rope::{Rope, RopeAngles};
use crate::layers::swiglu::SwiGlu;
use crate::model::CausalLm;

/// Multi-head self-attention with grouped-query heads.
#[derive(Debug)]
struct SelfAttention {
    qkv: Qkv,
    o_proj: Linear,
    /// Qwen3's per-head RMSNorms of q and k, applied before the rotation.
    qk_norm: Option<QkNorm>,
}

/// The query, key and value projections: three matrices, or one whose rows
/// are q's, then k's, then v's (Phi-3's `qkv_proj`).
#[derive(Debug)]
enum Qkv {
    Separate([Linear; 3]),
    Fused(Linear),
}

impl Qkv {
    /// q, k and v of `rows` rows of `x`; `widths` are their row widths.
    fn project(&self, x: &[f32], rows: usize, widths: [usize; 3]) -> Result<[Vec<f32>; 3]> {
        match self {
            Qkv::Separate([q, k, v]) => {
                let qkv = Linear::forward_group(&[q, k, v], x, rows)?;
                <[Vec<f32>; 3]>::try_from(qkv)
                    .map_err(|_| ModelError::InvalidBatch("three projections expected".into()))
            }
            Qkv::Fused(all) => {
                let y = all.forward(x, rows)?;
                let mut out: [Vec<f32>; 3] =
                    std::array::from_fn(|i| Vec::with_capacity(rows * widths[i]));
                for row in y.chunks_exact(widths.iter().sum()) {
                    let (q, rest) = row.split_at(widths[0]);
                    let (k, v) = rest.split_at(widths[1]);
                    out[0].extend_from_slice(q);
                    out[1].extend_from_slice(k);
                    out[2].extend_from_slice(v);
                }
                Ok(out)
            }
        }
    }
}

/// The norms of every query head and every key head (one weight of
/// `head_dim` each, shared by the heads).
#[derive(Debug)]
struct QkNorm {
    q: RmsNorm,
    k: RmsNorm,
}

/// A block's feed-forward part.
#[derive(Debug)]
enum FeedForward {
    /// One SwiGLU MLP.
    Dense(SwiGlu),
    /// Routed experts (Qwen3-MoE's sparse layers, Mixtral).
    Experts(Moe),
}

impl FeedForward {
    fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x, rows),
            FeedForward::Experts(moe) => moe.forward(x, rows),
        }
    }

    /// Layer `layer`'s feed-forward under `p` (`model.layers.{layer}`).
    fn load(
        c: &ModelConfig,
        src: &dyn TensorSource,
        p: &str,
        layer: usize,
        act: Activations,
    ) -> Result<Self> {
        let h = c.hidden_size;
        let Some(x) = c.experts.as_ref().filter(|x| x.sparse_layers[layer]) else {
            return Ok(FeedForward::Dense(SwiGlu::load(
                src,
                &format!("{p}.mlp"),
                h,
                c.intermediate_size,
                false,
                act,
            )?));
        };
        let prefix = format!("{p}.{}", x.module);
        // The router runs on f32 activations whatever the checkpoint's kernels.
        let gate = Linear::load(
            src,
            &format!("{prefix}.gate"),
            x.num_experts,
            h,
            false,
            Activations::F32,
        )?;
        let router = Router::new(
            RouterConfig {
                n_routed_experts: x.num_experts,
                top_k: x.top_k,
                routed_scaling_factor: 1.0,
                gate: Gate::Softmax {
                    topk: SoftmaxTopk::Greedy,
                    norm_topk_prob: x.norm_topk_prob,
                },
            },
            None,
        )?;
        let experts = load_experts(src, &prefix, (x.num_experts, h, x.inner), x.names, act)?;
        Ok(FeedForward::Experts(Moe::new(gate, router, experts, None)?))
    }
}

/// One transformer block.
#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: FeedForward,
}

/// A llama-style causal language model.
#[derive(Debug)]
pub struct Llama {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

impl Llama {
    /// Builds the model from `src`, checking every tensor's shape against
    /// `config`, with f32 activations.
    pub fn load(config: ModelConfig, src: &dyn TensorSource) -> Result<Self> {
        Self::load_with(config, src, Activations::F32)
    }

    /// [`Llama::load`], with block-quantized layers treating activations as
    /// `act` says.
    pub fn load_with(
        config: ModelConfig,
        src: &dyn TensorSource,
        act: Activations,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|reason| ModelError::InvalidFile {
                path: src.path().to_path_buf(),
                format: "model configuration",
                reason,
            })?;
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let embed_tokens = load_embedding(src, c.vocab_size, h, act)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let attn = format!("{p}.self_attn");
                Ok(DecoderLayer {
                    input_layernorm: RmsNorm::new(
                        src.require_vector(&format!("{p}.input_layernorm.weight"), h)?,
                        c.rms_norm_eps,
                    ),
                    self_attn: SelfAttention {
                        qkv: if src.get(&format!("{attn}.qkv_proj.weight"))?.is_some() {
                            Qkv::Fused(Linear::load(
                                src,
                                &format!("{attn}.qkv_proj"),
                                c.num_attention_heads * hd + 2 * c.kv_dim(),
                                h,
                                c.qkv_bias,
                                act,
                            )?)
                        } else {
                            let proj = |name: &str, out: usize| {
                                Linear::load(
                                    src,
                                    &format!("{attn}.{name}"),
                                    out,
                                    h,
                                    c.qkv_bias,
                                    act,
                                )
                            };
                            Qkv::Separate([
                                proj("q_proj", c.num_attention_heads * hd)?,
                                proj("k_proj", c.kv_dim())?,
                                proj("v_proj", c.kv_dim())?,
                            ])
                        },
                        o_proj: Linear::load(
                            src,
                            &format!("{attn}.o_proj"),
                            h,
                            c.num_attention_heads * hd,
                            false,
                            act,
                        )?,
                        qk_norm: if c.qk_norm {
                            Some(QkNorm {
                                q: RmsNorm::new(
                                    src.require_vector(&format!("{attn}.q_norm.weight"), hd)?,
                                    c.rms_norm_eps,
                                ),
                                k: RmsNorm::new(
                                    src.require_vector(&format!("{attn}.k_norm.weight"), hd)?,
                                    c.rms_norm_eps,
                                ),
                            })
                        } else {
                            None
                        },
                    },
                    post_attention_layernorm: RmsNorm::new(
                        src.require_vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
                        c.rms_norm_eps,
                    ),
                    mlp: FeedForward::load(c, src, &p, i, act)?,
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
        Ok(Self {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
        })
    }
}

/// What every layer of one forward pass shares.
struct Step<'a> {
    config: &'a ModelConfig,
    angles: &'a RopeAngles,
    batch: &'a [SeqChunk<'a>],
    /// Total new tokens in the batch.
    rows: usize,
}

impl SelfAttention {
    fn forward(
        &self,
        x: &[f32],
        layer: usize,
        step: &Step<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<Vec<f32>> {
        let (c, angles, batch, rows) = (step.config, step.angles, step.batch, step.rows);
        let [mut q, mut k, v] = self.qkv.project(
            x,
            rows,
            [c.num_attention_heads * c.head_dim, c.kv_dim(), c.kv_dim()],
        )?;
        if let Some(norm) = &self.qk_norm {
            // Rows of `head_dim`: every head of every token on its own.
            q = norm.q.forward(&q);
            k = norm.k.forward(&k);
        }
        angles.apply(&mut q, c.num_attention_heads, c.head_dim);
        angles.apply(&mut k, c.num_key_value_heads, c.head_dim);

        let span = AttentionSpan {
            window: c.sliding_window,
            ..AttentionSpan::causal(c.head_dim)
        };
        let attn = attend_batch(batch, cache, layer, [&q, &k, &v], c, span);
        self.o_proj.forward(&attn, rows)
    }
}

impl CausalLm for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout::per_head(
            self.config.num_hidden_layers,
            self.config.num_key_value_heads,
            self.config.head_dim,
        )
    }

    fn forward(&self, batch: &[SeqChunk<'_>], cache: &mut PagedKvCache) -> Result<Logits> {
        self.forward_batch(batch, cache)
    }
}

impl Llama {
    fn forward_batch(&self, batch: &[SeqChunk<'_>], cache: &mut PagedKvCache) -> Result<Logits> {
        check_batch(
            batch,
            cache,
            self.kv_layout(),
            self.config.max_position_embeddings,
        )?;
        let c = &self.config;
        let (tokens, positions) = flat_tokens(batch);
        let rows = tokens.len();
        let angles = self.rope.angles(&positions);
        let step = Step {
            config: c,
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
