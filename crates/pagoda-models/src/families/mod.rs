//! The model families: the llama-style decoder ([`llama`], with its
//! Hugging Face configuration in `config`), the DeepSeek-V2/V3 decoder
//! ([`deepseek`]: latent attention, mixture of experts, its own
//! configuration), and what both share (`decoder`: embedding, residual
//! blocks, output head).

pub(crate) mod config;
pub(crate) mod decoder;
pub mod deepseek;
pub mod llama;
