//! A linear layer `y = x Wᵀ + b` over flattened token rows, whatever the
//! weight's storage (GGUF blocks or dense f32).

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};

use crate::error::{ModelError, Result};
use crate::qmatmul::{DenseMatrix, QuantMatrix};
use crate::weight::Weight;

/// Which kernel computes the product.
#[derive(Debug, Clone)]
enum Kernel {
    /// pagoda's f32-activation block kernels (Q4_0, Q4_1, Q8_0).
    Blocks(Arc<QuantMatrix>),
    /// pagoda's batch-invariant dense f32 kernel.
    Dense(Arc<DenseMatrix>),
    /// candle: dense matrices whose width is not a multiple of 32, and its
    /// quantized kernels for the other GGUF types.
    Candle(QMatMul),
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
    /// Builds a layer from a `[out_features, in_features]` weight and an optional bias.
    pub fn new(weight: Weight, bias: Option<Vec<f32>>) -> Result<Self> {
        let dims = weight.dims();
        let [out_features, in_features] = dims[..] else {
            return Err(ModelError::InvalidBatch(format!(
                "a linear weight must be a matrix, got shape {dims:?}"
            )));
        };
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(ModelError::InvalidBatch(format!(
                    "bias of {} values for {out_features} outputs",
                    b.len()
                )));
            }
        }
        let kernel = match weight {
            Weight::Blocks(m) => Kernel::Blocks(m),
            Weight::Quantized(q) => Kernel::Candle(QMatMul::from_arc(q)?),
            Weight::Dense(t) if in_features.is_multiple_of(32) => {
                let data = t.flatten_all()?.to_vec1::<f32>()?;
                let m = DenseMatrix::new(out_features, in_features, data)
                    .map_err(|e| ModelError::InvalidBatch(e.to_string()))?;
                Kernel::Dense(Arc::new(m))
            }
            Weight::Dense(t) => Kernel::Candle(QMatMul::Tensor(t)),
            Weight::DenseRows(m) => Kernel::Dense(m),
        };
        Ok(Self {
            kernel,
            bias,
            in_features,
            out_features,
        })
    }

    /// Number of inputs per row.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Number of outputs per row.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Projects `rows` rows of `in_features` values into `rows` rows of `out_features`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), rows * self.in_features);
        let mut y = match &self.kernel {
            Kernel::Blocks(m) => m.matmul(x, rows),
            Kernel::Dense(m) => m.matmul(x, rows),
            Kernel::Candle(w) => {
                let input = Tensor::from_slice(x, (rows, self.in_features), &Device::Cpu)?;
                w.forward(&input)?.flatten_all()?.to_vec1::<f32>()?
            }
        };
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
            }
        }
        Ok(y)
    }
}
