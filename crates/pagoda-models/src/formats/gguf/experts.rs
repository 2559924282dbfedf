//! Routed experts in GGUF files: llama.cpp stores each projection of a
//! layer's experts as one 3-D tensor (`blk.N.ffn_{gate,up,down}_exps`,
//! `[experts, rows, cols]`); pagoda serves them per expert under the
//! Hugging Face names (`model.layers.N.mlp.experts.E.{gate,up,down}_proj`).
//! Shared by DeepSeek (`deepseek2`), Qwen3-MoE (`qwen3moe`) and Mixtral
//! (`llama` with `expert_count`) files; [`MoeGguf`] is the tensor source of
//! the latter two.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::formats::gguf::file::GgufFile;
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;
use crate::kernels::block_format::BlockFormat;
use crate::kernels::f32::QuantMatrix;
use crate::kernels::plane::{PlaneFormat, PlaneMatrix};

/// The GGUF tensor and expert index of an expert projection's Hugging Face
/// name, given its layer and the rest of the name after
/// `model.layers.{layer}.`.
pub(crate) fn expert_name(layer: &str, rest: &str) -> Option<(String, usize)> {
    let expert = rest.strip_prefix("mlp.experts.")?;
    let (index, proj) = expert.split_once('.')?;
    let gguf = match proj {
        "gate_proj.weight" => "ffn_gate_exps",
        "up_proj.weight" => "ffn_up_exps",
        "down_proj.weight" => "ffn_down_exps",
        _ => return None,
    };
    Some((format!("blk.{layer}.{gguf}.weight"), index.parse().ok()?))
}

/// The experts of a GGUF file's 3-D expert tensors, handed out one by one.
pub(crate) struct ExpertTensors<'a> {
    file: &'a GgufFile,
    /// The per-expert slices of 3-D expert tensors read but not all taken
    /// yet, by GGUF name; an entry goes once its last expert is taken, so at
    /// most a layer's expert tensors are held twice (as read and as loaded).
    cache: Mutex<ExpertCache>,
}

/// The expert tensors being handed out.
#[derive(Default)]
struct ExpertCache {
    /// Those read whose experts are not all taken yet.
    open: HashMap<String, ExpertSplit>,
    /// Those whose experts have all been taken (a request for one again
    /// reads the file again and caches nothing).
    done: HashSet<String>,
}

/// The experts of one 3-D tensor not yet handed out.
struct ExpertSplit {
    /// `None` once taken.
    experts: Vec<Option<Weight>>,
    /// How many are still `Some`.
    left: usize,
}

impl<'a> ExpertTensors<'a> {
    /// The experts of `file`.
    pub(crate) fn new(file: &'a GgufFile) -> Self {
        Self {
            file,
            cache: Mutex::new(ExpertCache::default()),
        }
    }

