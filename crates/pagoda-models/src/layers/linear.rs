//! A linear layer `y = x Wᵀ + b` over flattened token rows, whatever the
//! weight's storage (GGUF blocks or dense f32).

use std::sync::Arc;

use crate::error::{ModelError, Result};
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;
use crate::kernels::f32::{DenseMatrix, QuantMatrix};
use crate::kernels::half_precision::HalfMatrix;
use crate::kernels::int8::{ActivationPasses, Int8Weights};
use crate::kernels::panel::PanelMatrix;
use crate::kernels::plane::PlaneMatrix;

/// How pagoda's block kernels (GGUF Q4_0 … Q8_0, the K-quants, IQ4_NL)
/// treat the activations they multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Kept in f32: results match a dense f32 reference (transformers on
    /// the dequantized weights) up to summation order.
    F32,
    /// Quantized to 8 bits per 32-value block, as llama.cpp does: integer
    /// dot products, several times less arithmetic; on the default model
    /// logits move by up to ~1.5 (of a range of ~30), and greedy text
    /// follows llama.cpp's rather than transformers'. The default from a
    /// billion weights.
    Int8,
    /// Quantized in two 8-bit passes — the values, then what quantizing
    /// them left out — whose integer products are added: about 15 bits of
    /// precision, so results stay within f32 rounding noise of
    /// [`Activations::F32`]'s, for twice [`Activations::Int8`]'s integer
    /// arithmetic (the weights are still read once). The default for
    /// models under a billion weights
    /// ([`crate::formats::activation_choice::ActivationChoice::Auto`]).
    Int8x2,
}

impl Activations {
    /// The 8-bit passes of the integer kernels; `None` for f32.
    fn int8_passes(self) -> Option<ActivationPasses> {
        match self {
            Activations::F32 => None,
            Activations::Int8 => Some(ActivationPasses::One),
            Activations::Int8x2 => Some(ActivationPasses::Two),
        }
    }

    /// The name used in flags and logs (`int8`, `int8x2`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            Activations::Int8 => "int8",
            Activations::Int8x2 => "int8x2",
            Activations::F32 => "f32",
        }
    }
}

/// Which kernel computes the product.
#[derive(Debug, Clone)]
enum Kernel {
    /// pagoda's f32-activation block kernels (Q4_0, Q4_1, Q8_0).
    Blocks(Arc<QuantMatrix>),
    /// pagoda's 8-bit-activation block kernels (Q4_0, Q4_1, Q8_0).
    BlocksInt8(Arc<PanelMatrix>, ActivationPasses),
    /// pagoda's bit-plane kernels (K-quants, Q5_0, Q5_1) with 8-bit activations.
    PlanesInt8(Arc<PlaneMatrix>, ActivationPasses),
    /// The same weights with f32 activations.
    PlanesF32(Arc<PlaneMatrix>),
    /// pagoda's batch-invariant dense f32 kernel.
    Dense(Arc<DenseMatrix>),
    /// The same kernel on a matrix whose width is not a multiple of 32,
    /// stored with zero columns up to the next multiple (each input row is
    /// padded the same way): batch-invariant too.
    DensePadded(Arc<DenseMatrix>),
    /// pagoda's half-precision kernel (F16/BF16 weights, f32 activations).
    Half(Arc<HalfMatrix>),
}

