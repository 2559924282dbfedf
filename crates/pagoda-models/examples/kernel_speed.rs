//! Micro-benchmark of pagoda's block kernels, f32 activations against
//! 8-bit activations side by side in the same run: GB/s of weights
//! streamed and GFLOP/s, for decode (1 row) and prefill-sized batches;
//! then the machine's read bandwidth, and every product of one forward
//! pass of the default model's shapes (SmolLM2-135M: 30 layers of Q4_1,
//! a Q8_0 output head, 97 MB) against that bound.
//!
//! `cargo run --release -p pagoda-models --example kernel_speed`
//! (`KERNEL_PASSES=2` for the integer products of int8x2 activations)
//!
//! With the argument `mla`, latent attention instead
//! (`families::deepseek::mla_attention::latent_attention`) at
//! DeepSeek-V2-Lite's shapes (16
//! heads, kv_lora_rank 512, qk_rope 64, qk_nope 128, v 128): decode steps
//! of 1 and 16 sequences over contexts of 512 and 2048 tokens, each against
//! one read of the bytes it must touch (latent rows and `kv_b_proj`) on the
//! same threads:
//!
//! `cargo run --release -p pagoda-models --example kernel_speed -- mla`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pagoda_models::families::deepseek::mla_attention::{
    latent_attention, AbsorbedKvB, LatentQueries, MlaShape,
};
use pagoda_models::kernels::f32::QuantMatrix;
use pagoda_models::kernels::int8::Q8Rows;
use pagoda_models::kernels::int8::{matmul_group, ActivationPasses, Int8Weights};
use pagoda_models::kernels::panel::PanelMatrix;
use pagoda_models::kernels::team::Team;
use pagoda_models::kernels::BlockFormat;
use pagoda_models::{BlockId, KvLayout, LatentKv, PagedKvCache};

/// The best time of several repetitions (the machine is shared).
fn best(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut secs = f64::INFINITY;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        secs = secs.min(start.elapsed().as_secs_f64() / iters as f64);
    }
    secs
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        None => block_kernels(),
        Some("mla") => mla(),
        Some("attention") => attention(),
        Some("types") => every_type(),
        Some("bandwidth") => println!("{:.2}", read_bandwidth(1 << 30)),
        Some("1b") => one_b_pass(match std::env::args().nth(2).as_deref() {
            None => None,
            Some("q4_0") => Some(GgmlDType::Q4_0),
            Some("q4k") => Some(GgmlDType::Q4K),
            Some("q6k") => Some(GgmlDType::Q6K),
            Some(other) => {
                eprintln!("unknown type `{other}` for `1b` (q4_0, q4k or q6k)");
                std::process::exit(2);
            }
        }),
        Some(other) => {
            eprintln!("unknown benchmark `{other}` (none for the block kernels, `types` or `mla`)");
            std::process::exit(2);
        }
    }
}

/// The 8-bit passes of the integer products: `KERNEL_PASSES=2` measures
/// the int8x2 activations (the server's default), otherwise one pass.
fn passes() -> ActivationPasses {
    match std::env::var("KERNEL_PASSES").as_deref() {
        Ok("2") => ActivationPasses::Two,
        _ => ActivationPasses::One,
    }
}