    fn tensor_error(&self, name: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Tensor {
            path: self.file.path().to_path_buf(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Expert `expert` of the `[experts, rows, cols]` tensor `name`. The
    /// tensor is read and split on the first request; the other experts wait
    /// in the cache until they are asked for (a model asks for each once).
    pub(crate) fn expert(&self, name: &str, expert: usize) -> Result<Option<Weight>> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| self.tensor_error(name, "the expert cache was poisoned"))?;
        if let Some(split) = cache.open.get_mut(name) {
            if let Some(w) = split.experts.get_mut(expert).and_then(Option::take) {
                split.left -= 1;
                if split.left == 0 {
                    cache.open.remove(name);
                    cache.done.insert(name.to_string());
                }
                return Ok(Some(w));
            }
        }
        let Some(w) = self.file.tensor(name)? else {
            return Ok(None);
        };
        let mut experts: Vec<Option<Weight>> = self
            .split_experts(name, w)
            .map_err(|e| e.for_tensor(self.file.path(), name))?
            .into_iter()
            .map(Some)
            .collect();
        if expert >= experts.len() {
            return Err(
                self.tensor_error(name, format!("no expert {expert} among {}", experts.len()))
            );
        }
        let taken = experts[expert].take();
        // A repeated request is served from a fresh read and leaves the
        // cache as it is.
        let first_read = !cache.open.contains_key(name) && !cache.done.contains(name);
        if first_read {
            let left = experts.len() - 1;
            if left == 0 {
                cache.done.insert(name.to_string());
            } else {
                cache
                    .open
                    .insert(name.to_string(), ExpertSplit { experts, left });
            }
        }
        Ok(taken)
    }

    pub(crate) fn split_experts(&self, name: &str, w: Weight) -> Result<Vec<Weight>> {
        let Weight::Quantized(q) = w else {
            return Err(self.tensor_error(name, "expected a 3-D expert tensor"));
        };
        let &[n, rows, cols] = q.shape().dims() else {
            return Err(self.tensor_error(
                name,
                format!(
                    "shape {:?}, expected [experts, rows, cols]",
                    q.shape().dims()
                ),
            ));
        };
        let dtype = q.dtype();
        if matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
            let t = q.dequantize(&Device::Cpu)?;
            return (0..n)
                .map(|e| Ok(Weight::Dense(t.get(e)?.contiguous()?)))
                .collect();
        }
        if n == 0 || rows == 0 || cols == 0 {
            return Err(self.tensor_error(
                name,
                format!("empty expert tensor of shape [{n}, {rows}, {cols}]"),
            ));
        }
        let block = dtype.block_size();
        if !cols.is_multiple_of(block) {
            return Err(self.tensor_error(
                name,
                format!("rows of {cols} values are not whole {dtype:?} blocks of {block}"),
            ));
        }
        let bytes = q.data()?;
        let per_expert = (cols / block)
            .checked_mul(dtype.type_size())
            .and_then(|row| row.checked_mul(rows))
            .filter(|&b| b > 0 && n.checked_mul(b) == Some(bytes.len()))
            .ok_or_else(|| {
                self.tensor_error(
                    name,
                    format!(
                        "{} bytes do not hold {n} experts of [{rows}, {cols}] {dtype:?}",
                        bytes.len()
                    ),
                )
            })?;
        bytes
            .chunks_exact(per_expert)
            .map(|chunk| {
                if let Some(format) = BlockFormat::from_ggml(dtype) {
                    let m = QuantMatrix::new(format, rows, cols, chunk.to_vec())
                        .map_err(|e| self.tensor_error(name, e.to_string()))?;
                    return Ok(Weight::Blocks(Arc::new(m)));
                }
                if let Some(format) = PlaneFormat::from_ggml(dtype) {
                    let m = PlaneMatrix::from_gguf(format, rows, cols, chunk)
                        .map_err(|e| self.tensor_error(name, e.to_string()))?;
                    return Ok(Weight::Planes(Arc::new(m)));
                }
                let storage = QStorage::from_data(Cow::Borrowed(chunk), &Device::Cpu, dtype)?;
                Ok(Weight::Quantized(Arc::new(QTensor::new(
                    storage,
                    (rows, cols),
                )?)))
            })
            .collect()
    }
}

/// A llama-family GGUF file with routed experts (Qwen3-MoE, Mixtral)
/// serving Hugging Face names: the router `mlp.gate` is `ffn_gate_inp`,
/// each expert a slice of the 3-D expert tensors (or, in early Mixtral
/// files, its own `ffn_gate.E` tensor), the rest as in a dense file.
pub(crate) struct MoeGguf<'a> {
    file: &'a GgufFile,
    experts: ExpertTensors<'a>,
}

impl<'a> MoeGguf<'a> {
    /// Serves `file`'s tensors.
    pub(crate) fn new(file: &'a GgufFile) -> Self {
        Self {
            file,
            experts: ExpertTensors::new(file),
        }
    }
}

impl std::fmt::Debug for MoeGguf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoeGguf")
            .field("file", &self.file.path())
            .finish()
    }
}

