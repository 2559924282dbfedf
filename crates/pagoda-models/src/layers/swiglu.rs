//! The SwiGLU feed-forward block `down(silu(gate(x)) · up(x))` (Shazeer,
//! <https://arxiv.org/abs/2002.05202>) of llama, qwen2 and DeepSeek's dense
//! layers, shared experts and routed experts; as Hugging Face's `LlamaMLP`.

use crate::error::{ModelError, Result};
use crate::formats::tensor_source::TensorSource;
use crate::layers::linear::{Activations, Linear};

/// A SwiGLU MLP: `gate_proj`, `up_proj`, `down_proj`.
#[derive(Debug)]
pub struct SwiGlu {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl SwiGlu {
    /// Wraps the three projections (`[inner, hidden]`, `[inner, hidden]`, `[hidden, inner]`).
    pub fn new(gate_proj: Linear, up_proj: Linear, down_proj: Linear) -> Self {
        Self {
            gate_proj,
            up_proj,
            down_proj,
        }
    }

    /// Loads `{prefix}.gate_proj`, `{prefix}.up_proj` and `{prefix}.down_proj`
    /// for a `hidden` stream and an `inner`-wide middle layer.
    pub fn load(
        src: &dyn TensorSource,
        prefix: &str,
        hidden: usize,
        inner: usize,
        bias: bool,
        act: Activations,
    ) -> Result<Self> {
        Ok(Self::new(
            Linear::load(
                src,
                &format!("{prefix}.gate_proj"),
                inner,
                hidden,
                bias,
                act,
            )?,
            Linear::load(src, &format!("{prefix}.up_proj"), inner, hidden, bias, act)?,
            Linear::load(
                src,
                &format!("{prefix}.down_proj"),
                hidden,
                inner,
                bias,
                act,
            )?,
        ))
    }

    /// The block applied to `rows` rows of `x`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let gate_up = Linear::forward_group(&[&self.gate_proj, &self.up_proj], x, rows)?;
        let Ok([mut gate, up]) = <[Vec<f32>; 2]>::try_from(gate_up) else {
            return Err(ModelError::InvalidBatch("two projections expected".into()));
        };
        for (g, u) in gate.iter_mut().zip(&up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        self.down_proj.forward(&gate, rows)
    }
}
