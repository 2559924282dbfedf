//! Opening a GGUF file (through candle-core's reader) with every failure
//! reported against the file, and its tensors served under Hugging Face names.
//!
//! Tensor naming follows llama.cpp's `convert_hf_to_gguf.py` (`blk.N.attn_q`
//! for `model.layers.N.self_attn.q_proj`).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use crate::error::{candle_reason, ModelError, Result};
use crate::formats::gguf::meta::GgufMeta;
use crate::formats::gguf::relabel::relabel;
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;
use crate::kernels::block_format::BlockFormat;
use crate::kernels::f32::QuantMatrix;
use crate::kernels::half_precision::{HalfKind, HalfMatrix};
use crate::kernels::plane::{PlaneFormat, PlaneMatrix};

/// The tensor types pagoda loads from GGUF files.
pub const SUPPORTED_TYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// An open GGUF file: its parsed header and a reader for its tensors.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
    file_len: u64,
    /// Tensors stored as IQ4_NL (relabelled Q4_0 in `content`, see `relabel`).
    iq4_nl: HashSet<String>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .finish()
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::InvalidFile {
        path: path.to_path_buf(),
        format: "GGUF",
        reason: reason.into(),
    }
}

impl GgufFile {
    /// Opens and validates `path`: header, metadata, tensor types, and that
    /// every tensor's data lies inside the file (a truncated file fails here,
    /// not half-way through loading).
    pub fn open(path: &Path) -> Result<Self> {
        let file = Self::open_header(path)?;
        file.check_tensor_extents()?;
        Ok(file)
    }