impl TensorSource for MoeGguf<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        if let Some((layer, rest)) = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
        {
            if let Some((gguf, expert)) = expert_name(layer, rest) {
                if let Some(w) = self.experts.expert(&gguf, expert)? {
                    return Ok(Some(w));
                }
                // Early Mixtral files: one 2-D tensor per expert,
                // `blk.N.ffn_gate.E.weight`.
                let single = gguf.replace("_exps.weight", &format!(".{expert}.weight"));
                return self.file.tensor(&single);
            }
            if rest == "mlp.gate.weight" {
                return self
                    .file
                    .tensor(&format!("blk.{layer}.ffn_gate_inp.weight"));
            }
        }
        self.file.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// A file with 3-D expert tensors (8 experts in layer 1).
    fn fixture() -> GgufFile {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny-deepseek-v2.gguf");
        GgufFile::open(&path).expect("fixture")
    }

    #[test]
    fn an_expert_tensor_is_dropped_once_its_last_expert_is_taken() {
        let file = fixture();
        let src = MoeGguf::new(&file);
        let name = |e: usize| format!("model.layers.1.mlp.experts.{e}.gate_proj.weight");
        let gguf = "blk.1.ffn_gate_exps.weight";
        let state = |src: &MoeGguf<'_>| {
            let cache = src.experts.cache.lock().expect("cache");
            (cache.open.contains_key(gguf), cache.done.contains(gguf))
        };
        let first = src.get(&name(0)).expect("read").expect("expert 0");
        assert_eq!(state(&src), (true, false));
        for e in 1..7 {
            assert!(src.get(&name(e)).expect("read").is_some());
            assert_eq!(state(&src), (true, false), "expert {e}");
        }
        assert!(src.get(&name(7)).expect("read").is_some());
        assert_eq!(state(&src), (false, true));
        // Asked for again, an expert comes from the file; nothing is kept.
        let again = src.get(&name(0)).expect("read").expect("expert 0 again");
        assert_eq!(
            first.to_f32_vec().expect("f32"),
            again.to_f32_vec().expect("f32")
        );
        assert_eq!(state(&src), (false, true));
        let err = src
            .experts
            .expert(gguf, 8)
            .map(|w| w.is_some())
            .unwrap_err();
        assert!(err.to_string().contains("no expert 8 among 8"), "{err}");
    }

    #[test]
    fn expert_names_map_to_the_3d_tensors() {
        assert_eq!(
            expert_name("3", "mlp.experts.17.down_proj.weight"),
            Some(("blk.3.ffn_down_exps.weight".to_string(), 17))
        );
        assert_eq!(expert_name("3", "mlp.experts.x.down_proj.weight"), None);
        assert_eq!(expert_name("3", "mlp.experts.1.w1.weight"), None);
        assert_eq!(expert_name("3", "mlp.down_proj.weight"), None);
    }

    #[test]
    fn malformed_expert_tensors_are_errors_not_panics() {
        let file = fixture();
        let src = ExpertTensors::new(&file);
        // Q8_0 blocks (34 bytes each), from an aligned buffer.
        let zeros =
            Tensor::zeros((3, 2, 32), candle_core::DType::F32, &Device::Cpu).expect("zeros");
        let blocks = QTensor::quantize(&zeros, GgmlDType::Q8_0).expect("quantize");
        let bytes = blocks.data().expect("bytes");
        let q8 = |len: usize, dims: (usize, usize, usize)| {
            let storage =
                QStorage::from_data(Cow::Borrowed(&bytes[..len]), &Device::Cpu, GgmlDType::Q8_0)
                    .expect("storage");
            Weight::Quantized(Arc::new(QTensor::new(storage, dims).expect("tensor")))
        };
        for (w, named) in [
            (q8(0, (2, 0, 32)), "empty expert tensor"),
            (q8(0, (0, 4, 32)), "empty expert tensor"),
            (q8(34 * 3, (2, 2, 32)), "do not hold 2 experts"),
        ] {
            let err = src
                .split_experts("blk.9.ffn_up_exps.weight", w)
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("blk.9.ffn_up_exps.weight") && text.contains(named),
                "{text}"
            );
        }
    }
}
