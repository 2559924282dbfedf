//! One entry point that loads whatever a path holds — a GGUF file or a
//! Hugging Face checkpoint directory — into a model, its tokenizer and its
//! chat template.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ModelError, Result};
use crate::families::config::ModelConfig;
use crate::families::deepseek::Deepseek;
use crate::families::gemma3::Gemma3;
use crate::families::llama::Llama;
use crate::formats::activation_choice::ActivationChoice;
use crate::formats::dtype::{WeightDtype, Widening};
use crate::formats::gguf::config::gguf_model_config;
use crate::formats::gguf::deepseek::{deepseek_config_from_gguf, DeepseekGguf};
use crate::formats::gguf::file::GgufFile;
use crate::formats::gguf::tokenizer::tokenizer_from_gguf;
use crate::formats::hf::generation_config::GenerationDefaults;
use crate::formats::hf::{
    read_checkpoint_config, read_generation_config, read_raw_config, read_tokenizer,
    CheckpointConfig, SafetensorsSource,
};
use crate::formats::tensor_source::TensorSource;
use crate::model::CausalLm;
use crate::text::chat_template::ChatTemplate;
use crate::text::tokenizer::Tokenizer;

/// The on-disk format a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single GGUF file.
    Gguf,
    /// A Hugging Face directory with safetensors weights.
    HfSafetensors,
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// How the block-quantized kernels treat activations (GGUF block types;
    /// F16/BF16/F32 weights are unaffected): one path, or chosen per model.
    pub activations: crate::formats::activation_choice::ActivationChoice,
    /// Whether half-precision weights stay in two bytes (the default) or are
    /// widened to f32.
    pub dtype: WeightDtype,
}

/// Everything a server needs from a model path.
pub struct LoadedModel {
    /// The network.
    pub model: Arc<dyn CausalLm>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, if the checkpoint ships one.
    pub chat_template: Option<ChatTemplate>,
    /// Sampling defaults and extra stop ids.
    pub generation: GenerationDefaults,
    /// Where it came from.
    pub path: PathBuf,
    /// In which format.
    pub format: ModelFormat,
    /// How the weights are stored (`Q4_1`, `BF16`...) and computed, for logs.
    pub precision: String,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("config", self.model.config())
            .field("precision", &self.precision)
            .finish()
    }
}

impl LoadedModel {
    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }
}

fn is_gguf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(_) => Ok(false),
    }
}

/// Loads the model at `path`: a `.gguf` file or a checkpoint directory.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    load_model_with(path, &LoadOptions::default())
}

/// [`load_model`] with explicit options.
pub fn load_model_with(path: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return load_hf_dir(path, options);
    }
    if is_gguf(path)? {
        return load_gguf(path, options);
    }
    Err(ModelError::InvalidFile {
        path: path.to_path_buf(),
        format: "model",
        reason: "neither a GGUF file (no GGUF magic) nor a checkpoint directory".into(),
    })
}

fn template(source: Option<String>, tokenizer: &Tokenizer) -> Result<Option<ChatTemplate>> {
    let text = |t: Option<&crate::text::tokenizer::SpecialToken>| {
        t.map(|t| t.text.clone()).unwrap_or_default()
    };
    source
        .map(|s| ChatTemplate::new(&s, &text(tokenizer.bos()), &text(tokenizer.eos())))
        .transpose()
}

/// Loads only the tokenizer and chat template of a model path (a GGUF file's
/// header, or a checkpoint directory's tokenizer files): no weights are read.
pub fn load_tokenizer(path: &Path) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    if path.is_dir() {
        let raw = read_raw_config(path)?;
        let generation = read_generation_config(path)?;
        let parts = read_tokenizer(path, &raw, &generation)?;
        let chat_template = template(parts.chat_template, &parts.tokenizer)?;
        return Ok((parts.tokenizer, chat_template));
    }
    let file = GgufFile::open_header(path)?;
    let tokenizer = tokenizer_from_gguf(file.meta())?;
    let source = file.meta().optional("tokenizer.chat_template", |m, k| {
        m.str(k).map(str::to_string)
    })?;
    let chat_template = template(source, &tokenizer)?;
    Ok((tokenizer, chat_template))
}

/// `source` as `dtype` asks: as it is, or widening half-precision matrices.
fn with_dtype<'a>(source: &'a dyn TensorSource, dtype: WeightDtype) -> Box<dyn TensorSource + 'a> {
    match dtype {
        WeightDtype::Auto => Box::new(source),
        WeightDtype::F32 => Box::new(Widening(source)),
    }
}

/// How half-precision matrices are computed, for the load log line.
fn half_note(dtype: WeightDtype) -> &'static str {
    match dtype {
        WeightDtype::Auto => {
            "kept in 2 bytes, computed by the half-precision kernel (f32 accumulation)"
        }
        WeightDtype::F32 => "widened to f32 on load (--dtype f32)",
    }
}

