//! Where models come from: the `loader` that opens whatever a path holds,
//! GGUF files ([`gguf`]: the file, its metadata, the model configuration,
//! DeepSeek's tensor layout, the tokenizer), Hugging Face checkpoint
//! directories (`hf`: safetensors shards, FP8 block scales, generation
//! defaults), and the types both produce: a loaded [`weight`] and the
//! [`tensor_source`] a family reads its weights from; [`dtype`] says what
//! precision half-precision weights are computed in.

pub mod activation_choice;
pub mod dtype;
pub mod gguf;
pub(crate) mod hf;
pub(crate) mod loader;
pub mod tensor_source;
pub mod weight;