/// The median time of several repetitions, each of `iters` calls.
fn median(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Latent attention decode steps at DeepSeek-V2-Lite's shapes.
/// Grouped-query attention at a Llama-3.2-1B layer's shapes (32 query
/// heads, 8 kv heads of 64) over an f16 pool: a 2,048-token prompt in
/// chunks of 256 (what prefill costs per layer), then decode steps of 1
/// and 8 sequences at 2,048 tokens of context.
fn attention() {
    use pagoda_models::{paged_attention, KvDtype, SeqQueries};
    let (heads, kv_heads, hd, bs, context) = (32usize, 8usize, 64usize, 16usize, 2048usize);
    let layout = KvLayout::per_head(1, kv_heads, hd).with_dtype(KvDtype::F16);
    let blocks = context / bs;
    let mut cache = PagedKvCache::new(layout, bs, 8 * blocks).expect("cache");
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5) * 2.0)
            .collect()
    };
    let tables: Vec<Vec<BlockId>> = (0..8)
        .map(|s| {
            (s * blocks..(s + 1) * blocks)
                .map(|b| BlockId(b as u32))
                .collect()
        })
        .collect();
    for table in &tables {
        let k = values(context * kv_heads * hd, 1);
        let v = values(context * kv_heads * hd, 2);
        cache.write(0, table, 0, &k, &v);
    }
    let q = values(context * heads * hd, 3);
    let row = heads * hd;
    let chunk = 256;
    let prefill = best(1, || {
        for start in (0..context).step_by(chunk) {
            std::hint::black_box(paged_attention(
                cache.layer(0),
                &[SeqQueries {
                    q: &q[start * row..(start + chunk) * row],
                    start_pos: start,
                    block_table: &tables[0],
                }],
                heads,
                kv_heads,
            ));
        }
    });
    println!(
        "attention, 32 heads / 8 kv heads of 64, f16 pool, {} threads: 2,048-token prompt in chunks of {chunk}: {:.1} ms per layer ({:.0} tokens/s)",
        Team::global().threads(),
        prefill * 1e3,
        context as f64 / prefill
    );
    for seqs in [1usize, 8] {
        let step: Vec<SeqQueries> = (0..seqs)
            .map(|s| SeqQueries {
                q: &q[(context - 1) * row..context * row],
                start_pos: context - 1,
                block_table: &tables[s],
            })
            .collect();
        let secs = best(20, || {
            std::hint::black_box(paged_attention(cache.layer(0), &step, heads, kv_heads));
        });
        println!(
            "decode, {seqs} sequences at 2,048 tokens: {:.1} us per layer",
            secs * 1e6
        );
    }
}

fn mla() {
    let shape = MlaShape {
        num_heads: 16,
        qk_nope_head_dim: 128,
        qk_rope_head_dim: 64,
        v_head_dim: 128,
        kv_lora_rank: 512,
        softmax_scale: 192f32.powf(-0.5),
    };
    let width = shape.kv_lora_rank + shape.qk_rope_head_dim;
    let qk = shape.qk_nope_head_dim + shape.qk_rope_head_dim;
    let kv_b_len =
        shape.num_heads * (shape.qk_nope_head_dim + shape.v_head_dim) * shape.kv_lora_rank;
    let kv_b: Vec<f32> = (0..kv_b_len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let kv_b = AbsorbedKvB::new(kv_b, shape).expect("kv_b");
    let block_size = 16;
    println!(
        "latent attention, DeepSeek-V2-Lite shapes (16 heads, latent 512 + rope 64, nope 128, v 128), {} threads; \
         bound = one read of the latent rows and kv_b_proj on the same threads",
        Team::global().threads()
    );
    for context in [512usize, 2048] {
        for seqs in [1usize, 16] {
            let blocks_per_seq = context.div_ceil(block_size);
            let layout = KvLayout::latent(
                1,
                LatentKv {
                    kv_lora_rank: shape.kv_lora_rank,
                    qk_rope_head_dim: shape.qk_rope_head_dim,
                    num_heads: shape.num_heads,
                    qk_nope_head_dim: shape.qk_nope_head_dim,
                    v_head_dim: shape.v_head_dim,
                },
            );
            let mut cache =
                PagedKvCache::new(layout, block_size, seqs * blocks_per_seq).expect("cache");
            // Each sequence's blocks interleaved with the others', as a
            // server's pool hands them out.
            let tables: Vec<Vec<BlockId>> = (0..seqs)
                .map(|s| {
                    (0..blocks_per_seq)
                        .map(|b| BlockId((b * seqs + s) as u32))
                        .collect()
                })
                .collect();
            for (s, table) in tables.iter().enumerate() {
                let rows: Vec<f32> = (0..context * width)
                    .map(|i| ((i * 31 + s * 17) % 997) as f32 / 997.0 - 0.5)
                    .collect();
                cache.write_latent(0, table, 0, &rows).expect("write");
            }
            let q: Vec<Vec<f32>> = (0..seqs)
                .map(|s| {
                    (0..shape.num_heads * qk)
                        .map(|i| ((i * 13 + s) % 101) as f32 / 101.0 - 0.5)
                        .collect()
                })
                .collect();
            let view = cache.latent_layer(0).expect("view");
            let batch: Vec<LatentQueries> = (0..seqs)
                .map(|s| LatentQueries {
                    q: &q[s],
                    start_pos: context - 1,
                    block_table: &tables[s],
                })
                .collect();
            let iters = (20_000 / (context * seqs)).max(2);
            let secs = median(iters, || {
                std::hint::black_box(latent_attention(view, &batch, &kv_b));
            });
            let bytes = (seqs * context * width + kv_b_len) * 4;
            let bound = bytes as f64 / (read_bandwidth(bytes) * 1e9);
            // A hash of the output's bits: a change of kernel that keeps
            // them keeps it.
            let hash = latent_attention(view, &batch, &kv_b)
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
                    (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
                });
            println!(
                "context {context:>4}, {seqs:>2} sequence(s): {:>8.1} us per step | {:>6.1} us per sequence | bound {:>7.1} us | {:>5.1}x the bound | output {hash:016x}",
                secs * 1e6,
                secs * 1e6 / seqs as f64,
                bound * 1e6,
                secs / bound,
            );
        }
    }
}

