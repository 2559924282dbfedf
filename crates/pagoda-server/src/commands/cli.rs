//! Command-line arguments of the `pagoda` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::capabilities::reasoning::ReasoningMode;
use crate::capabilities::tool_format::ToolCallParserArg;

/// Where `scripts/fetch-model.sh` puts the default model.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// pagoda: an OpenAI-compatible LLM inference server.
#[derive(Debug, Parser)]
#[command(name = "pagoda", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a completion for one prompt and stream it to the terminal.
    #[command(allow_negative_numbers = true)]
    Generate(GenerateArgs),
    /// Measure engine throughput and latency at several concurrency levels.
    Bench(BenchArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(Box<ServeArgs>),
    /// Measure how far a precision setting moves the model's next-token
    /// distributions from f32 throughout, over a text.
    Quality(QualityArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the GGUF block-quantized kernels treat activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationsArg {
    /// Per model: int8x2 below a billion weights, int8 from there.
    Auto,
    /// f32: results match transformers on the dequantized weights.
    F32,
    /// 8 bits per 32-value block, as llama.cpp: least arithmetic, noisier logits.
    Int8,
    /// Two 8-bit passes (the values, then their rounding error): about 15
    /// bits, logits within f32 noise, twice int8's integer arithmetic.
    Int8x2,
}

/// What precision half-precision (F16/BF16) weights are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// As stored: half-precision matrices stay in two bytes (f32 accumulation).
    Auto,
    /// Widened to f32 at load: twice the memory, the exact f32 path.
    F32,
}

/// The element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheDtypeArg {
    /// Four bytes per value: exact.
    F32,
    /// Two bytes per value: twice the tokens in the same memory.
    F16,
    /// ggml's Q8_0 per token (1.0625 bytes per value): ~4× the tokens of f32.
    #[value(name = "q8_0")]
    Q8_0,
}

/// The precision flags every command that loads a model takes.
#[derive(Debug, Clone, Args)]
pub struct PrecisionArgs {
    /// How GGUF block-quantized layers (Q4_0 … Q8_0, K-quants) treat activations.
    #[arg(long, env = "PAGODA_ACTIVATIONS", value_enum, default_value_t = ActivationsArg::Auto)]
    pub activations: ActivationsArg,
    /// What F16/BF16 weights are computed in: auto keeps them in two bytes.
    #[arg(long, env = "PAGODA_DTYPE", value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
    /// What the KV cache stores keys and values in: f16 holds twice the
    /// tokens of f32 in the same memory, q8_0 about four times.
    #[arg(long, env = "PAGODA_KV_CACHE_DTYPE", value_enum, default_value_t = KvCacheDtypeArg::F16)]
    pub kv_cache_dtype: KvCacheDtypeArg,
}

impl PrecisionArgs {
    /// The KV pool's element type.
    pub fn kv_cache_dtype(&self) -> pagoda_models::KvDtype {
        match self.kv_cache_dtype {
            KvCacheDtypeArg::F32 => pagoda_models::KvDtype::F32,
            KvCacheDtypeArg::F16 => pagoda_models::KvDtype::F16,
            KvCacheDtypeArg::Q8_0 => pagoda_models::KvDtype::Q8_0,
        }
    }

    /// The load options these choices mean.
    pub fn load_options(&self) -> pagoda_models::LoadOptions {
        pagoda_models::LoadOptions {
            activations: match self.activations {
                ActivationsArg::Auto => pagoda_models::ActivationChoice::Auto,
                ActivationsArg::F32 => pagoda_models::Activations::F32.into(),
                ActivationsArg::Int8 => pagoda_models::Activations::Int8.into(),
                ActivationsArg::Int8x2 => pagoda_models::Activations::Int8x2.into(),
            },
            dtype: match self.dtype {
                DtypeArg::Auto => pagoda_models::WeightDtype::Auto,
                DtypeArg::F32 => pagoda_models::WeightDtype::F32,
            },
        }
    }
}