/// Loads a GGUF file.
pub fn load_gguf(path: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let file = GgufFile::open(path)?;
    let config = match file.meta().str("general.architecture")? {
        crate::formats::gguf::deepseek::ARCHITECTURE => {
            CheckpointConfig::Deepseek(Box::new(deepseek_config_from_gguf(&file)?))
        }
        "gemma3" => CheckpointConfig::Gemma3(Box::new(
            crate::formats::gguf::gemma3::gemma3_config_from_gguf(&file)?,
        )),
        _ => CheckpointConfig::Llama(Box::new(gguf_model_config(&file)?)),
    };
    let tokenizer = tokenizer_from_gguf(file.meta())?;
    let chat_template = file.meta().optional("tokenizer.chat_template", |m, k| {
        m.str(k).map(str::to_string)
    })?;
    let chat_template = template(chat_template, &tokenizer)?;
    let activations = options.activations.resolve(file.parameter_count());
    let model: Arc<dyn CausalLm> = match config {
        CheckpointConfig::Llama(c) if c.experts.is_some() => {
            let gguf = crate::formats::gguf::experts::MoeGguf::new(&file);
            let source = with_dtype(&gguf, options.dtype);
            Arc::new(Llama::load_with(*c, source.as_ref(), activations)?)
        }
        CheckpointConfig::Llama(c) => {
            let source = with_dtype(&file, options.dtype);
            Arc::new(Llama::load_with(*c, source.as_ref(), activations)?)
        }
        CheckpointConfig::Gemma3(c) => {
            let gguf = crate::formats::gguf::gemma3::Gemma3Gguf(&file);
            let source = with_dtype(&gguf, options.dtype);
            Arc::new(Gemma3::load_with(*c, source.as_ref(), activations)?)
        }
        CheckpointConfig::Deepseek(c) => {
            let gguf = DeepseekGguf::new(&file, &c);
            let source = with_dtype(&gguf, options.dtype);
            Arc::new(Deepseek::load_with(*c, source.as_ref(), activations)?)
        }
    };
    let file_type = file
        .meta()
        .optional("general.file_type", |m, k| m.u32(k))?
        .map(|t| format!(" (GGUF file type {t})"))
        .unwrap_or_default();
    let kernels = match activations {
        crate::Activations::Int8 | crate::Activations::Int8x2 => {
            format!(" ({} kernels)", crate::kernels::Isa::best().name())
        }
        crate::Activations::F32 => String::new(),
    };
    let chosen = match options.activations {
        ActivationChoice::Auto => format!(
            " (auto: {:.2}B weights)",
            file.parameter_count() as f64 / 1e9
        ),
        ActivationChoice::Fixed(_) => String::new(),
    };
    let types = file
        .tensor_types()
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let precision = format!(
        "GGUF{file_type}: {types} tensors; {} activations{chosen} in block-quantized layers{kernels}; half-precision matrices {}",
        activations.name(),
        half_note(options.dtype)
    );
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        generation: GenerationDefaults::default(),
        path: path.to_path_buf(),
        format: ModelFormat::Gguf,
        precision,
    })
}

/// Loads a Hugging Face checkpoint directory.
pub fn load_hf_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let (raw, config) = read_checkpoint_config(dir)?;
    let generation = read_generation_config(dir)?;
    let parts = read_tokenizer(dir, &raw, &generation)?;
    let chat_template = template(parts.chat_template, &parts.tokenizer)?;
    let source = SafetensorsSource::open(dir, raw.quantization_config.as_ref())?;
    let precision = match (source.fp8_blocks(), source.stored_dtype()) {
        (None, Some(dt @ (candle_core::DType::F16 | candle_core::DType::BF16))) => {
            format!("{dt:?} weights, matrices {}", half_note(options.dtype))
        }
        (Some(b), _) => format!(
            "FP8 (e4m3) weights with [{}, {}] block scales, dequantized to f32 on load and computed in f32",
            b.block_rows, b.block_cols
        ),
        (None, Some(candle_core::DType::F32) | None) => "f32 weights, computed in f32".to_string(),
        (None, Some(dt)) => format!("{dt:?} weights widened to f32 on load and computed in f32"),
    };
    let src = with_dtype(&source, options.dtype);
    // Safetensors hold no block-quantized layers: the path only matters
    // for a fixed choice's name.
    let activations = options.activations.resolve(0);
    let model: Arc<dyn CausalLm> = match config {
        CheckpointConfig::Llama(c) => Arc::new(Llama::load_with(*c, src.as_ref(), activations)?),
        CheckpointConfig::Gemma3(c) => Arc::new(Gemma3::load_with(*c, src.as_ref(), activations)?),
        CheckpointConfig::Deepseek(c) => {
            Arc::new(Deepseek::load_with(*c, src.as_ref(), activations)?)
        }
    };
    Ok(LoadedModel {
        model,
        tokenizer: parts.tokenizer,
        chat_template,
        generation,
        path: dir.to_path_buf(),
        format: ModelFormat::HfSafetensors,
        precision,
    })
}
