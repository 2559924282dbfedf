//! Which precision half-precision weights are computed in (`--dtype`), and
//! the tensor source that widens them when f32 is asked for.

use std::path::Path;

use crate::error::Result;
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;

/// How F16/BF16 weights (GGUF tensors, Hugging Face safetensors) are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightDtype {
    /// As stored: half-precision matrices stay in two bytes and run on the
    /// half-precision kernel (f32 accumulation). The default.
    #[default]
    Auto,
    /// Widened to f32 at load (twice the memory): the dense f32 kernel, for
    /// parity tests against an f32 reference.
    F32,
}

impl WeightDtype {
    /// The name used in flags and logs (`auto`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::Auto => "auto",
            WeightDtype::F32 => "f32",
        }
    }
}

/// A tensor source whose half-precision matrices come out widened to f32.
pub struct Widening<'a>(pub &'a dyn TensorSource);

impl TensorSource for Widening<'_> {
    fn path(&self) -> &Path {
        self.0.path()
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        self.0.get(name)?.map(Weight::widened).transpose()
    }
}
