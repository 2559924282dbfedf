//! The gated feed-forward block `down(act(gate(x)) · up(x))` (Shazeer,
//! <https://arxiv.org/abs/2002.05202>): SwiGLU (`act` = SiLU) in llama,
//! qwen2 and DeepSeek's dense layers, shared experts and routed experts, as
//! Hugging Face's `LlamaMLP`; GeGLU (`act` = GELU, tanh approximation) in
//! Gemma 3, as `Gemma3MLP`.

use crate::error::{ModelError, Result};
use crate::formats::tensor_source::TensorSource;
use crate::layers::linear::{Activations, Linear};

/// The activation on the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateActivation {
    /// `x · sigmoid(x)` (SwiGLU).
    #[default]
    Silu,
    /// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (GeGLU, PyTorch's
    /// `gelu(approximate="tanh")`).
    GeluTanh,
}

/// The gate and up projections: two matrices, or one whose first `inner`
/// rows are the gate's (Phi-3's `gate_up_proj`).
#[derive(Debug)]
enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

/// A gated MLP: `gate_proj`, `up_proj` (or both as `gate_up_proj`), `down_proj`.
#[derive(Debug)]
pub struct SwiGlu {
    gate_up: GateUp,
    down_proj: Linear,
    activation: GateActivation,
}

impl SwiGlu {
    /// Wraps the three projections (`[inner, hidden]`, `[inner, hidden]`, `[hidden, inner]`).
    pub fn new(gate_proj: Linear, up_proj: Linear, down_proj: Linear) -> Self {
        Self {
            gate_up: GateUp::Separate {
                gate: gate_proj,
                up: up_proj,
            },
            down_proj,
            activation: GateActivation::Silu,
        }
    }

    /// The same block with `activation` on the gate.
    pub fn with_activation(mut self, activation: GateActivation) -> Self {
        self.activation = activation;
        self
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
        let fused = format!("{prefix}.gate_up_proj");
        if src.get(&format!("{fused}.weight"))?.is_some() {
            return Ok(Self {
                gate_up: GateUp::Fused(Linear::load(src, &fused, 2 * inner, hidden, bias, act)?),
                down_proj: Linear::load(
                    src,
                    &format!("{prefix}.down_proj"),
                    hidden,
                    inner,
                    bias,
                    act,
                )?,
                activation: GateActivation::Silu,
            });
        }
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
        let (mut gate, up) = match &self.gate_up {
            GateUp::Separate { gate, up } => {
                let gate_up = Linear::forward_group(&[gate, up], x, rows)?;
                let Ok([gate, up]) = <[Vec<f32>; 2]>::try_from(gate_up) else {
                    return Err(ModelError::InvalidBatch("two projections expected".into()));
                };
                (gate, up)
            }
            GateUp::Fused(both) => {
                let y = both.forward(x, rows)?;
                let inner = both.out_features() / 2;
                let (mut gate, mut up) = (
                    Vec::with_capacity(rows * inner),
                    Vec::with_capacity(rows * inner),
                );
                for row in y.chunks_exact(2 * inner) {
                    gate.extend_from_slice(&row[..inner]);
                    up.extend_from_slice(&row[inner..]);
                }
                (gate, up)
            }
        };
        match self.activation {
            GateActivation::Silu => {
                for (g, u) in gate.iter_mut().zip(&up) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            }
            GateActivation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                for (g, u) in gate.iter_mut().zip(&up) {
                    let x = *g;
                    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
                    *g = 0.5 * x * (1.0 + inner.tanh()) * u;
                }
            }
        }
        self.down_proj.forward(&gate, rows)
    }
}
