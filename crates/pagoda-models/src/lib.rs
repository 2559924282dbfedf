//! Model families on candle-core for pagoda: loaders for GGUF files and
//! Hugging Face checkpoint directories, the llama/qwen2 decoder and the
//! DeepSeek-V2/V3 decoder (latent attention, mixture of experts) with a
//! forward pass over a flattened batch and a paged KV cache, tokenizers
//! rebuilt from GGUF metadata, and chat templates rendered with minijinja.
//!
//! The reference implementations are Hugging Face transformers (numerics,
//! checked by the fixture tests) and llama.cpp (GGUF conventions and
//! tokenization).

#![warn(missing_docs)]

pub(crate) mod batch;
pub(crate) mod error;
pub mod families;
pub mod formats;
pub mod kernels;
pub(crate) mod layers;
pub(crate) mod model;
pub mod quality;
pub(crate) mod text;

pub use batch::{Logits, LogitsWanted, SeqChunk};
pub use error::{ModelError, Result};
pub use families::config::{Architecture, ModelConfig, RopeConfig, RopeLayout, RopeScaling};
pub use formats::activation_choice::ActivationChoice;
pub use formats::dtype::WeightDtype;
pub use formats::hf::generation_config::GenerationDefaults;
pub use formats::loader::{
    load_model, load_model_with, load_tokenizer, LoadOptions, LoadedModel, ModelFormat,
};
pub use layers::attention::{paged_attention, SeqQueries};
pub use layers::kv_cache::{
    BlockId, KvDtype, KvKind, KvLayout, KvSlice, KvWindow, LatentKv, PagedKvCache,
};
pub use layers::linear::Activations;
pub use model::CausalLm;
pub use text::chat_template::{ChatTemplate, RenderOptions};
pub use text::detokenizer::IncrementalDecoder;
pub use text::tokenizer::{SpecialToken, Tokenizer};
