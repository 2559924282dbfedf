//! Loading a Hugging Face checkpoint directory: `config.json`, one or many
//! safetensors shards, `tokenizer.json`, `tokenizer_config.json` (chat
//! template, special tokens) and `generation_config.json`.
//!
//! The folder holds the directory reader (here), FP8 checkpoints with
//! block scales ([`fp8`]) and the sampling defaults a checkpoint ships
//! ([`generation_config`]).

pub(crate) mod fp8;
pub(crate) mod generation_config;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use serde::Deserialize;

use crate::error::{candle_reason, ModelError, Result};
use crate::families::config::{HfConfig, HfQuantizationConfig};
use crate::families::deepseek::config::{DeepseekConfig, DeepseekHfConfig};
use crate::families::gemma3::config::{Gemma3Config, Gemma3HfConfig};
use crate::formats::hf::fp8::Fp8Blocks;
use crate::formats::hf::generation_config::GenerationDefaults;
use crate::formats::tensor_source::TensorSource;
use crate::formats::weight::Weight;
use crate::kernels::half_precision::{HalfKind, HalfMatrix};
use crate::text::tokenizer::{SpecialToken, Tokenizer};

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, format: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidFile {
        path: path.to_path_buf(),
        format,
        reason: e.to_string(),
    })
}

/// Reads `config.json` as written, without resolving it (the fields the
/// tokenizer needs are common to every family).
pub fn read_raw_config(dir: &Path) -> Result<HfConfig> {
    read_json(&dir.join("config.json"), "config.json")
}

/// What a checkpoint's `config.json` describes, resolved.
#[derive(Debug, Clone)]
pub enum CheckpointConfig {
    /// A llama-style decoder ([`crate::families::llama::Llama`]).
    Llama(Box<crate::families::config::ModelConfig>),
    /// A DeepSeek-V2/V3 decoder ([`crate::families::deepseek::Deepseek`]).
    Deepseek(Box<DeepseekConfig>),
    /// A Gemma 3 text decoder ([`crate::families::gemma3::Gemma3`]).
    Gemma3(Box<Gemma3Config>),
}

/// Reads `config.json` and resolves it for the family its `model_type`
/// (or `architectures`) names.
pub fn read_checkpoint_config(dir: &Path) -> Result<(HfConfig, CheckpointConfig)> {
    let path = dir.join("config.json");
    let raw = read_raw_config(dir)?;
    let arch = raw.architectures.first().map(String::as_str);
    let model_type = match (raw.model_type.as_deref(), arch) {
        (Some(t), _) => t,
        (None, Some("DeepseekV2ForCausalLM")) => "deepseek_v2",
        (None, Some("DeepseekV3ForCausalLM")) => "deepseek_v3",
        (None, _) => "",
    };
    if model_type == "gemma3" || arch == Some("Gemma3ForConditionalGeneration") {
        return Err(ModelError::Unsupported {
            path,
            what: "architecture",
            value: "Gemma 3 with its vision tower (`gemma3`, Gemma3ForConditionalGeneration): \
                    only the text model (`gemma3_text`, Gemma3ForCausalLM) is implemented"
                .into(),
        });
    }
    if model_type == "gemma3_text" || arch == Some("Gemma3ForCausalLM") {
        let gemma: Gemma3HfConfig = read_json(&path, "config.json")?;
        let resolved = gemma.resolve().map_err(|reason| ModelError::InvalidFile {
            path: path.clone(),
            format: "config.json",
            reason,
        })?;
        return Ok((raw, CheckpointConfig::Gemma3(Box::new(resolved))));
    }
    if DeepseekHfConfig::version_of(model_type).is_none() {
        let (raw, config) = read_config(dir)?;
        return Ok((raw, CheckpointConfig::Llama(Box::new(config))));
    }
    let mut deepseek: DeepseekHfConfig = read_json(&path, "config.json")?;
    deepseek.model_type = model_type.to_string();
    let resolved = deepseek
        .resolve()
        .map_err(|reason| ModelError::InvalidFile {
            path: path.clone(),
            format: "config.json",
            reason,
        })?;
    Ok((raw, CheckpointConfig::Deepseek(Box::new(resolved))))
}

/// Reads and resolves the `config.json` of a llama-style checkpoint.
pub fn read_config(dir: &Path) -> Result<(HfConfig, crate::families::config::ModelConfig)> {
    let path = dir.join("config.json");
    let raw = read_raw_config(dir)?;
    let resolved = raw.resolve().map_err(|reason| {
        if reason.contains("model_type") {
            ModelError::Unsupported {
                path: path.clone(),
                what: "architecture",
                value: reason,
            }
        } else {
            ModelError::InvalidFile {
                path: path.clone(),
                format: "config.json",
                reason,
            }
        }
    })?;
    Ok((raw, resolved))
}