/// The block kernels' products and one forward pass of the default model's shapes.
fn block_kernels() {
    let (rows, cols) = (1536, 576);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("tensor");
    println!("{rows}x{cols} weights; f32 = f32 activations, int8 = 8-bit activations");
    for (format, dtype) in [
        (BlockFormat::Q4_0, GgmlDType::Q4_0),
        (BlockFormat::Q4_1, GgmlDType::Q4_1),
        (BlockFormat::Q8_0, GgmlDType::Q8_0),
    ] {
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let size = bytes.len() as f64;
        let m = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
        let panels = PanelMatrix::from_rows(&m);
        let mut scratch = Q8Rows::default();
        for batch in [1usize, 4, 16, 64] {
            let x: Vec<f32> = (0..batch * cols)
                .map(|i| (i % 13) as f32 * 0.01 - 0.06)
                .collect();
            let iters = 1000 / batch;
            let f32_secs = best(iters, || {
                std::hint::black_box(m.matmul(&x, batch));
            });
            let int8_secs = best(iters, || {
                std::hint::black_box(panels.matmul(&x, batch, &mut scratch, passes()));
            });
            let flops = 2.0 * (rows * cols * batch) as f64;
            println!(
                "{format:?} batch {batch:>2}: f32 {:>7.1} us ({:>5.1} GB/s, {:>6.1} GFLOP/s) | int8 {:>7.1} us ({:>5.1} GB/s, {:>6.1} GFLOP/s) | int8 {:.2}x faster",
                f32_secs * 1e6,
                size / f32_secs / 1e9,
                flops / f32_secs / 1e9,
                int8_secs * 1e6,
                size / int8_secs / 1e9,
                flops / int8_secs / 1e9,
                f32_secs / int8_secs,
            );
        }
    }
    model_pass();
}

/// A product `x · Wᵀ` of `m` rows, with the int8 scratch.
type Product = Box<dyn Fn(&[f32], usize, &mut Q8Rows) -> Vec<f32>>;

