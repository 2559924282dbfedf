//! `pagoda generate`: load a model, run one prompt, stream the text, report speed.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use pagoda_engine::{
    EngineConfig, EngineCore, EngineEvent, FinishReason, Request, RequestId, SamplingParams,
    SchedulerConfig, StopCondition,
};
use pagoda_models::{load_model_with, IncrementalDecoder, RenderOptions};

use crate::commands::cli::GenerateArgs;

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let load_start = Instant::now();
    let loaded = load_model_with(&args.model, &args.precision.load_options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let c = loaded.config();
    tracing::info!(
        path = %loaded.path.display(),
        architecture = c.architecture.name(),
        layers = c.num_hidden_layers,
        hidden = c.hidden_size,
        heads = c.num_attention_heads,
        kv_heads = c.num_key_value_heads,
        vocab = c.vocab_size,
        context = c.max_position_embeddings,
        precision = %loaded.precision,
        seconds = format!("{:.2}", load_start.elapsed().as_secs_f64()),
        "model loaded"
    );

    let prompt_ids = if args.chat {
        let template = loaded
            .chat_template
            .as_ref()
            .context("--chat: this model ships no chat template")?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
        let text = template.render(
            &messages,
            &RenderOptions {
                add_generation_prompt: true,
                ..RenderOptions::default()
            },
        )?;
        loaded.tokenizer.encode(&text, false)?
    } else {
        loaded.tokenizer.encode(&args.prompt, true)?
    };

    let prompt_len = prompt_ids.len();
    let request = Request {
        prompt: prompt_ids,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            ..SamplingParams::greedy()
        },
        stop: StopCondition {
            max_tokens: args.max_tokens,
            min_tokens: 0,
            eos_token_ids: loaded.tokenizer.stop_ids().to_vec(),
            stop_token_ids: Vec::new(),
            ignore_eos: args.ignore_eos,
        },
        n: 1,
        reasoning: None,
        grammar: None,
    };
    // One sequence: a pool just large enough, driven step by step on this thread.
    let block_size = 16;
    // (The engine refuses an empty prompt or one past the context window.)
    let num_blocks = (prompt_len + args.max_tokens).div_ceil(block_size).max(1);
    let mut engine = EngineCore::new(
        loaded.model.clone(),
        EngineConfig {
            block_size,
            num_blocks,
            prefix_caching: false,
            scheduler: SchedulerConfig {
                max_num_seqs: 1,
                max_tokens_per_step: prompt_len.max(1),
                max_waiting: 1,
            },
            kv_dtype: args.precision.kv_cache_dtype(),
        },
    )?;
    let (tx, events) = flume::unbounded();
    engine.add_request(RequestId(1), request, Box::new(tx))?;

    let tokenizer = &loaded.tokenizer;
    let mut decoder = IncrementalDecoder::new(true);
    let mut stdout = std::io::stdout().lock();
    let mut ids = Vec::new();
    let mut finish = None;
    let start = Instant::now();
    let mut first_token_at = None;
    while finish.is_none() {
        engine.step();
        for event in events.try_iter() {
            match event {
                EngineEvent::Token { token, .. } => {
                    first_token_at.get_or_insert_with(|| start.elapsed());
                    ids.push(token);
                    write!(stdout, "{}", decoder.push(tokenizer, token)?)?;
                    stdout.flush()?;
                }
                EngineEvent::Finished { reason, .. } => finish = Some(reason),
                EngineEvent::Failed(e) => bail!("generation failed: {e}"),
            }
        }
        if finish.is_none() && engine.is_idle() {
            bail!("the engine stopped without finishing the request");
        }
    }
    let total = start.elapsed();
    let rest = decoder.flush(tokenizer)?;
    writeln!(stdout, "{rest}")?;
    if args.print_ids {
        writeln!(stdout, "ids: {ids:?}")?;
    }
    drop(stdout);

    let n = ids.len();
    let prefill = first_token_at.unwrap_or(total);
    let decode_tokens = n.saturating_sub(1);
    let decode_secs = total.saturating_sub(prefill).as_secs_f64();
    let prefill_secs = prefill.as_secs_f64();
    eprintln!(
        "[{} prompt tokens in {:.2}s ({:.1} tok/s); {} generated, {:.1} tok/s decode; finish: {:?}]",
        prompt_len,
        prefill_secs,
        prompt_len as f64 / prefill_secs.max(1e-9),
        n,
        if decode_tokens > 0 { decode_tokens as f64 / decode_secs.max(1e-9) } else { 0.0 },
        finish.unwrap_or(FinishReason::Length),
    );
    Ok(())
}