/// Reads `generation_config.json` if the directory has one.
pub fn read_generation_config(dir: &Path) -> Result<GenerationDefaults> {
    let path = dir.join("generation_config.json");
    if path.exists() {
        read_json(&path, "generation_config.json")
    } else {
        Ok(GenerationDefaults::default())
    }
}

/// The safetensors shards of a checkpoint directory.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let index_data: Index = read_json(&index, "safetensors index")?;
        let files: std::collections::BTreeSet<&String> = index_data.weight_map.values().collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ModelError::InvalidFile {
            path: dir.to_path_buf(),
            format: "checkpoint directory",
            reason: "no *.safetensors weights found".into(),
        });
    }
    Ok(found)
}

/// The weights of a safetensors checkpoint, widened to f32 on load (FP8
/// matrices dequantized with their block scales, [`crate::formats::hf::fp8`]).
pub struct SafetensorsSource {
    dir: PathBuf,
    tensors: MmapedSafetensors,
    names: HashSet<String>,
    stored_dtype: Option<DType>,
    /// The FP8 layout `config.json` declares, if any.
    fp8: Option<Fp8Blocks>,
    /// Whether any tensor is stored as FP8.
    has_fp8: bool,
}

impl SafetensorsSource {
    /// Maps every shard of `dir`, whose `config.json` declares
    /// `quantization` (an error names the setting unless it is block-scaled
    /// FP8, or absent).
    pub fn open(dir: &Path, quantization: Option<&HfQuantizationConfig>) -> Result<Self> {
        let fp8 = quantization
            .map(Fp8Blocks::from_config)
            .transpose()
            .map_err(|value| ModelError::Unsupported {
                path: dir.join("config.json"),
                what: "quantization",
                value,
            })?;
        let paths = shard_paths(dir)?;
        for p in &paths {
            if !p.exists() {
                return Err(ModelError::Io {
                    path: p.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "shard listed in the index is missing",
                    ),
                });
            }
        }
        // SAFETY: the shards are mapped read-only; like every inference
        // server, pagoda requires that checkpoint files are not modified
        // while it runs.
        let tensors =
            unsafe { MmapedSafetensors::multi(&paths) }.map_err(|e| ModelError::InvalidFile {
                path: dir.to_path_buf(),
                format: "safetensors",
                reason: candle_reason(&e),
            })?;
        let mut names = HashSet::new();
        let mut stored_dtype = None;
        let mut has_fp8 = false;
        for (name, view) in tensors.tensors() {
            let dtype = DType::try_from(view.dtype()).ok();
            has_fp8 |= dtype == Some(DType::F8E4M3);
            if name.ends_with(".weight") && stored_dtype.is_none() {
                stored_dtype = dtype;
            }
            names.insert(name);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            names,
            stored_dtype,
            fp8,
            has_fp8,
        })
    }

    /// The dtype the weights are stored in (of the first weight seen).
    pub fn stored_dtype(&self) -> Option<DType> {
        self.stored_dtype
    }

    /// The block-scaled FP8 layout of the checkpoint's quantized matrices,
    /// when it has any.
    pub fn fp8_blocks(&self) -> Option<Fp8Blocks> {
        self.fp8.filter(|_| self.has_fp8)
    }

    fn tensor_error(&self, name: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Tensor {
            path: self.dir.clone(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// The FP8 matrix `name` times its block scales `{name}_scale_inv`.
    fn dequantized_fp8(&self, name: &str) -> Result<Weight> {
        let Some(blocks) = self.fp8 else {
            return Err(self.tensor_error(
                name,
                "stored as F8_E4M3, but config.json has no quantization_config \
                 saying how it is scaled (pagoda reads FP8 with block scales only)",
            ));
        };
        let view = self
            .tensors
            .get(name)
            .map_err(|e| self.tensor_error(name, candle_reason(&e)))?;
        let &[rows, cols] = view.shape() else {
            return Err(self.tensor_error(
                name,
                format!(
                    "an F8_E4M3 tensor of shape {:?}; block scales need a matrix",
                    view.shape()
                ),
            ));
        };
        let scale_name = format!("{name}_scale_inv");
        if !self.names.contains(&scale_name) {
            return Err(self.tensor_error(
                name,
                format!("stored as F8_E4M3 without its block scales `{scale_name}`"),
            ));
        }
        let scale = self
            .tensors
            .load(&scale_name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| self.tensor_error(&scale_name, candle_reason(&e)))?;
        let want = blocks.scale_shape(rows, cols);
        if scale.dims() != want {
            return Err(self.tensor_error(
                &scale_name,
                format!(
                    "shape {:?}, expected {want:?} (one scale per [{}, {}] block of a [{rows}, {cols}] weight)",
                    scale.dims(),
                    blocks.block_rows,
                    blocks.block_cols
                ),
            ));
        }
        let scale = scale
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.tensor_error(&scale_name, candle_reason(&e)))?;
        let w = blocks.dequantize(view.data(), &scale, rows, cols);
        let t = candle_core::Tensor::from_vec(w, (rows, cols), &Device::Cpu)
            .map_err(|e| self.tensor_error(name, candle_reason(&e)))?;
        Ok(Weight::Dense(t))
    }
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn get(&self, name: &str) -> Result<Option<Weight>> {
        if !self.names.contains(name) {
            return Ok(None);
        }
        let dtype = self
            .tensors
            .get(name)
            .ok()
            .and_then(|v| DType::try_from(v.dtype()).ok());
        if dtype == Some(DType::F8E4M3) {
            return self.dequantized_fp8(name).map(Some);
        }
        let half = match dtype {
            Some(DType::F16) => Some(HalfKind::F16),
            Some(DType::BF16) => Some(HalfKind::Bf16),
            _ => None,
        };
        if let Some(kind) = half {
            let view = self
                .tensors
                .get(name)
                .map_err(|e| self.tensor_error(name, candle_reason(&e)))?;
            if let &[rows, cols] = view.shape() {
                let m = HalfMatrix::from_le_bytes(kind, rows, cols, view.data())
                    .map_err(|e| self.tensor_error(name, e.to_string()))?;
                return Ok(Some(Weight::Half(Arc::new(m))));
            }
        }
        let tensor = self
            .tensors
            .load(name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| ModelError::Tensor {
                path: self.dir.clone(),
                name: name.to_string(),
                reason: candle_reason(&e),
            })?;
        Ok(Some(Weight::Dense(tensor)))
    }
}

/// A special token in `tokenizer_config.json`: a string or an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenField {
    Text(String),
    Object { content: String },
}

