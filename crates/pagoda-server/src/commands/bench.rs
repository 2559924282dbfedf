//! `pagoda bench`: the engine's throughput and latency at several numbers of
//! concurrent requests, in process (no HTTP), on one model.
//!
//! Each cell submits `concurrency` unique prompts at once to a fresh engine
//! thread and records, per request, the time to its first token and the gaps
//! between tokens. Output tokens/s is all generated tokens over the cell's
//! wall time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pagoda_engine::{
    EngineConfig, EngineCore, EngineEvent, EngineHandle, EngineStats, Grammar, GrammarCompiler,
    GrammarSpec, Request, SamplingParams, SchedulerConfig, StopCondition,
};
use pagoda_models::load_model_with;

use crate::commands::cli::BenchArgs;

/// One cell's measurements.
struct Cell {
    wall: Duration,
    tokens: usize,
    requests: usize,
    ttft: Vec<Duration>,
    itl: Vec<Duration>,
    /// The engine's counters at the end (step and forward-pass times).
    stats: EngineStats,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs positive numbers");
    }
    if args.prompt_tokens == 0 || args.max_tokens == 0 || args.rounds == 0 {
        bail!("--prompt-tokens, --max-tokens and --rounds must be positive");
    }
    let loaded = load_model_with(&args.model, &args.precision.load_options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let base = "The history of computing is a long story of people finding faster ways to do arithmetic, \
                from the abacus to mechanical calculators, punched cards, vacuum tubes, transistors and \
                integrated circuits, and of the programs that made those machines useful. ";
    let filler = loaded
        .tokenizer
        .encode(&base.repeat(1 + args.prompt_tokens / 40), false)?;
    let context = loaded.config().max_position_embeddings;
    if args.prompt_tokens + args.max_tokens > context {
        bail!("--prompt-tokens plus --max-tokens exceed the context window of {context}");
    }
    let mut prompt_id = 0usize;
    let mut make_prompt = || -> anyhow::Result<Vec<u32>> {
        prompt_id += 1;
        let mut p = loaded
            .tokenizer
            .encode(&format!("Request {prompt_id}. "), false)?;
        p.extend(filler.iter().copied());
        p.truncate(args.prompt_tokens);
        Ok(p)
    };

    println!(
        "pagoda bench: {} | prompt {} tokens | {} output tokens | {} round(s) | {} threads",
        args.model.display(),
        args.prompt_tokens,
        args.max_tokens,
        args.rounds,
        rayon_threads()
    );
    println!(
        "| concurrency | output tok/s | requests/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | tok/s vs 1 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let grammar = match &args.json_schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let compiler = GrammarCompiler::new(
                &loaded.tokenizer,
                loaded.config().vocab_size,
                loaded.tokenizer.stop_ids(),
            )?;
            Some(compiler.compile(&GrammarSpec::JsonSchema {
                schema,
                strict: true,
            })?)
        }
        None => None,
    };
    let mut single = None;
    let mut overheads = Vec::new();
    let mut structured = Vec::new();
    for &c in &args.concurrency {
        let mut cells = Vec::new();
        let mut constrained = Vec::new();
        for _ in 0..args.rounds {
            let prompts = (0..c)
                .map(|_| make_prompt())
                .collect::<anyhow::Result<Vec<_>>>()?;
            cells.push(run_cell(&loaded.model, prompts.clone(), &args, None)?);
            if let Some(g) = &grammar {
                constrained.push(run_cell(&loaded.model, prompts, &args, Some(g))?);
            }
        }
        if grammar.is_some() {
            structured.push(grammar_line(c, &cells, &constrained));
        }
        let tok_s = median(
            cells
                .iter()
                .map(|x| x.tokens as f64 / x.wall.as_secs_f64())
                .collect(),
        );
        let req_s = median(
            cells
                .iter()
                .map(|x| x.requests as f64 / x.wall.as_secs_f64())
                .collect(),
        );
        let mut ttft: Vec<Duration> = cells.iter().flat_map(|x| x.ttft.iter().copied()).collect();
        let mut itl: Vec<Duration> = cells.iter().flat_map(|x| x.itl.iter().copied()).collect();
        ttft.sort();
        itl.sort();
        let steps: u64 = cells.iter().map(|x| x.stats.steps).sum();
        let step_us: u64 = cells.iter().map(|x| x.stats.step_micros).sum();
        let forward_us: u64 = cells.iter().map(|x| x.stats.forward_micros).sum();
        overheads.push(format!(
            "c={c}: {steps} steps, {:.2} ms each, {:.0} us of it outside the forward pass ({:.1}%)",
            step_us as f64 / steps.max(1) as f64 / 1e3,
            step_us.saturating_sub(forward_us) as f64 / steps.max(1) as f64,
            100.0 * step_us.saturating_sub(forward_us) as f64 / step_us.max(1) as f64,
        ));
        let base = *single.get_or_insert(tok_s);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {c} | {tok_s:.1} | {req_s:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2}x |",
            ms(percentile(&ttft, 0.5)),
            ms(percentile(&ttft, 0.99)),
            ms(percentile(&itl, 0.5)),
            ms(percentile(&itl, 0.99)),
            tok_s / base
        );
    }
    println!("\nengine step time (the rest is the model's forward pass):");
    for line in overheads {
        println!("  {line}");
    }
    if !structured.is_empty() {
        println!(
            "\nstructured output (the same prompts held to the JSON schema, run right after):"
        );
        println!(
            "| concurrency | free tok/s | schema tok/s | ratio | mask us/token | stall us/token |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for line in structured {
            println!("{line}");
        }
    }
    Ok(())
}

