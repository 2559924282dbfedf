//! GGUF files: opening one ([`file`](mod@file)), typed access to its metadata
//! (`meta`), the llama-style model configuration read from it
//! ([`config`]), DeepSeek-V2/V3 files with their split and absorbed
//! tensors (`deepseek`), routed experts split out of 3-D tensors (`experts`:
//! DeepSeek, Qwen3-MoE, Mixtral), Gemma 3 files (`gemma3`), the tokenizer rebuilt from its metadata
//! (`tokenizer`, with SentencePiece vocabularies in `spm_tokenizer`), and IQ4_NL tensors relabelled for candle's reader
//! (`relabel`).

pub mod config;
pub(crate) mod deepseek;
pub(crate) mod experts;
pub mod file;
pub(crate) mod gemma3;
pub(crate) mod meta;
pub(crate) mod relabel;
pub(crate) mod spm_tokenizer;
pub(crate) mod tokenizer;