    /// Opens `path` and parses its header and metadata only; tensor data is
    /// not checked (enough for the tokenizer and chat template).
    pub fn open_header(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut reader = BufReader::new(file);
        let mut iq4_nl = HashSet::new();
        let read = match Content::read(&mut reader) {
            Err(e) if candle_reason(&e).contains("unknown dtype") => {
                match relabel(&mut reader, file_len) {
                    Some(r) => {
                        iq4_nl = r.iq4_nl;
                        Content::read(&mut std::io::Cursor::new(r.header))
                    }
                    None => Err(e),
                }
            }
            other => other,
        };
        let content = read.map_err(|e| {
            let msg = candle_reason(&e);
            if msg.contains("unknown dtype") {
                ModelError::Unsupported {
                    path: path.to_path_buf(),
                    what: "GGUF tensor type",
                    value: unknown_type(&msg),
                }
            } else if ["failed to fill whole buffer", "exceeds", "remaining"]
                .iter()
                .any(|p| msg.contains(p))
            {
                invalid(path, format!("the header is truncated or corrupt ({msg})"))
            } else {
                invalid(path, msg)
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
            file_len,
            iq4_nl,
        })
    }

    fn check_tensor_extents(&self) -> Result<()> {
        let (path, content, file_len) = (&self.path, &self.content, self.file_len);
        for (name, info) in &content.tensor_infos {
            if !SUPPORTED_TYPES.contains(&info.ggml_dtype) {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    what: "GGUF tensor type",
                    value: format!("{:?} (tensor `{name}`)", info.ggml_dtype),
                });
            }
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(invalid(
                    path,
                    format!("tensor `{name}` has {elems} values, not a multiple of its block size {block}"),
                ));
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + bytes;
            if end > file_len {
                return Err(invalid(
                    path,
                    format!(
                        "the file is truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// How many tensors the file holds of each type (by ggml's names),
    /// most first.
    pub fn tensor_types(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (name, info) in &self.content.tensor_infos {
            let kind = if self.iq4_nl.contains(name) {
                "IQ4_NL".to_string()
            } else {
                format!("{:?}", info.ggml_dtype)
            };
            match counts.iter_mut().find(|(t, _)| *t == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
    }

    /// How many weights the file's tensors hold in all.
    pub fn parameter_count(&self) -> u64 {
        self.content
            .tensor_infos
            .values()
            .map(|info| info.shape.elem_count() as u64)
            .sum()
    }

    /// Whether the tensor of this GGUF name is stored as IQ4_NL (candle's
    /// reader returns it labelled Q4_0: same block geometry).
    pub fn is_iq4_nl(&self, gguf_name: &str) -> bool {
        self.iq4_nl.contains(gguf_name)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Typed access to the metadata.
    pub fn meta(&self) -> GgufMeta<'_> {
        GgufMeta::new(&self.path, &self.content.metadata)
    }

    /// Whether a tensor of this GGUF name exists.
    pub fn has_tensor(&self, gguf_name: &str) -> bool {
        self.content.tensor_infos.contains_key(gguf_name)
    }

    /// Reads the tensor of this GGUF name, if present.
    pub fn tensor(&self, gguf_name: &str) -> Result<Option<Weight>> {
        if !self.has_tensor(gguf_name) {
            return Ok(None);
        }
        let mut reader = self.reader.lock().map_err(|_| {
            invalid(
                &self.path,
                "the file reader was poisoned by an earlier failure",
            )
        })?;
        let q = self
            .content
            .tensor(&mut *reader, gguf_name, &Device::Cpu)
            .map_err(|e| ModelError::Tensor {
                path: self.path.clone(),
                name: gguf_name.to_string(),
                reason: candle_reason(&e),
            })?;
        let dims = q.shape().dims().to_vec();
        let error = |reason: String| ModelError::Tensor {
            path: self.path.clone(),
            name: gguf_name.to_string(),
            reason,
        };
        if self.is_iq4_nl(gguf_name) {
            let [rows, cols] = dims[..] else {
                return Err(error(format!(
                    "an IQ4_NL tensor of shape {dims:?}: only matrices are computed"
                )));
            };
            let matrix = PlaneMatrix::from_gguf(PlaneFormat::IQ4NL, rows, cols, &q.data()?)
                .map_err(|e| error(e.to_string()))?;
            return Ok(Some(Weight::Planes(Arc::new(matrix))));
        }
        if let (Some(format), [rows, cols]) = (BlockFormat::from_ggml(q.dtype()), &dims[..]) {
            let bytes = q.data()?.into_owned();
            let matrix =
                QuantMatrix::new(format, *rows, *cols, bytes).map_err(|e| error(e.to_string()))?;
            return Ok(Some(Weight::Blocks(Arc::new(matrix))));
        }
        if let (Some(format), [rows, cols]) = (PlaneFormat::from_ggml(q.dtype()), &dims[..]) {
            let matrix = PlaneMatrix::from_gguf(format, *rows, *cols, &q.data()?)
                .map_err(|e| error(e.to_string()))?;
            return Ok(Some(Weight::Planes(Arc::new(matrix))));
        }
        let half = match q.dtype() {
            GgmlDType::F16 => Some(HalfKind::F16),
            GgmlDType::BF16 => Some(HalfKind::Bf16),
            _ => None,
        };
        if let (Some(kind), [rows, cols]) = (half, &dims[..]) {
            let matrix = HalfMatrix::from_le_bytes(kind, *rows, *cols, &q.data()?)
                .map_err(|e| error(e.to_string()))?;
            return Ok(Some(Weight::Half(Arc::new(matrix))));
        }
        if let (GgmlDType::F32, [_, _]) = (q.dtype(), &dims[..]) {
            return Ok(Some(Weight::Dense(q.dequantize(&Device::Cpu)?)));
        }
        Ok(Some(Weight::Quantized(Arc::new(q))))
    }
}

/// ggml's names of the tensor types pagoda does not compute, by number.
const OTHER_TYPES: &[(u32, &str)] = &[
    (4, "Q4_2"),
    (5, "Q4_3"),
    (9, "Q8_1"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// The refusal of an unknown tensor type (candle's "unknown dtype for
/// tensor N"), naming the type and what pagoda computes instead.
fn unknown_type(msg: &str) -> String {
    let number = msg
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|n| n.parse::<u32>().ok());
    let name = number.and_then(|n| OTHER_TYPES.iter().find(|(t, _)| *t == n).map(|(_, s)| *s));
    let supported =
        "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL";
    match (name, number) {
        (Some(name), Some(n)) => format!(
            "{name} (ggml type {n}): pagoda computes {supported}; llama-quantize can convert the file to one of them (Q4_K_M is the usual choice)"
        ),
        (None, Some(n)) => format!("ggml type {n}, which pagoda does not know (it computes {supported})"),
        _ => msg.to_string(),
    }
}

/// Maps a Hugging Face tensor name of the llama family to its GGUF name.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let fixed = match hf_name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let gguf_module = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf_module}.{kind}"))
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        // Phi-3's fused gate and up (gate rows first) are stored as
        // `ffn_up`, in files without `ffn_gate`.
        if let Some(layer) = name.strip_suffix(".mlp.gate_up_proj.weight") {
            let up = gguf_name(&format!("{layer}.mlp.up_proj.weight"));
            let gate = gguf_name(&format!("{layer}.mlp.gate_proj.weight"));
            return match (up, gate) {
                (Some(up), Some(gate)) if !self.has_tensor(&gate) => self.tensor(&up),
                _ => Ok(None),
            };
        }
        match gguf_name(name) {
            Some(g) => self.tensor(&g),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_are_named() {
        let m = unknown_type("unknown dtype for tensor 23");
        assert!(m.starts_with("IQ4_XS (ggml type 23)"), "{m}");
        assert!(m.contains("Q4_K"), "{m}");
        assert!(unknown_type("unknown dtype for tensor 77").contains("ggml type 77"));
    }

    #[test]
    fn hf_names_map_to_gguf_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.k_proj.bias").as_deref(),
            Some("blk.12.attn_k.bias")
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            gguf_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(gguf_name("model.layers.0.unknown.weight"), None);
    }
}
