//! Micro-benchmark of the sampler's per-token work at the default model's
//! vocabulary (49,152 tokens), each figure beside its peer in the same run
//! (the machine is shared: compare ratios, not absolute times):
//!
//! 1. drawing from the whole distribution (temperature only: one pass, no
//!    sort) against the sorted path that top-p takes (`top_p = 0.9999`,
//!    which sorts the whole vocabulary as every sampled token once did);
//! 2. the repetition penalty over a 2,000-token prompt and a growing
//!    output, from the sampler's incremental tally, against rebuilding the
//!    set of seen tokens from prompt and output on every token (as before).
//!
//! `cargo run --release -p pagoda-engine --example sampler_speed`

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use pagoda_engine::sampler::{argmax, History};
use pagoda_engine::{Sampler, SamplingParams};

const VOCAB: usize = 49_152;
const TOKENS: usize = 256;

/// Deterministic pseudo-random logits in [-8, 8).
fn logits(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..VOCAB)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
        })
        .collect()
}

/// Microseconds per token of sampling `TOKENS` tokens with `params`, the
/// output growing after `prompt`; the best of 5 runs.
fn per_token(params: &SamplingParams, prompt: &[u32]) -> f64 {
    let row = logits(1);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut sampler = Sampler::new(params.clone());
        let mut output = Vec::with_capacity(TOKENS);
        let mut scratch = row.clone();
        let start = Instant::now();
        for _ in 0..TOKENS {
            scratch.copy_from_slice(&row);
            let history = History {
                prompt,
                output: &output,
                suppressed: &[],
            };
            output.push(sampler.sample(&mut scratch, history).token);
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / TOKENS as f64);
        black_box(&output);
    }
    best
}

/// The same greedy decoding with the penalty's seen set rebuilt from
/// prompt and output on every token, as the sampler did before its tally.
fn rebuilt_penalty_per_token(penalty: f32, prompt: &[u32]) -> f64 {
    let row = logits(1);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut output: Vec<u32> = Vec::with_capacity(TOKENS);
        let mut scratch = row.clone();
        let start = Instant::now();
        for _ in 0..TOKENS {
            scratch.copy_from_slice(&row);
            let mut seen = HashSet::new();
            for &t in prompt.iter().chain(&output) {
                if seen.insert(t) {
                    let l = &mut scratch[t as usize];
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
            }
            output.push(argmax(&scratch));
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / TOKENS as f64);
    }
    best
}

fn main() {
    let sampled = |top_p: f32| SamplingParams {
        temperature: 0.8,
        top_p,
        seed: Some(7),
        ..SamplingParams::greedy()
    };
    let whole = per_token(&sampled(1.0), &[]);
    let sorted = per_token(&sampled(0.9999), &[]);
    println!("temperature 0.8, whole distribution (no sort): {whole:8.1} µs/token");
    println!(
        "temperature 0.8, top_p 0.9999 (sorts):        {sorted:8.1} µs/token  ({:.1}x)",
        sorted / whole
    );

    let prompt: Vec<u32> = (0..2000u32).map(|i| i * 31 % VOCAB as u32).collect();
    let greedy_penalised = SamplingParams {
        repetition_penalty: 1.1,
        ..SamplingParams::greedy()
    };
    let tally = per_token(&greedy_penalised, &prompt);
    let rebuilt = rebuilt_penalty_per_token(1.1, &prompt);
    println!("repetition penalty, 2,000-token prompt, incremental tally: {tally:8.1} µs/token");
    println!("repetition penalty, seen set rebuilt per token:            {rebuilt:8.1} µs/token  ({:.1}x)", rebuilt / tally);
}
