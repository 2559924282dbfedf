//! pagoda's engine: sequences, sampling and the loops that drive a
//! [`pagoda_models::CausalLm`]. It knows nothing of HTTP or JSON.

#![warn(missing_docs)]

pub mod generate;
pub mod sampler;

pub use generate::{generate, FinishReason, GenerateError, GenerateRequest, Generation};
pub use sampler::{Sampler, SamplingParams};
