//! `pagoda generate`: load a model, run one prompt, stream the text, report speed.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use pagoda_engine::{generate, GenerateRequest, SamplingParams};
use pagoda_models::{load_model, IncrementalDecoder, RenderOptions};

use crate::cli::GenerateArgs;

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let load_start = Instant::now();
    let loaded =
        load_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
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

    let request = GenerateRequest {
        prompt: prompt_ids,
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_ids: if args.ignore_eos {
            Vec::new()
        } else {
            loaded.tokenizer.stop_ids().to_vec()
        },
    };
    let tokenizer = &loaded.tokenizer;
    let mut decoder = IncrementalDecoder::new(true);
    let mut stdout = std::io::stdout().lock();
    let mut stream_error = None;
    let generation = generate(&loaded.model, &request, |id| {
        match decoder.push(tokenizer, id) {
            Ok(text) => {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
            Err(e) => stream_error = Some(e),
        }
    })?;
    if let Some(e) = stream_error {
        return Err(e.into());
    }
    let rest = decoder.flush(tokenizer)?;
    writeln!(stdout, "{rest}")?;
    if args.print_ids {
        writeln!(stdout, "ids: {:?}", generation.tokens)?;
    }
    drop(stdout);

    let n = generation.tokens.len();
    let decode_tokens = n.saturating_sub(1);
    let decode_secs = generation.decode_time.as_secs_f64();
    let prefill_secs = generation.prefill_time.as_secs_f64();
    eprintln!(
        "[{} prompt tokens in {:.2}s ({:.1} tok/s); {} generated, {:.1} tok/s decode; finish: {:?}]",
        request.prompt.len(),
        prefill_secs,
        request.prompt.len() as f64 / prefill_secs.max(1e-9),
        n,
        if decode_tokens > 0 { decode_tokens as f64 / decode_secs.max(1e-9) } else { 0.0 },
        generation.finish_reason,
    );
    Ok(())
}