/// Every GGUF type pagoda computes, at a 1B model's FFN shape ([8192,
/// 2048]: one gate or up projection), with 8-bit activations, against
/// candle's quantized matmul on the same tensor (the path these types took
/// before pagoda's own kernels) and against one read of the weights.
fn every_type() {
    use pagoda_models::kernels::half_precision::{HalfKind, HalfMatrix};
    use pagoda_models::kernels::plane::{PlaneFormat, PlaneMatrix};
    let (rows, cols) = (8192, 2048);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 0.05)
        .collect();
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("tensor");
    let bandwidth = read_bandwidth(256 << 20);
    println!(
        "[{rows}, {cols}] weights, {} threads, read bandwidth {bandwidth:.1} GB/s;          pagoda vs candle's QMatMul; 'of bound' = time of one read of the weights / kernel time",
        Team::global().threads()
    );
    let types = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::F16,
        GgmlDType::BF16,
    ];
    // `types Q4K 64`: one type (as printed), one batch size.
    let only_type = std::env::args().nth(2);
    let only_batch: Option<usize> = std::env::args().nth(3).and_then(|b| b.parse().ok());
    let mut scratch = Q8Rows::default();
    for dtype in types {
        if only_type
            .as_ref()
            .is_some_and(|t| *t != format!("{dtype:?}"))
        {
            continue;
        }
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let size = bytes.len() as f64;
        let ours: Product = if let Some(format) = BlockFormat::from_ggml(dtype) {
            let m = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
            let p = PanelMatrix::from_rows(&m);
            Box::new(move |x, b, s| p.matmul(x, b, s, passes()))
        } else if let Some(format) = PlaneFormat::from_ggml(dtype) {
            let p = PlaneMatrix::from_gguf(format, rows, cols, &bytes).expect("matrix");
            Box::new(move |x, b, s| p.matmul(x, b, s, passes()))
        } else {
            let kind = if dtype == GgmlDType::F16 {
                HalfKind::F16
            } else {
                HalfKind::Bf16
            };
            let h = HalfMatrix::from_le_bytes(kind, rows, cols, &bytes).expect("matrix");
            Box::new(move |x, b, _| h.matmul(x, b))
        };
        let candle = candle_core::quantized::QMatMul::from_qtensor(q).expect("qmatmul");
        for batch in [1usize, 8, 64] {
            if only_batch.is_some_and(|b| b != batch) {
                continue;
            }
            let x: Vec<f32> = (0..batch * cols)
                .map(|i| (i % 13) as f32 * 0.01 - 0.06)
                .collect();
            let iters = (64 / batch).max(1);
            let ours_secs = best(iters, || {
                std::hint::black_box(ours(&x, batch, &mut scratch));
            });
            let xt = Tensor::from_slice(&x, (batch, cols), &Device::Cpu).expect("x");
            let candle_secs = best(iters, || {
                use candle_core::Module;
                std::hint::black_box(candle.forward(&xt).expect("forward"));
            });
            println!(
                "{:<5} batch {batch:>2}: pagoda {:>8.1} us ({:>5.1} GB/s, {:>4.0}% of bound) | candle {:>8.1} us | {:>5.2}x",
                format!("{dtype:?}"),
                ours_secs * 1e6,
                size / ours_secs / 1e9,
                100.0 * size / bandwidth / 1e9 / ours_secs,
                candle_secs * 1e6,
                candle_secs / ours_secs,
            );
        }
    }
}

