//! Token embedding lookup that reads only the rows it needs, also from a
//! quantized table (no dequantized copy of the whole vocabulary is kept).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::weight::Weight;

/// The token embedding table.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// GGUF blocks, dequantized row by row on lookup.
    Quantized(Arc<QTensor>),
    /// A dense `[vocab, hidden]` f32 table.
    Dense(Tensor),
}

impl Embedding {
    /// Wraps a `[vocab, hidden]` weight.
    pub fn new(weight: Weight) -> Self {
        match weight {
            Weight::Quantized(q) => Embedding::Quantized(q),
            Weight::Dense(t) => Embedding::Dense(t),
        }
    }

    /// The rows of `ids`, concatenated: `[ids.len(), hidden]`.
    pub fn forward(&self, ids: &[u32], vocab_size: usize) -> Result<Vec<f32>> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ModelError::InvalidBatch(format!(
                "token id {bad} is outside the vocabulary of {vocab_size}"
            )));
        }
        let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
        let rows = match self {
            Embedding::Quantized(q) => q.embedding(&ids)?,
            Embedding::Dense(t) => t.index_select(&ids, 0)?,
        };
        Ok(rows.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The table as a weight, for an output head tied to it.
    pub fn as_weight(&self) -> Weight {
        match self {
            Embedding::Quantized(q) => Weight::Quantized(q.clone()),
            Embedding::Dense(t) => Weight::Dense(t.clone()),
        }
    }
}
