//! Helpers shared by the model integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use pagoda_models::{BlockId, CausalLm, KvDtype, LogitsWanted, PagedKvCache, SeqChunk};

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The default model, fetched by `scripts/fetch-model.sh`.
pub fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A cache of `blocks` blocks of 4 positions (small, so that sequences cross blocks), in f32.
pub fn cache_for(model: &dyn CausalLm, blocks: usize) -> PagedKvCache {
    cache_in(model, blocks, KvDtype::F32)
}

/// [`cache_for`] storing `dtype`.
pub fn cache_in(model: &dyn CausalLm, blocks: usize, dtype: KvDtype) -> PagedKvCache {
    PagedKvCache::new(model.kv_layout().with_dtype(dtype), 4, blocks).expect("cache")
}

/// The logits of every position of `prompt`, forwarded in one chunk (f32 cache).
pub fn prompt_logits(model: &dyn CausalLm, prompt: &[u32]) -> Vec<f32> {
    prompt_logits_in(model, prompt, KvDtype::F32)
}

/// [`prompt_logits`] with a cache storing `dtype`.
pub fn prompt_logits_in(model: &dyn CausalLm, prompt: &[u32], dtype: KvDtype) -> Vec<f32> {
    let blocks = prompt.len().div_ceil(4);
    let mut cache = cache_in(model, blocks, dtype);
    let table: Vec<BlockId> = (0..blocks as u32).map(BlockId).collect();
    model
        .forward(
            &[SeqChunk {
                tokens: prompt,
                start_pos: 0,
                block_table: &table,
                window_table: &[],
                logits: LogitsWanted::All,
            }],
            &mut cache,
        )
        .expect("forward")
        .data
}

/// Greedy decoding through the paged cache (f32): the prompt in one chunk,
/// then one token per step.
pub fn greedy(model: &dyn CausalLm, prompt: &[u32], steps: usize, stop: &[u32]) -> Vec<u32> {
    greedy_in(model, prompt, steps, stop, KvDtype::F32)
}

/// [`greedy`] with a cache storing `dtype`.
pub fn greedy_in(
    model: &dyn CausalLm,
    prompt: &[u32],
    steps: usize,
    stop: &[u32],
    dtype: KvDtype,
) -> Vec<u32> {
    let total = prompt.len() + steps;
    let blocks = total.div_ceil(4);
    let mut cache = cache_in(model, blocks, dtype);
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
                    window_table: &[],
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

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Shape of the synthetic GGUF models written by [`write_tiny_gguf`]:
/// 256 columns so that every k-quant (256-value super-blocks) applies.
pub const TINY_HIDDEN: usize = 256;
/// Vocabulary of the synthetic GGUF models.
pub const TINY_VOCAB: usize = 64;

/// Writes a one-layer llama-architecture GGUF whose matrices are stored as
/// `dtype`; `arch` is the `general.architecture` value written.
pub fn write_tiny_gguf(
    path: &std::path::Path,
    dtype: candle_core::quantized::GgmlDType,
    arch: &str,
) {
    use candle_core::quantized::{gguf_file, QTensor};
    use candle_core::{Device, Tensor};
    use gguf_file::Value;

    let (h, ffn, heads, kv_heads) = (TINY_HIDDEN, 512, 4, 2);
    let hd = h / heads;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut seed = 1;
    let mut add = |name: &str, dims: &[usize], dtype, scale: f32| {
        let n: usize = dims.iter().product();
        seed += 1;
        let v: Vec<f32> = values(n, seed).iter().map(|x| x * scale).collect();
        let t = Tensor::from_vec(v, dims, &Device::Cpu).expect("tensor");
        tensors.push((
            name.to_string(),
            QTensor::quantize(&t, dtype).expect("quantize"),
        ));
    };
    let f32_type = candle_core::quantized::GgmlDType::F32;
    add("token_embd.weight", &[TINY_VOCAB, h], dtype, 1.0);
    add("blk.0.attn_norm.weight", &[h], f32_type, 1.0);
    add("blk.0.attn_q.weight", &[h, h], dtype, 0.1);
    add("blk.0.attn_k.weight", &[kv_heads * hd, h], dtype, 0.1);
    add("blk.0.attn_v.weight", &[kv_heads * hd, h], dtype, 0.1);
    add("blk.0.attn_output.weight", &[h, h], dtype, 0.1);
    add("blk.0.ffn_norm.weight", &[h], f32_type, 1.0);
    add("blk.0.ffn_gate.weight", &[ffn, h], dtype, 0.1);
    add("blk.0.ffn_up.weight", &[ffn, h], dtype, 0.1);
    add("blk.0.ffn_down.weight", &[h, ffn], dtype, 0.1);
    add("output_norm.weight", &[h], f32_type, 1.0);

    let tokens: Vec<Value> = (0..TINY_VOCAB)
        .map(|i| Value::String(((b'0' + i as u8) as char).to_string()))
        .collect();
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(1)),
        (format!("{arch}.context_length"), Value::U32(64)),
        (format!("{arch}.embedding_length"), Value::U32(h as u32)),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(ffn as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(kv_heads as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![])),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
    ];
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).expect("create");
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).expect("write gguf");
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