/// One row of the structured-output table: throughput free and held to
/// the schema, the masks' compute time per constrained token (beside the
/// forward pass) and the time steps waited for them.
fn grammar_line(c: usize, free: &[Cell], held: &[Cell]) -> String {
    let tok_s = |cells: &[Cell]| {
        median(
            cells
                .iter()
                .map(|x| x.tokens as f64 / x.wall.as_secs_f64())
                .collect(),
        )
    };
    let masks: u64 = held.iter().map(|x| x.stats.masks).sum();
    let mask_us: u64 = held.iter().map(|x| x.stats.mask_micros).sum();
    let wait_us: u64 = held.iter().map(|x| x.stats.mask_wait_micros).sum();
    let (a, b) = (tok_s(free), tok_s(held));
    format!(
        "| {c} | {a:.1} | {b:.1} | {:.2}x | {:.0} | {:.1} |",
        b / a.max(f64::MIN_POSITIVE),
        mask_us as f64 / masks.max(1) as f64,
        wait_us as f64 / masks.max(1) as f64,
    )
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn run_cell(
    model: &std::sync::Arc<dyn pagoda_models::CausalLm>,
    prompts: Vec<Vec<u32>>,
    args: &BenchArgs,
    grammar: Option<&Grammar>,
) -> anyhow::Result<Cell> {
    let block_size = 16;
    let per_seq = (args.prompt_tokens + args.max_tokens).div_ceil(block_size);
    let core = EngineCore::new(
        model.clone(),
        EngineConfig {
            block_size,
            num_blocks: per_seq * prompts.len() + 1,
            prefix_caching: false,
            scheduler: SchedulerConfig {
                max_num_seqs: prompts.len(),
                max_tokens_per_step: args.max_tokens_per_step,
                max_waiting: prompts.len(),
            },
            kv_dtype: args.precision.kv_cache_dtype(),
        },
    )?;
    let engine = EngineHandle::spawn(core, prompts.len())?;
    let requests = prompts.len();
    let start = Instant::now();
    let streams = prompts
        .into_iter()
        .map(|prompt| {
            engine.submit(Request {
                prompt,
                sampling: SamplingParams::greedy(),
                stop: StopCondition {
                    max_tokens: args.max_tokens,
                    min_tokens: 0,
                    eos_token_ids: Vec::new(),
                    stop_token_ids: Vec::new(),
                    ignore_eos: true,
                },
                n: 1,
                reasoning: None,
                grammar: grammar.cloned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while let Ok(e) = s.events.recv() {
                    match e {
                        EngineEvent::Token { .. } => times.push(start.elapsed()),
                        EngineEvent::Finished { .. } => break,
                        EngineEvent::Failed(e) => return Err(e),
                    }
                }
                Ok(times)
            })
        })
        .collect();
    let mut cell = Cell {
        wall: Duration::ZERO,
        tokens: 0,
        requests,
        ttft: Vec::new(),
        itl: Vec::new(),
        stats: EngineStats::default(),
    };
    for r in readers {
        let times = r
            .join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?
            .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
        if let Some(&first) = times.first() {
            cell.ttft.push(first);
        }
        cell.itl.extend(times.windows(2).map(|w| w[1] - w[0]));
        cell.tokens += times.len();
    }
    cell.wall = start.elapsed();
    cell.stats = engine.stats();
    Ok(cell)
}
