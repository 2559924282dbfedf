//! `kv_b_proj` split per head for latent attention, and the attention's
//! shape: what [`crate::families::deepseek::mla_attention`] and its kernels
//! ([`crate::families::deepseek::mla_kernels`]) both read, kept apart so
//! that neither imports the other for it.

use crate::error::{ModelError, Result};

/// `kv_b_proj` split per head into the key up-projection `W_UK,h`
/// (`[qk_nope_head_dim, kv_lora_rank]`) and the value up-projection
/// `W_UV,h` (`[v_head_dim, kv_lora_rank]`), with the attention's shape.
#[derive(Debug, Clone)]
pub struct AbsorbedKvB {
    /// `kv_b_proj.weight` as stored: `[num_heads · (qk_nope + v), kv_lora_rank]`.
    weight: Vec<f32>,
    pub(crate) num_heads: usize,
    pub(crate) qk_nope_head_dim: usize,
    pub(crate) qk_rope_head_dim: usize,
    pub(crate) v_head_dim: usize,
    pub(crate) kv_lora_rank: usize,
    pub(crate) softmax_scale: f32,
}

/// The shape of latent attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaShape {
    /// Attention heads.
    pub num_heads: usize,
    /// Unrotated query/key dimensions per head.
    pub qk_nope_head_dim: usize,
    /// Rotated query/key dimensions per head (and of the shared rope key).
    pub qk_rope_head_dim: usize,
    /// Value dimensions per head.
    pub v_head_dim: usize,
    /// Width of the latent.
    pub kv_lora_rank: usize,
    /// Factor on every score before the softmax.
    pub softmax_scale: f32,
}

impl AbsorbedKvB {
    /// Splits `kv_b_proj.weight` (row-major, `[num_heads · (qk_nope_head_dim
    /// + v_head_dim), kv_lora_rank]`) for attention of `shape`.
    pub fn new(weight: Vec<f32>, shape: MlaShape) -> Result<Self> {
        let rows = shape.num_heads * (shape.qk_nope_head_dim + shape.v_head_dim);
        if weight.len() != rows * shape.kv_lora_rank {
            return Err(ModelError::Shape(format!(
                "kv_b_proj of {} values, expected {rows} x {}",
                weight.len(),
                shape.kv_lora_rank
            )));
        }
        Ok(Self {
            weight,
            num_heads: shape.num_heads,
            qk_nope_head_dim: shape.qk_nope_head_dim,
            qk_rope_head_dim: shape.qk_rope_head_dim,
            v_head_dim: shape.v_head_dim,
            kv_lora_rank: shape.kv_lora_rank,
            softmax_scale: shape.softmax_scale,
        })
    }

    /// The attention's shape.
    pub fn shape(&self) -> MlaShape {
        MlaShape {
            num_heads: self.num_heads,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            kv_lora_rank: self.kv_lora_rank,
            softmax_scale: self.softmax_scale,
        }
    }

    fn head_rows(&self, head: usize) -> &[f32] {
        let n = (self.qk_nope_head_dim + self.v_head_dim) * self.kv_lora_rank;
        &self.weight[head * n..(head + 1) * n]
    }

    /// `W_UK,h`: `[qk_nope_head_dim, kv_lora_rank]`.
    pub fn w_uk(&self, head: usize) -> &[f32] {
        &self.head_rows(head)[..self.qk_nope_head_dim * self.kv_lora_rank]
    }

    /// `W_UV,h`: `[v_head_dim, kv_lora_rank]`.
    pub fn w_uv(&self, head: usize) -> &[f32] {
        &self.head_rows(head)[self.qk_nope_head_dim * self.kv_lora_rank..]
    }
}
