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

pub mod attention;
pub mod batch;
pub mod chat_template;
mod columns_out;
pub mod config;
mod decoder;
pub mod deepseek;
pub mod deepseek_config;
pub mod detokenizer;
pub mod embedding;
pub mod error;
pub mod fp8;
pub mod generation_config;
pub mod gguf_config;
pub mod gguf_deepseek;
pub mod gguf_file;
pub mod gguf_meta;
pub mod gguf_tokenizer;
pub mod hf_dir;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod loader;
pub mod mla_attention;
mod mla_kernels;
pub mod model;
pub mod moe;
pub mod norm;
mod panel_kernels_avx512;
mod panel_kernels_x86;
pub mod panel_matrix;
pub mod qmatmul;
mod qmatmul_avx2;
pub mod qmatmul_int8;
mod qmatmul_int8_avx2;
pub mod rope;
pub mod swiglu;
pub mod team;
pub mod tensor_source;
pub mod tokenizer;
mod vector;
pub mod weight;

pub use batch::{Logits, LogitsWanted, SeqChunk};
pub use chat_template::{ChatTemplate, RenderOptions};
pub use config::{Architecture, ModelConfig};
pub use detokenizer::IncrementalDecoder;
pub use error::{ModelError, Result};
pub use kv_cache::{BlockId, KvKind, KvLayout, LatentKv, PagedKvCache};
pub use linear::Activations;
pub use loader::{
    load_model, load_model_with, load_tokenizer, LoadOptions, LoadedModel, ModelFormat,
};
pub use model::CausalLm;
pub use tokenizer::Tokenizer;
