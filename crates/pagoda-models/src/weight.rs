//! A checkpoint tensor as loaded: either GGUF-quantized blocks or a dense f32 tensor.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// One weight tensor of a checkpoint.
#[derive(Debug, Clone)]
pub enum Weight {
    /// GGUF blocks (any of candle's quantized types, or F16/F32 stored in GGUF).
    Quantized(Arc<QTensor>),
    /// A dense tensor, always f32 for computation on the CPU.
    Dense(Tensor),
}

impl Weight {
    /// The tensor's dimensions, outermost first (rows, then columns for a matrix).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Quantized(q) => q.shape().dims().to_vec(),
            Weight::Dense(t) => t.dims().to_vec(),
        }
    }

    /// A short name of the stored type for logs (`Q4_1`, `f32`...).
    pub fn type_name(&self) -> String {
        match self {
            Weight::Quantized(q) => format!("{:?}", q.dtype()),
            Weight::Dense(t) => format!("{:?}", t.dtype()),
        }
    }

    /// The whole tensor as f32 values, row-major.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let dense = match self {
            Weight::Quantized(q) => q.dequantize(&Device::Cpu)?,
            Weight::Dense(t) => t.clone(),
        };
        Ok(dense
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Whether this is stored in a block-quantized GGUF type (not F16/F32).
    pub fn is_block_quantized(&self) -> bool {
        match self {
            Weight::Quantized(q) => {
                !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
            }
            Weight::Dense(_) => false,
        }
    }
}