/// Every product of one forward pass of a Llama-3.2-1B-shaped model in
/// Q4_K_M's types (Q4_K; Q6_K for `ffn_down`, `attn_v` and the head, as
/// llama-quantize picks them for most layers; with `1b q4_0`, `1b q4k` or
/// `1b q6k`, every matrix in that one type),
/// distinct memory for every layer (~700 MB: far beyond the caches),
/// against one read of the GGUF bytes.
fn one_b_pass(only: Option<GgmlDType>) {
    use pagoda_models::kernels::plane::{PlaneFormat, PlaneMatrix};
    let (h, kv, ffn, vocab, layers) = (2048, 512, 8192, 49152, 16);
    let weights = |r: usize, c: usize, dtype: GgmlDType| -> Box<dyn Int8Weights> {
        let dtype = only.unwrap_or(dtype);
        let w: Vec<f32> = (0..r * c)
            .map(|i| (((i * 7919 + r) % 1000) as f32 / 1000.0 - 0.5) * 0.05)
            .collect();
        let t = Tensor::from_vec(w, (r, c), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let bytes = q.data().expect("data");
        match PlaneFormat::from_ggml(dtype) {
            Some(format) => Box::new(PlaneMatrix::from_gguf(format, r, c, &bytes).expect("matrix")),
            None => Box::new(matrix(r, c, dtype, BlockFormat::Q4_0)),
        }
    };
    let model: Vec<[Box<dyn Int8Weights>; 7]> = (0..layers)
        .map(|_| {
            [
                weights(h, h, GgmlDType::Q4K),
                weights(kv, h, GgmlDType::Q4K),
                weights(kv, h, GgmlDType::Q6K),
                weights(h, h, GgmlDType::Q4K),
                weights(ffn, h, GgmlDType::Q4K),
                weights(ffn, h, GgmlDType::Q4K),
                weights(h, ffn, GgmlDType::Q6K),
            ]
        })
        .collect();
    let head = weights(vocab, h, GgmlDType::Q6K);
    let size = |w: &dyn Int8Weights, dtype: GgmlDType| {
        let dtype = only.unwrap_or(dtype);
        w.rows() * w.cols() / dtype.block_size() * dtype.type_size()
    };
    let per_layer = size(model[0][0].as_ref(), GgmlDType::Q4K) * 2
        + size(model[0][1].as_ref(), GgmlDType::Q4K)
        + size(model[0][2].as_ref(), GgmlDType::Q6K)
        + size(model[0][4].as_ref(), GgmlDType::Q4K) * 2
        + size(model[0][6].as_ref(), GgmlDType::Q6K);
    let bytes = (per_layer * layers + size(head.as_ref(), GgmlDType::Q6K)) as f64;
    let dram = read_bandwidth(1 << 30);
    println!(
        "1B-shaped {} products: {:.0} MB of GGUF weights; read bandwidth, {} threads: {dram:.1} GB/s over 1 GiB",
        only.map_or("Q4_K_M".to_string(), |t| format!("{t:?}")),
        bytes / 1e6,
        Team::global().threads(),
    );
    // `1b q4k 1`: one batch size.
    let only_batch: Option<usize> = std::env::args().nth(3).and_then(|b| b.parse().ok());
    let mut scratch = Q8Rows::default();
    for batch in [1usize, 8, 64] {
        if only_batch.is_some_and(|b| b != batch) {
            continue;
        }
        let x_h: Vec<f32> = (0..batch * h)
            .map(|i| (i % 13) as f32 * 0.01 - 0.06)
            .collect();
        let x_ffn: Vec<f32> = (0..batch * ffn)
            .map(|i| (i % 11) as f32 * 0.01 - 0.05)
            .collect();
        let secs = best(1, || {
            for l in &model {
                std::hint::black_box(matmul_group(
                    &[l[0].as_ref(), l[1].as_ref(), l[2].as_ref()],
                    &x_h,
                    batch,
                    &mut scratch,
                    passes(),
                ));
                std::hint::black_box(matmul_group(
                    &[l[3].as_ref()],
                    &x_h,
                    batch,
                    &mut scratch,
                    passes(),
                ));
                std::hint::black_box(matmul_group(
                    &[l[4].as_ref(), l[5].as_ref()],
                    &x_h,
                    batch,
                    &mut scratch,
                    passes(),
                ));
                std::hint::black_box(matmul_group(
                    &[l[6].as_ref()],
                    &x_ffn,
                    batch,
                    &mut scratch,
                    passes(),
                ));
            }
            std::hint::black_box(matmul_group(
                &[head.as_ref()],
                &x_h,
                batch,
                &mut scratch,
                passes(),
            ));
        });
        println!(
            "batch {batch:>2}: {:>7.2} ms = {:>6.1} tokens/s of products alone | {:>5.1} GB/s = {:>3.0}% of the read bound",
            secs * 1e3,
            batch as f64 / secs,
            bytes / secs / 1e9,
            100.0 * bytes / secs / 1e9 / dram,
        );
    }
}

/// Sums `part` in 64 independent lanes (wide loads, no dependency chain
/// longer than one add per 256 bytes): a read as fast as the memory allows.
fn lane_sum(part: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn wide(part: &[u64]) -> u64 {
            lane_sum_generic(part)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { wide(part) };
        }
    }
    lane_sum_generic(part)
}

#[inline(always)]
fn lane_sum_generic(part: &[u64]) -> u64 {
    let mut lanes = [0u64; 32];
    let (chunks, _) = part.as_chunks::<32>();
    for c in chunks {
        for k in 0..32 {
            lanes[k] = lanes[k].wrapping_add(c[k]);
        }
    }
    lanes.iter().fold(0u64, |a, v| a.wrapping_add(*v))
}

