//! Gemma 3 (text): a decoder whose layers alternate between attention over
//! a sliding window of recent positions (with their own rope base) and
//! attention over the whole context, with "sandwich" norms — each sublayer's
//! input and output normalised — per-head q/k norms, a GeGLU feed-forward,
//! scores scaled by `query_pre_attn_scalar^-1/2` and embeddings scaled by
//! `sqrt(hidden_size)`.
//!
//! Paper: Gemma Team, <https://arxiv.org/abs/2503.19786>. Reference
//! implementation: Hugging Face transformers `models/gemma3/modeling_gemma3.py`
//! (`Gemma3ForCausalLM`); field names follow its tensor names. Norm weights
//! are stored as `w` of `x · (1 + w)` by transformers and as `1 + w` by
//! llama.cpp's converter ([`config::Gemma3Config::norm_offset`]).
//!
//! The sliding layers are declared in the model's [`KvLayout`] window: the
//! engine gives them a pool of their own, of which a sequence holds only
//! the blocks its window still covers, so a long chat holds the whole
//! history in the global layers only (one in six).

pub mod config;

use crate::batch::{check_batch, flat_tokens, Logits, SeqChunk};
use crate::error::{ModelError, Result};
use crate::families::config::ModelConfig;
use crate::families::decoder::{
    add_in_place, attend_batch, load_embedding, load_lm_head, output_logits,
};
use crate::formats::tensor_source::TensorSource;
use crate::layers::attention::AttentionSpan;
use crate::layers::embedding::Embedding;
use crate::layers::kv_cache::{KvLayout, KvWindow, PagedKvCache};
use crate::layers::linear::{Activations, Linear};
use crate::layers::norm::RmsNorm;
use crate::layers::rope::{Rope, RopeAngles};
use crate::layers::swiglu::{GateActivation, SwiGlu};
use crate::model::CausalLm;

use config::Gemma3Config;

/// One decoder layer.
#[derive(Debug)]
struct Layer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: SwiGlu,
    post_feedforward_layernorm: RmsNorm,
    /// Attends over the sliding window (else the whole context).
    sliding: bool,
}

/// A Gemma 3 text model.
#[derive(Debug)]
pub struct Gemma3 {
    config: Gemma3Config,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    global_rope: Rope,
    local_rope: Rope,
}