/// A linear projection with an optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    kernel: Kernel,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Builds a layer from a `[out_features, in_features]` weight and an
    /// optional bias, with block-quantized weights treating activations as
    /// `activations` says.
    pub fn with_activations(
        weight: Weight,
        bias: Option<Vec<f32>>,
        activations: Activations,
    ) -> Result<Self> {
        let dims = weight.dims();
        let [out_features, in_features] = dims[..] else {
            return Err(ModelError::Shape(format!(
                "a linear weight must be a matrix, got shape {dims:?}"
            )));
        };
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(ModelError::Shape(format!(
                    "bias of {} values for {out_features} outputs",
                    b.len()
                )));
            }
        }
        let passes = activations.int8_passes();
        let kernel = match weight {
            Weight::Blocks(m) => match passes {
                None => Kernel::Blocks(m),
                Some(p) => Kernel::BlocksInt8(Arc::new(PanelMatrix::from_rows(&m)), p),
            },
            Weight::Panels(m) => match passes {
                None => Kernel::Blocks(Arc::new(m.to_rows())),
                Some(p) => Kernel::BlocksInt8(m, p),
            },
            Weight::Planes(m) => match passes {
                None => Kernel::PlanesF32(m),
                Some(p) => Kernel::PlanesInt8(m, p),
            },
            Weight::Half(m) => Kernel::Half(m),
            Weight::Quantized(q) => {
                return Err(ModelError::Shape(format!(
                    "a {:?} matrix: no pagoda kernel computes this type",
                    q.dtype()
                )))
            }
            Weight::Dense(t) if in_features.is_multiple_of(32) => {
                let data = t.flatten_all()?.to_vec1::<f32>()?;
                let m = DenseMatrix::new(out_features, in_features, data)
                    .map_err(|e| ModelError::Shape(e.to_string()))?;
                Kernel::Dense(Arc::new(m))
            }
            Weight::Dense(t) => {
                let data = t.flatten_all()?.to_vec1::<f32>()?;
                let padded_cols = in_features.next_multiple_of(32);
                let padded = pad_rows(&data, in_features, padded_cols);
                let m = DenseMatrix::new(out_features, padded_cols, padded)
                    .map_err(|e| ModelError::Shape(e.to_string()))?;
                Kernel::DensePadded(Arc::new(m))
            }
            Weight::DenseRows(m) => Kernel::Dense(m),
        };
        Ok(Self {
            kernel,
            bias,
            in_features,
            out_features,
        })
    }

    /// Loads `{prefix}.weight`, checked to be `[out, inp]`, and
    /// `{prefix}.bias` when `bias` is set (an error names the tensor).
    pub fn load(
        src: &dyn TensorSource,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        activations: Activations,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = src.require_shape(&name, &[out, inp])?;
        let bias = if bias {
            Some(src.require_vector(&format!("{prefix}.bias"), out)?)
        } else {
            None
        };
        Self::with_activations(weight, bias, activations)
            .map_err(|e| e.for_tensor(src.path(), &name))
    }

    /// Number of inputs per row.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Number of outputs per row.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Several projections of the same input (q/k/v, gate/up): block
    /// kernels of one kind run in a single parallel pass with the input
    /// prepared once; otherwise each runs on its own. Results equal
    /// [`Linear::forward`]'s, in order.
    pub fn forward_group(layers: &[&Linear], x: &[f32], rows: usize) -> Result<Vec<Vec<f32>>> {
        let f32_blocks: Option<Vec<&QuantMatrix>> = layers
            .iter()
            .map(|l| match &l.kernel {
                Kernel::Blocks(m) => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        let int8_blocks: Option<Vec<(&dyn Int8Weights, ActivationPasses)>> = layers
            .iter()
            .map(|l| match &l.kernel {
                Kernel::BlocksInt8(m, p) => Some((m.as_ref() as &dyn Int8Weights, *p)),
                Kernel::PlanesInt8(m, p) => Some((m.as_ref() as &dyn Int8Weights, *p)),
                _ => None,
            })
            .collect();
        let one_passes = int8_blocks
            .as_ref()
            .and_then(|mats| mats.first().map(|&(_, p)| p))
            .filter(|&p| int8_blocks.iter().flatten().all(|&(_, q)| q == p));
        let mut outs = if let Some(mats) = f32_blocks {
            crate::kernels::f32::matmul_group(&mats, x, rows)
        } else if let (Some(mats), Some(passes)) = (int8_blocks, one_passes) {
            let mats: Vec<&dyn Int8Weights> = mats.into_iter().map(|(m, _)| m).collect();
            with_int8_scratch(|scratch| {
                crate::kernels::int8::matmul_group(&mats, x, rows, scratch, passes)
            })
        } else {
            return layers.iter().map(|l| l.forward(x, rows)).collect();
        };
        for (l, y) in layers.iter().zip(&mut outs) {
            l.add_bias(y);
        }
        Ok(outs)
    }

    fn add_bias(&self, y: &mut [f32]) {
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
            }
        }
    }

    /// Projects `rows` rows of `in_features` values into `rows` rows of `out_features`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), rows * self.in_features);
        let mut y = match &self.kernel {
            Kernel::Blocks(m) => m.matmul(x, rows),
            Kernel::BlocksInt8(m, p) => with_int8_scratch(|scratch| m.matmul(x, rows, scratch, *p)),
            Kernel::PlanesInt8(m, p) => with_int8_scratch(|scratch| m.matmul(x, rows, scratch, *p)),
            Kernel::PlanesF32(m) => m.matmul_f32(x, rows),
            Kernel::Dense(m) => m.matmul(x, rows),
            Kernel::DensePadded(m) => m.matmul(&pad_rows(x, self.in_features, m.cols()), rows),
            Kernel::Half(m) => m.matmul(x, rows),
        };
        self.add_bias(&mut y);
        Ok(y)
    }
}

/// The `rows` rows of `width` values in `data`, each followed by zeros up
/// to `padded` values (`[rows, padded]`), as a padded matrix's kernel wants
/// them.
fn pad_rows(data: &[f32], width: usize, padded: usize) -> Vec<f32> {
    let rows = data.len().checked_div(width).unwrap_or(0);
    let mut out = vec![0.0f32; rows * padded];
    for (dst, src) in out
        .chunks_exact_mut(padded)
        .zip(data.chunks_exact(width.max(1)))
    {
        dst[..width].copy_from_slice(src);
    }
    out
}

/// Runs `f` with this thread's buffer for quantized activations (reused
/// across calls, so the per-token path does not allocate it).
fn with_int8_scratch<T>(f: impl FnOnce(&mut crate::kernels::int8::Q8Rows) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<crate::kernels::int8::Q8Rows> =
            std::cell::RefCell::default();
    }
    SCRATCH.with_borrow_mut(f)
}
