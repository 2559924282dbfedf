//! pagoda's engine: sequences, KV block management, scheduling, sampling
//! and the loops that drive a [`pagoda_models::CausalLm`]. It knows nothing
//! of HTTP or JSON.

#![warn(missing_docs)]

pub mod block_manager;
pub mod block_pool;
pub mod generate;
pub mod ids;
pub mod sampler;
pub mod scheduler;

pub use generate::{generate, FinishReason, GenerateError, GenerateRequest, Generation};
pub use ids::{RequestId, SeqId};
pub use sampler::{Sampler, SamplingParams};