impl Gemma3 {
    /// Builds the model from `src`, checking every tensor's shape, with
    /// block-quantized layers treating activations as `act` says.
    pub fn load_with(
        config: Gemma3Config,
        src: &dyn TensorSource,
        act: Activations,
    ) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidFile {
            path: src.path().to_path_buf(),
            format: "model configuration",
            reason,
        };
        config.base.validate().map_err(invalid)?;
        config.validate().map_err(invalid)?;
        let c = &config.base;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let norm = |name: &str, width: usize| -> Result<RmsNorm> {
            let mut w = src.require_vector(name, width)?;
            w.iter_mut().for_each(|v| *v += config.norm_offset);
            Ok(RmsNorm::new(w, c.rms_norm_eps))
        };
        let embed_tokens = load_embedding(src, c.vocab_size, h, act)?;
        let layers = config
            .sliding
            .iter()
            .enumerate()
            .map(|(i, &sliding)| {
                let p = format!("model.layers.{i}");
                let attn = format!("{p}.self_attn");
                let q_width = c.num_attention_heads * hd;
                Ok(Layer {
                    input_layernorm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                    q_proj: Linear::load(src, &format!("{attn}.q_proj"), q_width, h, false, act)?,
                    k_proj: Linear::load(
                        src,
                        &format!("{attn}.k_proj"),
                        c.kv_dim(),
                        h,
                        false,
                        act,
                    )?,
                    v_proj: Linear::load(
                        src,
                        &format!("{attn}.v_proj"),
                        c.kv_dim(),
                        h,
                        false,
                        act,
                    )?,
                    o_proj: Linear::load(src, &format!("{attn}.o_proj"), h, q_width, false, act)?,
                    q_norm: norm(&format!("{attn}.q_norm.weight"), hd)?,
                    k_norm: norm(&format!("{attn}.k_norm.weight"), hd)?,
                    post_attention_layernorm: norm(
                        &format!("{p}.post_attention_layernorm.weight"),
                        h,
                    )?,
                    pre_feedforward_layernorm: norm(
                        &format!("{p}.pre_feedforward_layernorm.weight"),
                        h,
                    )?,
                    mlp: SwiGlu::load(
                        src,
                        &format!("{p}.mlp"),
                        h,
                        c.intermediate_size,
                        false,
                        act,
                    )?
                    .with_activation(GateActivation::GeluTanh),
                    post_feedforward_layernorm: norm(
                        &format!("{p}.post_feedforward_layernorm.weight"),
                        h,
                    )?,
                    sliding,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm("model.norm.weight", h)?;
        let lm_head = load_lm_head(
            src,
            c.tie_word_embeddings,
            c.vocab_size,
            h,
            &embed_tokens,
            act,
        )?;
        Ok(Self {
            global_rope: Rope::new(&c.rope),
            local_rope: Rope::new(&config.local_rope),
            config,
            embed_tokens,
            layers,
            norm: final_norm,
            lm_head,
        })
    }

    /// The Gemma 3 hyper-parameters.
    pub fn gemma3_config(&self) -> &Gemma3Config {
        &self.config
    }
}

/// What every layer of one forward pass shares.
struct Step<'a> {
    batch: &'a [SeqChunk<'a>],
    rows: usize,
    global: &'a RopeAngles,
    local: &'a RopeAngles,
}

impl Layer {
    fn attention(
        &self,
        x: &[f32],
        layer: usize,
        config: &Gemma3Config,
        step: &Step<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<Vec<f32>> {
        let c = &config.base;
        let rows = step.rows;
        let qkv = Linear::forward_group(&[&self.q_proj, &self.k_proj, &self.v_proj], x, rows)?;
        let Ok([q, k, v]) = <[Vec<f32>; 3]>::try_from(qkv) else {
            return Err(ModelError::InvalidBatch(
                "three projections expected".into(),
            ));
        };
        // Rows of `head_dim`: every head of every token on its own.
        let (mut q, mut k) = (self.q_norm.forward(&q), self.k_norm.forward(&k));
        let angles = if self.sliding {
            step.local
        } else {
            step.global
        };
        angles.apply(&mut q, c.num_attention_heads, c.head_dim);
        angles.apply(&mut k, c.num_key_value_heads, c.head_dim);
        let span = AttentionSpan {
            scale: 1.0 / config.query_pre_attn_scalar.sqrt(),
            window: self.sliding.then_some(config.sliding_window),
        };
        let attn = attend_batch(step.batch, cache, layer, [&q, &k, &v], c, span);
        self.o_proj.forward(&attn, rows)
    }
}

impl CausalLm for Gemma3 {
    fn config(&self) -> &ModelConfig {
        &self.config.base
    }

    fn kv_layout(&self) -> KvLayout {
        let c = &self.config.base;
        KvLayout::per_head(c.num_hidden_layers, c.num_key_value_heads, c.head_dim).with_window(
            KvWindow::over(
                self.config.sliding_window,
                self.config.sliding.iter().copied(),
            ),
        )
    }

    fn forward(&self, batch: &[SeqChunk<'_>], cache: &mut PagedKvCache) -> Result<Logits> {
        let c = &self.config.base;
        check_batch(batch, cache, self.kv_layout(), c.max_position_embeddings)?;
        let (tokens, positions) = flat_tokens(batch);
        let rows = tokens.len();
        let (global, local) = (
            self.global_rope.angles(&positions),
            self.local_rope.angles(&positions),
        );
        let step = Step {
            batch,
            rows,
            global: &global,
            local: &local,
        };
        let mut x = self.embed_tokens.forward(&tokens, c.vocab_size)?;
        let scale = self.config.embed_scale;
        x.iter_mut().for_each(|v| *v *= scale);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x);
            let attn = layer.attention(&h, i, &self.config, &step, cache)?;
            add_in_place(&mut x, &layer.post_attention_layernorm.forward(&attn));
            let h = layer.pre_feedforward_layernorm.forward(&x);
            let mlp = layer.mlp.forward(&h, rows)?;
            add_in_place(&mut x, &layer.post_feedforward_layernorm.forward(&mlp));
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
