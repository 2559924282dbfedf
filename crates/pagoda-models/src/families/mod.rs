//! The model families: the llama-style decoder ([`llama`], with its
//! Hugging Face configuration in `config`), the DeepSeek-V2/V3 decoder
//! ([`deepseek`]: latent attention, mixture of experts, its own
//! configuration), Gemma 3 ([`gemma3`]: sliding and global layers,
//! sandwich norms, GeGLU), and what they share (`decoder`: embedding,
//! residual blocks, output head).

pub(crate) mod config;
pub(crate) mod decoder;
pub mod deepseek;
pub mod gemma3;
pub mod llama;
