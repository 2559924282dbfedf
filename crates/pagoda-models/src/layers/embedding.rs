//! Token embedding lookup that reads only the rows it needs, also from a
//! quantized table (no dequantized copy of the whole vocabulary is kept).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::formats::weight::{gather_rows, Weight};
use crate::kernels::f32::{DenseMatrix, QuantMatrix};
use crate::kernels::half_precision::HalfMatrix;
use crate::kernels::panel::PanelMatrix;
use crate::kernels::plane::PlaneMatrix;
use crate::layers::linear::Activations;

/// The token embedding table.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// GGUF blocks in a format pagoda's kernels read, dequantized row by row on lookup.
    Blocks(Arc<QuantMatrix>),
    /// The same, repacked for the 8-bit-activation kernels (shared with a
    /// tied output head).
    Panels(Arc<PanelMatrix>),
    /// A K-quant, Q5_0 or Q5_1 table in bit-plane panels, dequantized row by row on lookup.
    Planes(Arc<PlaneMatrix>),
    /// A half-precision table, widened row by row on lookup (shared with a
    /// tied output head).
    Half(Arc<HalfMatrix>),
    /// Other GGUF tensors, dequantized row by row on lookup by candle.
    Quantized(Arc<QTensor>),
    /// A dense `[vocab, hidden]` f32 table laid out for pagoda's kernel
    /// (shared with a tied output head).
    DenseRows(Arc<DenseMatrix>),
    /// A dense `[vocab, hidden]` f32 table of another width.
    Dense(Tensor),
}

impl Embedding {
    /// Wraps a `[vocab, hidden]` weight.
    pub fn new(weight: Weight) -> Result<Self> {
        Ok(match weight {
            Weight::Blocks(m) => Embedding::Blocks(m),
            Weight::Panels(m) => Embedding::Panels(m),
            Weight::Planes(m) => Embedding::Planes(m),
            Weight::Half(m) => Embedding::Half(m),
            Weight::Quantized(q) => Embedding::Quantized(q),
            Weight::DenseRows(m) => Embedding::DenseRows(m),
            Weight::Dense(t) => match t.dims() {
                &[rows, cols] if cols.is_multiple_of(32) => {
                    let data = t.flatten_all()?.to_vec1::<f32>()?;
                    let m = DenseMatrix::new(rows, cols, data)
                        .map_err(|e| ModelError::Shape(e.to_string()))?;
                    Embedding::DenseRows(Arc::new(m))
                }
                _ => Embedding::Dense(t),
            },
        })
    }

    /// The table in the layout the output head's kernels want when it is
    /// tied to it, so that one copy serves both: panels for 8-bit
    /// activations (row lookups read them as well).
    pub fn for_activations(self, activations: Activations) -> Self {
        match (self, activations) {
            (Embedding::Blocks(m), Activations::Int8 | Activations::Int8x2) => {
                Embedding::Panels(Arc::new(PanelMatrix::from_rows(&m)))
            }
            (e, _) => e,
        }
    }

    /// The rows of `ids`, concatenated: `[ids.len(), hidden]`.
    pub fn forward(&self, ids: &[u32], vocab_size: usize) -> Result<Vec<f32>> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ModelError::InvalidBatch(format!(
                "token id {bad} is outside the vocabulary of {vocab_size}"
            )));
        }
        let rows = ids.iter().map(|&id| id as usize);
        let tensor_rows = match self {
            Embedding::Blocks(m) => {
                return Ok(gather_rows(rows, m.cols(), |r, o| m.dequantize_row(r, o)))
            }
            Embedding::Panels(m) => {
                return Ok(gather_rows(rows, m.cols(), |r, o| m.dequantize_row(r, o)))
            }
            Embedding::Planes(m) => {
                return Ok(gather_rows(rows, m.cols(), |r, o| m.dequantize_row(r, o)))
            }
            Embedding::Half(m) => return Ok(gather_rows(rows, m.cols(), |r, o| m.row_f32(r, o))),
            Embedding::DenseRows(m) => {
                let mut out = Vec::with_capacity(ids.len() * m.cols());
                for &id in ids {
                    out.extend_from_slice(m.row(id as usize));
                }
                return Ok(out);
            }
            Embedding::Quantized(q) => {
                q.embedding(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?)?
            }
            Embedding::Dense(t) => {
                t.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0)?
            }
        };
        Ok(tensor_rows.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The table as a weight, for an output head tied to it.
    pub fn as_weight(&self) -> Weight {
        match self {
            Embedding::Blocks(m) => Weight::Blocks(m.clone()),
            Embedding::Panels(m) => Weight::Panels(m.clone()),
            Embedding::Planes(m) => Weight::Planes(m.clone()),
            Embedding::Half(m) => Weight::Half(m.clone()),
            Embedding::Quantized(q) => Weight::Quantized(q.clone()),
            Embedding::DenseRows(m) => Weight::DenseRows(m.clone()),
            Embedding::Dense(t) => Weight::Dense(t.clone()),
        }
    }
}
