//! `pagoda quality`: load a model twice — as configured, and with f32
//! activations and an f32 KV cache — run both over a text and report how
//! far the configured one's next-token distributions move (mean KL
//! divergence, top-1 agreement, perplexities), with each side's speed.

use std::time::Instant;

use anyhow::{bail, Context};
use pagoda_models::quality::{compare, Side};
use pagoda_models::{load_model_with, Activations, KvDtype, LoadOptions};

use crate::commands::cli::QualityArgs;

pub fn run(args: QualityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("reading {}", args.text.display()))?;
    let options = args.precision.load_options();
    let reference_options = LoadOptions {
        activations: Activations::F32.into(),
        ..options
    };
    let candidate = load_model_with(&args.model, &options)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let reference = load_model_with(&args.model, &reference_options)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let mut tokens = candidate.tokenizer.encode(&text, true)?;
    if args.max_tokens > 0 {
        tokens.truncate(args.max_tokens);
    }
    let window = args.window.min(candidate.config().max_position_embeddings);
    if tokens.len() < 2 || window < 2 {
        bail!("the text and the window must hold at least 2 tokens");
    }
    let kv = args.precision.kv_cache_dtype();
    let start = Instant::now();
    let d = compare(
        Side {
            model: reference.model.as_ref(),
            kv: KvDtype::F32,
        },
        Side {
            model: candidate.model.as_ref(),
            kv,
        },
        &tokens,
        window,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let setting = format!(
        "activations={} kv={}",
        options.activations.name(),
        kv.name()
    );
    let precision = &candidate.precision;
    let model = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if args.json {
        let figures = serde_json::json!({
            "model": model,
            "precision": candidate.precision,
            "setting": setting,
            "positions": d.positions,
            "window": window,
            "mean_kl": d.mean_kl,
            "p99_kl": d.p99_kl,
            "max_kl": d.max_kl,
            "top1_agreement": d.top1_agreement,
            "reference_perplexity": d.reference_perplexity,
            "candidate_perplexity": d.candidate_perplexity,
            "seconds": seconds,
        });
        println!("{figures}");
    } else {
        println!(
            "{model} [{setting}] against f32 ({precision}): {} positions, mean KL {:.2e} nats \
             (p99 {:.2e}, max {:.2e}), top-1 agreement {:.2}%, perplexity {:.3} vs {:.3} \
             ({seconds:.1} s)",
            d.positions,
            d.mean_kl,
            d.p99_kl,
            d.max_kl,
            100.0 * d.top1_agreement,
            d.candidate_perplexity,
            d.reference_perplexity,
        );
    }
    Ok(())
}