/// Arguments of `pagoda serve`. Each can also come from the config file
/// (`--config`, keys named like the fields below) and from `PAGODA_*`
/// variables; flags beat variables, variables beat the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (default: config/pagoda.toml when it exists).
    #[arg(long, env = "PAGODA_CONFIG")]
    pub config: Option<PathBuf>,
    /// A GGUF file or a Hugging Face checkpoint directory.
    #[arg(long, env = "PAGODA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// How weights and activations are computed.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The name clients pass as `model` (default: the file name without extension).
    #[arg(long, env = "PAGODA_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long, env = "PAGODA_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,
    /// Split a reasoning model's thinking from its answer (`reasoning_content`):
    /// auto detects it from the chat template and the tokenizer.
    #[arg(long, env = "PAGODA_REASONING", value_enum, default_value_t = ReasoningMode::Auto)]
    pub reasoning: ReasoningMode,
    /// The tag that opens the thinking block.
    #[arg(long, env = "PAGODA_REASONING_OPEN_TAG", default_value = "<think>")]
    pub reasoning_open_tag: String,
    /// The tag that closes it (what the server inserts when a budget is spent).
    #[arg(long, env = "PAGODA_REASONING_CLOSE_TAG", default_value = "</think>")]
    pub reasoning_close_tag: String,
    /// Thinking budget of `reasoning_effort: "minimal"`, in tokens.
    #[arg(long, env = "PAGODA_REASONING_BUDGET_MINIMAL", default_value_t = 256)]
    pub reasoning_budget_minimal: usize,
    /// Thinking budget of `reasoning_effort: "low"`, in tokens.
    #[arg(long, env = "PAGODA_REASONING_BUDGET_LOW", default_value_t = 1024)]
    pub reasoning_budget_low: usize,
    /// Thinking budget of `reasoning_effort: "medium"`, in tokens.
    #[arg(long, env = "PAGODA_REASONING_BUDGET_MEDIUM", default_value_t = 4096)]
    pub reasoning_budget_medium: usize,
    /// Thinking budget of `reasoning_effort: "high"`, in tokens.
    #[arg(long, env = "PAGODA_REASONING_BUDGET_HIGH", default_value_t = 16384)]
    pub reasoning_budget_high: usize,
    /// How the model writes tool calls: auto (from the chat template),
    /// hermes (`<tool_call>` JSON, Qwen), llama3_json, deepseek
    /// (`<｜tool▁calls▁begin｜>` markup) or json (a bare JSON call).
    #[arg(long, env = "PAGODA_TOOL_CALL_PARSER", value_enum, default_value_t = ToolCallParserArg::Auto)]
    pub tool_call_parser: ToolCallParserArg,
    /// Address to listen on.
    #[arg(long, env = "PAGODA_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, env = "PAGODA_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Memory of the KV pool, in MiB.
    #[arg(long, env = "PAGODA_KV_CACHE_MIB", default_value_t = 512,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_cache_mib: u64,
    /// Positions per KV block.
    #[arg(long, env = "PAGODA_BLOCK_SIZE", default_value_t = 16,
        value_parser = positive)]
    pub block_size: usize,
    /// Most sequences running at once.
    #[arg(long, env = "PAGODA_MAX_NUM_SEQS", default_value_t = 16,
        value_parser = positive)]
    pub max_num_seqs: usize,
    /// Token budget of one engine step. Given alone, every step may fill
    /// it (a fixed chunk size); otherwise it is the cap of steps sized to
    /// the inter-token target (default 512).
    #[arg(long, env = "PAGODA_MAX_TOKENS_PER_STEP", value_parser = positive)]
    pub max_tokens_per_step: Option<usize>,
    /// Inter-token target, in milliseconds: a step that has streams
    /// decoding takes only the prompt tokens that the measured step costs
    /// say fit in it (at least one block's worth). Default: 1.5 × the
    /// measured decode-only step of the batch, unless
    /// --max-tokens-per-step alone fixes the budget.
    #[arg(long, env = "PAGODA_ITL_TARGET_MS", value_parser = positive_ms)]
    pub itl_target_ms: Option<f64>,
    /// Most requests waiting; beyond it, 429.
    #[arg(long, env = "PAGODA_MAX_WAITING", default_value_t = 64,
        value_parser = positive)]
    pub max_waiting: usize,
    /// Most choices (`n`) one request may ask for; `n` is also counted
    /// against --max-num-seqs (a request's choices run together).
    #[arg(long, env = "PAGODA_MAX_N", default_value_t = 16, value_parser = positive)]
    pub max_n: usize,
    /// Longest a generation may run, in seconds; past it, its choices end
    /// with finish_reason `length` (0: no limit).
    #[arg(long, env = "PAGODA_REQUEST_TIMEOUT_SECS", default_value_t = 600)]
    pub request_timeout_secs: u64,
    /// On SIGTERM, how long in-flight requests may still run before they are cut, in seconds.
    #[arg(long, env = "PAGODA_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Connections open at once; beyond, a 503 at once. Kept below the
    /// process's open-file limit (raised to its hard limit at start).
    #[arg(long, env = "PAGODA_MAX_CONNECTIONS", default_value_t = 1024, value_parser = positive)]
    pub max_connections: usize,
    /// Longest wait for a request's headers, in seconds, from the
    /// connection's start or the end of its previous response (so also how
    /// long a kept-alive connection may sit idle).
    #[arg(long, env = "PAGODA_HEADER_TIMEOUT_SECS", default_value_t = 15, value_parser = positive_u64)]
    pub header_timeout_secs: u64,
    /// Longest wait for a request's whole body, in seconds.
    #[arg(long, env = "PAGODA_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = positive_u64)]
    pub body_timeout_secs: u64,
    /// An API key clients must send as `Authorization: Bearer <key>` (repeatable;
    /// env: comma-separated). None: no authentication.
    #[arg(long = "api-key", env = "PAGODA_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Serve `/metrics` without an API key even when keys are configured
    /// (for a scraper on a trusted network).
    /// (`--metrics-public`, `--metrics-public=false`; config `true`/`false`.)
    #[arg(
        long,
        env = "PAGODA_METRICS_PUBLIC",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true"
    )]
    pub metrics_public: bool,
    /// A browser origin allowed by CORS (repeatable; env: comma-separated; `*`: any).
    /// None: no CORS headers.
    #[arg(
        long = "cors-origin",
        env = "PAGODA_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Log format.
    #[arg(long, env = "PAGODA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Testing aid: wait this long before loading the model (shows /health's 503).
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_load_delay_ms: u64,
}

