//! pagoda's engine: sequences, KV block management, scheduling, sampling
//! and the loop that drives a [`pagoda_models::CausalLm`] on its own thread.
//! It knows nothing of HTTP or JSON.

#![warn(missing_docs)]

pub mod admission;
pub mod block_manager;
pub mod block_pool;
mod constraint;
pub mod engine;
pub mod grammar;
pub mod handle;
pub mod ids;
pub mod kv_budget;
pub mod ngram_draft;
pub mod reasoning;
pub mod request;
pub mod sampler;
pub mod scheduler;
pub mod spec_accept;
pub mod step_cost;
mod token_tally;
pub mod window_blocks;

pub use admission::{Admit, Admitted, EngineLimits, Limit, SequenceLimit, SubmitError};
pub use engine::{EngineConfig, EngineCore, EngineInitError, EngineStats, EventSink};
pub use grammar::{lark_json, Grammar, GrammarCompiler, GrammarError, GrammarSpec};
pub use handle::{EngineHandle, RequestStream};
pub use ids::{RequestId, SeqId};
pub use kv_budget::{KvBudget, KvPoolSize};
pub use reasoning::ReasoningLimit;
pub use request::{EngineEvent, EngineFailure, FinishReason, Request, StopCondition};
pub use sampler::{Sampler, SamplingParams};
pub use scheduler::{Schedule, SchedulerConfig};
pub use step_cost::StepLatency;