/// Read bandwidth of the team's threads over `bytes` of memory (best of 7).
fn read_bandwidth(bytes: usize) -> f64 {
    let data: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let team = Team::global();
    let tasks = team.threads() * 8;
    let chunk = data.len().div_ceil(tasks);
    let sums: Vec<std::sync::atomic::AtomicU64> = (0..tasks).map(|_| Default::default()).collect();
    let secs = best(1, || {
        team.run(tasks, &|t| {
            let part = &data[(t * chunk).min(data.len())..((t + 1) * chunk).min(data.len())];
            sums[t].store(lane_sum(part), std::sync::atomic::Ordering::Relaxed);
        });
    });
    std::hint::black_box(&sums);
    bytes as f64 / secs / 1e9
}

/// A random-looking `[rows, cols]` matrix in `dtype`.
fn matrix(rows: usize, cols: usize, dtype: GgmlDType, format: BlockFormat) -> PanelMatrix {
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 + rows) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, dtype).expect("quantize");
    let bytes = q.data().expect("data").into_owned();
    PanelMatrix::from_rows(&QuantMatrix::new(format, rows, cols, bytes).expect("matrix"))
}

/// Every product of one forward pass of SmolLM2-135M's shapes, grouped as
/// the model runs them, on distinct memory for each layer.
fn model_pass() {
    let (h, kv, ffn, vocab, layers) = (576, 192, 1536, 49152, 30);
    let one = |r, c| matrix(r, c, GgmlDType::Q4_1, BlockFormat::Q4_1);
    let layer = [
        one(h, h),
        one(kv, h),
        one(kv, h),
        one(h, h),
        one(ffn, h),
        one(ffn, h),
        one(h, ffn),
    ];
    let model: Vec<[PanelMatrix; 7]> = (0..layers).map(|_| layer.clone()).collect();
    let head = matrix(vocab, h, GgmlDType::Q8_0, BlockFormat::Q8_0);
    let bytes = (h * h * 2 + kv * h * 2 + ffn * h * 3) as f64 / 32.0 * 20.0 * layers as f64
        + (vocab * h) as f64 / 32.0 * 34.0;
    let dram = read_bandwidth(1 << 30);
    let same = read_bandwidth(bytes as usize);
    println!(
        "\nread bandwidth, {} threads: {dram:.1} GB/s over 1 GiB, {same:.1} GB/s over {:.0} MB (the model's size; it fits this machine's L3)",
        Team::global().threads(),
        bytes / 1e6
    );
    let mut scratch = Q8Rows::default();
    for batch in [1usize, 16, 64] {
        let x_h: Vec<f32> = (0..batch * h)
            .map(|i| (i % 13) as f32 * 0.01 - 0.06)
            .collect();
        let x_ffn: Vec<f32> = (0..batch * ffn)
            .map(|i| (i % 11) as f32 * 0.01 - 0.05)
            .collect();
        let secs = best(3, || {
            for l in &model {
                std::hint::black_box(matmul_group(
                    &[&l[0] as &dyn Int8Weights, &l[1], &l[2]],
                    &x_h,
                    batch,
                    &mut scratch,
                    passes(),
                ));
                std::hint::black_box(l[3].matmul(&x_h, batch, &mut scratch, passes()));
                std::hint::black_box(matmul_group(
                    &[&l[4] as &dyn Int8Weights, &l[5]],
                    &x_h,
                    batch,
                    &mut scratch,
                    passes(),
                ));
                std::hint::black_box(l[6].matmul(&x_ffn, batch, &mut scratch, passes()));
            }
            std::hint::black_box(head.matmul(&x_h, batch, &mut scratch, passes()));
        });
        let params = bytes / 20.0 * 32.0; // close enough: the head is Q8_0
        let gops = 2.0 * params * batch as f64 / secs / 1e9;
        println!(
            "forward pass products, batch {batch:>2}: {:>6.2} ms = {:>6.0} tokens/s of products alone | {:>5.1} GB/s = {:>3.0}% of the {same:.1} GB/s bound | {gops:>6.1} int8 GOP/s",
            secs * 1e3,
            batch as f64 / secs,
            bytes / secs / 1e9,
            100.0 * bytes / secs / 1e9 / same,
        );
    }
}