fn positive_u64(s: &str) -> Result<u64, String> {
    positive(s).map(|v| v as u64)
}

fn positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive number of milliseconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

/// The step cap when no --max-tokens-per-step is given.
pub const ADAPTIVE_STEP_CAP: usize = 512;

impl ServeArgs {
    /// The step budget's cap and how steps are sized: a target (given or
    /// automatic) under a cap of --max-tokens-per-step (512 by default),
    /// or, with --max-tokens-per-step alone, a fixed budget.
    pub fn step_latency(&self) -> (usize, pagoda_engine::StepLatency) {
        use pagoda_engine::StepLatency;
        let latency = match (self.itl_target_ms, self.max_tokens_per_step) {
            (Some(ms), _) => StepLatency::TargetMs(ms),
            (None, Some(_)) => StepLatency::Fixed,
            (None, None) => StepLatency::Auto,
        };
        (
            self.max_tokens_per_step.unwrap_or(ADAPTIVE_STEP_CAP),
            latency,
        )
    }
}

/// Arguments of `pagoda bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A GGUF file or a Hugging Face checkpoint directory.
    #[arg(long, env = "PAGODA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// How weights and activations are computed.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Concurrent requests per cell, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Prompt length in tokens (each prompt is unique, so no prefix-cache hits).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per request (end-of-sequence is ignored).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Repetitions of each cell; medians are reported.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Token budget of one engine step.
    #[arg(long, default_value_t = 128)]
    pub max_tokens_per_step: usize,
    /// Also run every round with each request's output held to this JSON
    /// schema (a file), right after the free round, and report what the
    /// grammar costs per token.
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
}

/// Arguments of `pagoda quality`.
#[derive(Debug, Args)]
pub struct QualityArgs {
    /// A GGUF file or a Hugging Face checkpoint directory.
    #[arg(long, env = "PAGODA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// The setting measured (the reference is f32 activations and an f32
    /// KV cache).
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The text the model reads.
    #[arg(long, default_value = QUALITY_TEXT)]
    pub text: PathBuf,
    /// Tokens per window; each window starts from an empty cache.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Read only the first this many tokens of the text (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The text `pagoda quality` reads by default (run from the repository).
pub const QUALITY_TEXT: &str = "tests/fixtures/quality_text.txt";

/// Arguments of `pagoda generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A GGUF file or a Hugging Face checkpoint directory.
    #[arg(long, env = "PAGODA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// How weights and activations are computed.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed for sampling (same seed, same output).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print the generated token ids after the text.
    #[arg(long)]
    pub print_ids: bool,
}
