//! Where a model's weights come from, under Hugging Face tensor names
//! (`model.layers.0.self_attn.q_proj.weight`), whatever the file format.

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::formats::weight::Weight;

/// A checkpoint that yields weights by their Hugging Face name.
pub trait TensorSource {
    /// The file or directory, for error messages.
    fn path(&self) -> &Path;

    /// The tensor named `name`, or `None` if the checkpoint lacks it.
    fn get(&self, name: &str) -> Result<Option<Weight>>;

    /// The tensor named `name`; an error naming it if it is missing.
    fn require(&self, name: &str) -> Result<Weight> {
        self.get(name)?.ok_or_else(|| ModelError::Tensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
            reason: "missing from the checkpoint".into(),
        })
    }

    /// The tensor named `name`, checked to have exactly `dims`.
    fn require_shape(&self, name: &str, dims: &[usize]) -> Result<Weight> {
        let weight = self.require(name)?;
        check_shape(self.path(), name, &weight, dims)?;
        Ok(weight)
    }

    /// A vector (norm scale, bias) as f32 values, checked to have `len` entries.
    fn require_vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.require_shape(name, &[len])?.to_f32_vec()
    }
}

impl<T: TensorSource + ?Sized> TensorSource for &T {
    fn path(&self) -> &Path {
        (**self).path()
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        (**self).get(name)
    }
}

/// Fails with an error naming the tensor unless `weight` has exactly `dims`.
pub fn check_shape(path: &Path, name: &str, weight: &Weight, dims: &[usize]) -> Result<()> {
    let got = weight.dims();
    if got != dims {
        return Err(ModelError::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: format!("shape {got:?}, expected {dims:?}"),
        });
    }
    Ok(())
}
