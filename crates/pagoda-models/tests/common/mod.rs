//! Helpers shared by the model integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use pagoda_models::{BlockId, CausalLm, LogitsWanted, PagedKvCache, SeqChunk};

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The default model, fetched by `scripts/fetch-model.sh`.
pub fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A cache of `blocks` blocks of 4 positions (small, so that sequences cross blocks).
pub fn cache_for(model: &dyn CausalLm, blocks: usize) -> PagedKvCache {
    PagedKvCache::new(model.kv_layout(), 4, blocks).expect("cache")
}

/// Greedy decoding through the paged cache: the prompt in one chunk, then one token per step.
pub fn greedy(model: &dyn CausalLm, prompt: &[u32], steps: usize, stop: &[u32]) -> Vec<u32> {
    let total = prompt.len() + steps;
    let blocks = total.div_ceil(4);
    let mut cache = cache_for(model, blocks);
    // A scattered block table, to prove nothing assumes contiguous blocks.
    let table: Vec<BlockId> = (0..blocks as u32).rev().map(BlockId).collect();
    let mut out = Vec::new();
    let mut pending = prompt.to_vec();
    let mut pos = 0;
    for _ in 0..steps {
        let logits = model
            .forward(
                &[SeqChunk {
                    tokens: &pending,
                    start_pos: pos,
                    block_table: &table,
                    logits: LogitsWanted::Last,
                }],
                &mut cache,
            )
            .expect("forward");
        pos += pending.len();
        let next = argmax(logits.row(0));
        out.push(next);
        if stop.contains(&next) {
            break;
        }
        pending = vec![next];
    }
    out
}

/// Index of the first maximum.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