impl TokenField {
    fn text(&self) -> &str {
        match self {
            TokenField::Text(s) => s,
            TokenField::Object { content } => content,
        }
    }
}

/// `chat_template` is a string or a list of named templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Clone, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct TokenizerConfig {
    chat_template: Option<TemplateField>,
    bos_token: Option<TokenField>,
    eos_token: Option<TokenField>,
}

/// The tokenizer, the chat template's source and the special-token texts of a checkpoint directory.
pub struct HfTokenizerParts {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The default chat template's source, if any.
    pub chat_template: Option<String>,
}

/// Loads `tokenizer.json` and `tokenizer_config.json` (and a standalone
/// `chat_template.jinja` if present).
pub fn read_tokenizer(
    dir: &Path,
    config: &HfConfig,
    generation: &GenerationDefaults,
) -> Result<HfTokenizerParts> {
    let path = dir.join("tokenizer.json");
    let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::InvalidFile {
        path: path.clone(),
        format: "tokenizer.json",
        reason: e.to_string(),
    })?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tk_config: TokenizerConfig = if cfg_path.exists() {
        read_json(&cfg_path, "tokenizer_config.json")?
    } else {
        TokenizerConfig::default()
    };
    let by_text = |field: &Option<TokenField>| -> Option<SpecialToken> {
        let text = field.as_ref()?.text();
        inner.token_to_id(text).map(|id| SpecialToken {
            id,
            text: text.to_string(),
        })
    };
    let by_id = |ids: Option<Vec<u32>>| -> Option<SpecialToken> {
        ids.and_then(|ids| ids.first().copied())
            .and_then(|id| Tokenizer::special(&inner, id))
    };
    let bos = by_text(&tk_config.bos_token)
        .or_else(|| by_id(config.bos_token_id.as_ref().map(|b| b.to_vec())));
    let eos = by_text(&tk_config.eos_token)
        .or_else(|| by_id(config.eos_token_id.as_ref().map(|e| e.to_vec())));
    let mut stop_ids = generation.eos_ids();
    if let Some(ids) = &config.eos_token_id {
        for id in ids.to_vec() {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
    }
    let jinja = dir.join("chat_template.jinja");
    let chat_template = match tk_config.chat_template {
        Some(TemplateField::One(t)) => Some(t),
        Some(TemplateField::Named(list)) => list
            .iter()
            .find(|t| t.name == "default")
            .or(list.first())
            .map(|t| t.template.clone()),
        None if jinja.exists() => {
            Some(
                std::fs::read_to_string(&jinja).map_err(|source| ModelError::Io {
                    path: jinja.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    Ok(HfTokenizerParts {
        tokenizer: Tokenizer::new(inner, bos, eos, stop_ids),
        chat_template,
    })
}
