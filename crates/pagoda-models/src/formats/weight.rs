//! A checkpoint tensor as loaded: either GGUF-quantized blocks or a dense f32 tensor.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::kernels::f32::{DenseMatrix, QuantMatrix};
use crate::kernels::half_precision::HalfMatrix;
use crate::kernels::panel::PanelMatrix;
use crate::kernels::plane::PlaneMatrix;

/// The rows `indices` of a `cols`-wide matrix, one after the other, each
/// written by `row(index, out)`: a whole matrix widened, or an embedding
/// lookup.
pub(crate) fn gather_rows(
    indices: impl ExactSizeIterator<Item = usize>,
    cols: usize,
    row: impl Fn(usize, &mut [f32]),
) -> Vec<f32> {
    let mut out = vec![0.0; indices.len() * cols];
    for (r, dst) in indices.zip(out.chunks_exact_mut(cols.max(1))) {
        row(r, dst);
    }
    out
}

/// One weight tensor of a checkpoint.
#[derive(Debug, Clone)]
pub enum Weight {
    /// A GGUF matrix in a block format pagoda's own f32-activation kernels implement.
    Blocks(Arc<QuantMatrix>),
    /// Other GGUF tensors as read (vectors, expert stacks before they are
    /// split, matrices of types no kernel computes: refused by a layer).
    Quantized(Arc<QTensor>),
    /// A dense tensor, always f32 for computation on the CPU.
    Dense(Tensor),
    /// A dense matrix already laid out for pagoda's f32 kernel (shared, e.g.
    /// by a tied embedding and output head).
    DenseRows(Arc<DenseMatrix>),
    /// GGUF blocks already repacked for the 8-bit-activation kernels
    /// (shared, e.g. by a tied embedding and output head).
    Panels(Arc<PanelMatrix>),
    /// A GGUF matrix of a K-quant type, Q5_0 or Q5_1, repacked for
    /// pagoda's bit-plane kernels (either activation kind).
    Planes(Arc<PlaneMatrix>),
    /// A half-precision (F16/BF16) matrix kept in two bytes per value.
    Half(Arc<HalfMatrix>),
}

impl Weight {
    /// The tensor's dimensions, outermost first (rows, then columns for a matrix).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Blocks(m) => vec![m.rows(), m.cols()],
            Weight::Quantized(q) => q.shape().dims().to_vec(),
            Weight::Dense(t) => t.dims().to_vec(),
            Weight::DenseRows(m) => vec![m.rows(), m.cols()],
            Weight::Panels(m) => vec![m.rows(), m.cols()],
            Weight::Planes(m) => vec![m.rows(), m.cols()],
            Weight::Half(m) => vec![m.rows(), m.cols()],
        }
    }

    /// A short name of the stored type for logs (`Q4_1`, `f32`...).
    pub fn type_name(&self) -> String {
        match self {
            Weight::Blocks(m) => format!("{:?}", m.format()),
            Weight::Quantized(q) => format!("{:?}", q.dtype()),
            Weight::Dense(t) => format!("{:?}", t.dtype()),
            Weight::DenseRows(_) => "F32".to_string(),
            Weight::Panels(m) => format!("{:?}", m.format()),
            Weight::Planes(m) => format!("{:?}", m.format()),
            Weight::Half(m) => m.kind().name().to_string(),
        }
    }

    /// The whole tensor as f32 values, row-major.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let dense = match self {
            Weight::Blocks(m) => {
                return Ok(gather_rows(0..m.rows(), m.cols(), |r, o| {
                    m.dequantize_row(r, o)
                }))
            }
            Weight::Panels(m) => {
                return Ok(gather_rows(0..m.rows(), m.cols(), |r, o| {
                    m.dequantize_row(r, o)
                }))
            }
            Weight::Planes(m) => {
                return Ok(gather_rows(0..m.rows(), m.cols(), |r, o| {
                    m.dequantize_row(r, o)
                }))
            }
            Weight::Half(m) => {
                return Ok(gather_rows(0..m.rows(), m.cols(), |r, o| m.row_f32(r, o)))
            }
            Weight::DenseRows(m) => return Ok(m.data().to_vec()),
            Weight::Quantized(q) => q.dequantize(&Device::Cpu)?,
            Weight::Dense(t) => t.clone(),
        };
        Ok(dense
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// The same weight widened to f32 if it is half precision (`--dtype f32`).
    pub fn widened(self) -> Result<Weight> {
        match self {
            Weight::Half(m) => {
                let dims = (m.rows(), m.cols());
                let values = Weight::Half(m).to_f32_vec()?;
                Ok(Weight::Dense(Tensor::from_vec(values, dims, &Device::Cpu)?))
            }
            Weight::Quantized(q) if matches!(q.dtype(), GgmlDType::F16 | GgmlDType::BF16) => {
                Ok(Weight::Dense(q.dequantize(&Device::Cpu)?))
            }
            other => Ok(other),
        }
    }

    /// Whether this is stored in a block-quantized GGUF type (not F16/F32).
    pub fn is_block_quantized(&self) -> bool {
        match self {
            Weight::Blocks(_) | Weight::Panels(_) | Weight::Planes(_) => true,
            Weight::Quantized(q) => {
                !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
            }
            Weight::Dense(_) | Weight::DenseRows(_) | Weight::Half(_) => false,
        }
    }
}
