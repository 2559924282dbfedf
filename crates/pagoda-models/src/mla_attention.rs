//! Multi-head latent attention (MLA) over the paged latent pool, in the
//! absorbed-weight form.
//!
//! Paper: DeepSeek-V2 <https://arxiv.org/abs/2405.04434> §2.1 (and its
//! appendix on absorbing the up-projections), used unchanged by DeepSeek-V3
//! <https://arxiv.org/abs/2412.19437>. Reference implementation: Hugging
//! Face transformers `DeepseekV2Attention` / `DeepseekV3Attention` (5.x),
//! which decompress the latent into per-head keys and values; this module
//! computes the same attention without ever forming them.
//!
//! The pool holds per token one row `[c | k_rope]`: the latent `c`
//! (`kv_lora_rank` values, after `kv_a_layernorm`) and the rotated shared
//! rope key (`qk_rope_head_dim`). `kv_b_proj` maps `c` to each head's
//! unrotated key `W_UK,h · c` and value `W_UV,h · c`, so for head `h`
//!
//! ```text
//! score(t, s) = scale · (q_nope,h · W_UK,h c_s  +  q_rope,h · k_rope,s)
//!             = scale · ([W_UK,hᵀ q_nope,h | q_rope,h] · [c_s | k_rope,s])
//! out_h(t)    = Σ_s p(t, s) · W_UV,h c_s  =  W_UV,h · (Σ_s p(t, s) · c_s)
//! ```
//!
//! The query is absorbed through `W_UK,h` into latent space once per token
//! and head, scored against whole cache rows, the softmax-weighted rows are
//! summed in latent space, and `W_UV,h` is applied once to the sum.
//!
//! Each (sequence, head) pair is one unit of parallel work; its query tokens
//! go in tiles of four that share every row load. Every value is computed by
//! the same operations in the same order whatever the tile, the batch or
//! the thread (no fused multiply-adds, eight-lane dot products folded in a
//! fixed order), so a sequence's output does not depend on its batch-mates
//! and every build gives the same bits.

use std::sync::Mutex;

use crate::error::{ModelError, Result};
use crate::kv_cache::{BlockId, LatentLayerView};

/// One sequence's share of a latent attention call.
#[derive(Debug, Clone, Copy)]
pub struct LatentQueries<'a> {
    /// Queries of the new tokens, `[len, num_heads, qk_nope_head_dim +
    /// qk_rope_head_dim]`, the rope part already rotated.
    pub q: &'a [f32],
    /// Number of positions cached before these tokens.
    pub start_pos: usize,
    /// The sequence's block table (covering `start_pos + len` positions).
    pub block_table: &'a [BlockId],
}

/// `kv_b_proj` split per head into the key up-projection `W_UK,h`
/// (`[qk_nope_head_dim, kv_lora_rank]`) and the value up-projection
/// `W_UV,h` (`[v_head_dim, kv_lora_rank]`), with the attention's shape.
#[derive(Debug, Clone)]
pub struct AbsorbedKvB {
    /// `kv_b_proj.weight` as stored: `[num_heads · (qk_nope + v), kv_lora_rank]`.
    weight: Vec<f32>,
    num_heads: usize,
    qk_nope_head_dim: usize,
    qk_rope_head_dim: usize,
    v_head_dim: usize,
    kv_lora_rank: usize,
    softmax_scale: f32,
}

/// The shape of latent attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaShape {
    /// Attention heads.
    pub num_heads: usize,
    /// Unrotated query/key dimensions per head.
    pub qk_nope_head_dim: usize,
    /// Rotated query/key dimensions per head (and of the shared rope key).
    pub qk_rope_head_dim: usize,
    /// Value dimensions per head.
    pub v_head_dim: usize,
    /// Width of the latent.
    pub kv_lora_rank: usize,
    /// Factor on every score before the softmax.
    pub softmax_scale: f32,
}

impl AbsorbedKvB {
    /// Splits `kv_b_proj.weight` (row-major, `[num_heads · (qk_nope_head_dim
    /// + v_head_dim), kv_lora_rank]`) for attention of `shape`.
    pub fn new(weight: Vec<f32>, shape: MlaShape) -> Result<Self> {
        let rows = shape.num_heads * (shape.qk_nope_head_dim + shape.v_head_dim);
        if weight.len() != rows * shape.kv_lora_rank {
            return Err(ModelError::InvalidBatch(format!(
                "kv_b_proj of {} values, expected {rows} x {}",
                weight.len(),
                shape.kv_lora_rank
            )));
        }
        Ok(Self {
            weight,
            num_heads: shape.num_heads,
            qk_nope_head_dim: shape.qk_nope_head_dim,
            qk_rope_head_dim: shape.qk_rope_head_dim,
            v_head_dim: shape.v_head_dim,
            kv_lora_rank: shape.kv_lora_rank,
            softmax_scale: shape.softmax_scale,
        })
    }

    /// The attention's shape.
    pub fn shape(&self) -> MlaShape {
        MlaShape {
            num_heads: self.num_heads,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            kv_lora_rank: self.kv_lora_rank,
            softmax_scale: self.softmax_scale,
        }
    }

    fn head_rows(&self, head: usize) -> &[f32] {
        let n = (self.qk_nope_head_dim + self.v_head_dim) * self.kv_lora_rank;
        &self.weight[head * n..(head + 1) * n]
    }

    /// `W_UK,h`: `[qk_nope_head_dim, kv_lora_rank]`.
    pub fn w_uk(&self, head: usize) -> &[f32] {
        &self.head_rows(head)[..self.qk_nope_head_dim * self.kv_lora_rank]
    }

    /// `W_UV,h`: `[v_head_dim, kv_lora_rank]`.
    pub fn w_uv(&self, head: usize) -> &[f32] {
        &self.head_rows(head)[self.qk_nope_head_dim * self.kv_lora_rank..]
    }
}

/// Computes latent attention for every sequence; returns `[tokens,
/// num_heads · v_head_dim]` in sequence order (the input of `o_proj`).
pub fn latent_attention(
    kv: LatentLayerView<'_>,
    seqs: &[LatentQueries<'_>],
    kv_b: &AbsorbedKvB,
) -> Vec<f32> {
    let heads = kv_b.num_heads;
    let vd = kv_b.v_head_dim;
    let work: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let per_head: Vec<Mutex<Vec<f32>>> = work.iter().map(|_| Mutex::default()).collect();
    crate::team::Team::global().run(work.len(), &|i| {
        let (s, h) = work[i];
        let out = head_latent_attention_fastest(kv, &seqs[s], kv_b, h);
        *per_head[i].lock().unwrap_or_else(|e| e.into_inner()) = out;
    });
    let per_head: Vec<Vec<f32>> = per_head
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();

    let qk = kv_b.qk_nope_head_dim + kv_b.qk_rope_head_dim;
    let row = heads * vd;
    let total: usize = seqs.iter().map(|s| s.q.len() / (heads * qk)).sum();
    let mut out = vec![0.0f32; total * row];
    let mut token = 0;
    for (s, seq) in seqs.iter().enumerate() {
        let len = seq.q.len() / (heads * qk);
        for h in 0..heads {
            let head_out = &per_head[s * heads + h];
            for t in 0..len {
                let dst = (token + t) * row + h * vd;
                out[dst..dst + vd].copy_from_slice(&head_out[t * vd..(t + 1) * vd]);
            }
        }
        token += len;
    }
    out
}

/// [`head_latent_attention`] compiled for the widest vector unit this CPU
/// has. It uses no fused multiply-adds, so every build gives the same bits.
fn head_latent_attention_fastest(
    kv: LatentLayerView<'_>,
    seq: &LatentQueries<'_>,
    kv_b: &AbsorbedKvB,
    head: usize,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        /// `head_latent_attention` compiled with `$features` enabled.
        macro_rules! build_for {
            ($name:ident, $features:literal) => {
                #[target_feature(enable = $features)]
                fn $name(
                    kv: LatentLayerView<'_>,
                    seq: &LatentQueries<'_>,
                    kv_b: &AbsorbedKvB,
                    head: usize,
                ) -> Vec<f32> {
                    head_latent_attention(kv, seq, kv_b, head)
                }
            };
        }
        build_for!(avx512, "avx512f");
        build_for!(avx2, "avx2");
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512(kv, seq, kv_b, head) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(kv, seq, kv_b, head) };
        }
    }
    head_latent_attention(kv, seq, kv_b, head)
}

/// Lanes of the dot products' partial sums.
const LANES: usize = 8;
/// Query rows that share each cache-row load.
const TILE: usize = 4;

/// `Σ a_i · b_i` in eight lanes folded in a fixed order (then the tail).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ca, ta) = a.as_chunks::<LANES>();
    let (cb, tb) = b.as_chunks::<LANES>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..LANES {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

/// `acc += a · x`, element by element.
#[inline(always)]
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in acc.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Latent attention of one head of one sequence over its cached context;
/// returns `[len, v_head_dim]`.
#[inline(always)]
fn head_latent_attention(
    kv: LatentLayerView<'_>,
    seq: &LatentQueries<'_>,
    kv_b: &AbsorbedKvB,
    head: usize,
) -> Vec<f32> {
    let (heads, nope, rope) = (kv_b.num_heads, kv_b.qk_nope_head_dim, kv_b.qk_rope_head_dim);
    let (lora, vd) = (kv_b.kv_lora_rank, kv_b.v_head_dim);
    let (width, qk) = (lora + rope, nope + rope);
    let bs = kv.block_size();
    let len = seq.q.len() / (heads * qk);
    let w_uk = kv_b.w_uk(head);
    let w_uv = kv_b.w_uv(head);

    // Absorbed queries `[W_UKᵀ q_nope | q_rope]`, one row of `width` per token.
    let mut absorbed = vec![0.0f32; len * width];
    for (t, dst) in absorbed.chunks_exact_mut(width).enumerate() {
        let q = &seq.q[(t * heads + head) * qk..(t * heads + head + 1) * qk];
        let (q_nope, q_rope) = q.split_at(nope);
        let (lat, rot) = dst.split_at_mut(lora);
        for (n, &qn) in q_nope.iter().enumerate() {
            axpy(lat, qn, &w_uk[n * lora..(n + 1) * lora]);
        }
        rot.copy_from_slice(q_rope);
    }

    let mut out = vec![0.0f32; len * vd];
    let longest = seq.start_pos + len;
    let mut scores = vec![0.0f32; TILE * longest];
    let mut latent_out = vec![0.0f32; TILE * lora];
    for t0 in (0..len).step_by(TILE) {
        let rows = TILE.min(len - t0);
        let context = seq.start_pos + t0 + rows;
        // Scores of every row of the tile against its causal context.
        for (b, &block) in seq.block_table.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let slots = bs.min(context - first);
            for (s, c) in kv.rows(block, slots).chunks_exact(width).enumerate() {
                let pos = first + s;
                for i in 0..rows {
                    if pos <= seq.start_pos + t0 + i {
                        let q = &absorbed[(t0 + i) * width..(t0 + i + 1) * width];
                        scores[i * longest + pos] = dot(q, c) * kv_b.softmax_scale;
                    }
                }
            }
        }
        // Each row's softmax over its own context.
        let mut sums = [0.0f32; TILE];
        for (i, sum) in sums.iter_mut().enumerate().take(rows) {
            let ctx = seq.start_pos + t0 + i + 1;
            let row = &mut scores[i * longest..i * longest + ctx];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                *sum += *s;
            }
        }
        // Probability-weighted latents, each cache row loaded once for the tile.
        latent_out.fill(0.0);
        for (b, &block) in seq.block_table.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let slots = bs.min(context - first);
            for (s, c) in kv.rows(block, slots).chunks_exact(width).enumerate() {
                let pos = first + s;
                for i in 0..rows {
                    if pos <= seq.start_pos + t0 + i {
                        let p = scores[i * longest + pos];
                        axpy(&mut latent_out[i * lora..(i + 1) * lora], p, &c[..lora]);
                    }
                }
            }
        }
        // Normalise, then up-project through W_UV.
        for i in 0..rows {
            let inv = 1.0 / sums[i];
            let lat = &mut latent_out[i * lora..(i + 1) * lora];
            lat.iter_mut().for_each(|x| *x *= inv);
            let o = &mut out[(t0 + i) * vd..(t0 + i + 1) * vd];
            for (j, o) in o.iter_mut().enumerate() {
                *o = dot(&w_uv[j * lora..(j + 1) * lora], lat);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::{KvLayout, LatentKv, PagedKvCache};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
    }

    /// The decompressed form, as transformers computes it: per-head keys
    /// `[W_UK c | k_rope]` and values `W_UV c`, then plain causal attention
    /// (in f64, as the reference for both forms).
    fn decompressed(q: &[f32], latent_rows: &[f32], kv_b: &AbsorbedKvB, start: usize) -> Vec<f32> {
        let MlaShape {
            num_heads: heads,
            qk_nope_head_dim: nope,
            qk_rope_head_dim: rope,
            v_head_dim: vd,
            kv_lora_rank: lora,
            softmax_scale,
        } = kv_b.shape();
        let (width, qk) = (lora + rope, nope + rope);
        let len = q.len() / (heads * qk);
        let positions = latent_rows.len() / width;
        let mut out = vec![0.0f32; len * heads * vd];
        for h in 0..heads {
            let (w_uk, w_uv) = (kv_b.w_uk(h), kv_b.w_uv(h));
            let keys: Vec<Vec<f64>> = (0..positions)
                .map(|s| {
                    let c = &latent_rows[s * width..(s + 1) * width];
                    let mut k: Vec<f64> = (0..nope)
                        .map(|n| {
                            (0..lora)
                                .map(|l| w_uk[n * lora + l] as f64 * c[l] as f64)
                                .sum()
                        })
                        .collect();
                    k.extend(c[lora..].iter().map(|&x| x as f64));
                    k
                })
                .collect();
            let vals: Vec<Vec<f64>> = (0..positions)
                .map(|s| {
                    let c = &latent_rows[s * width..(s + 1) * width];
                    (0..vd)
                        .map(|j| {
                            (0..lora)
                                .map(|l| w_uv[j * lora + l] as f64 * c[l] as f64)
                                .sum()
                        })
                        .collect()
                })
                .collect();
            for t in 0..len {
                let qh = &q[(t * heads + h) * qk..(t * heads + h + 1) * qk];
                let ctx = start + t + 1;
                let scores: Vec<f64> = (0..ctx)
                    .map(|s| {
                        qh.iter()
                            .zip(&keys[s])
                            .map(|(&a, b)| a as f64 * b)
                            .sum::<f64>()
                            * softmax_scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for j in 0..vd {
                    let v: f64 = (0..ctx).map(|s| e[s] / sum * vals[s][j]).sum();
                    out[(t * heads + h) * vd + j] = v as f32;
                }
            }
        }
        out
    }

    fn shape() -> MlaShape {
        MlaShape {
            num_heads: 3,
            qk_nope_head_dim: 16,
            qk_rope_head_dim: 8,
            v_head_dim: 12,
            kv_lora_rank: 32,
            softmax_scale: 0.3,
        }
    }

    fn latent_kv(s: MlaShape) -> LatentKv {
        LatentKv {
            kv_lora_rank: s.kv_lora_rank,
            qk_rope_head_dim: s.qk_rope_head_dim,
            num_heads: s.num_heads,
            qk_nope_head_dim: s.qk_nope_head_dim,
            v_head_dim: s.v_head_dim,
        }
    }

    #[test]
    fn absorbed_attention_matches_decompressed_attention() {
        let s = shape();
        let (width, qk) = (
            s.kv_lora_rank + s.qk_rope_head_dim,
            s.qk_nope_head_dim + s.qk_rope_head_dim,
        );
        let kv_b = AbsorbedKvB::new(
            values(
                s.num_heads * (s.qk_nope_head_dim + s.v_head_dim) * s.kv_lora_rank,
                0.5,
            )
            .iter()
            .map(|x| x * 0.3)
            .collect(),
            s,
        )
        .expect("kv_b");
        let len = 13;
        let mut cache = PagedKvCache::new(KvLayout::latent(1, latent_kv(s)), 4, 6).expect("cache");
        let table = [BlockId(4), BlockId(1), BlockId(5), BlockId(0)];
        let rows = values(len * width, 1.0);
        cache.write_latent(0, &table, 0, &rows).expect("write");
        let q = values(len * s.num_heads * qk, 2.0);
        let expected = decompressed(&q, &rows, &kv_b, 0);
        // The whole prompt, a continuation, and a single decode step.
        let row = s.num_heads * qk;
        let out_row = s.num_heads * s.v_head_dim;
        for (start, n) in [(0, len), (6, 7), (12, 1)] {
            let got = latent_attention(
                cache.latent_layer(0).expect("view"),
                &[LatentQueries {
                    q: &q[start * row..(start + n) * row],
                    start_pos: start,
                    block_table: &table,
                }],
                &kv_b,
            );
            for (a, b) in got
                .iter()
                .zip(&expected[start * out_row..(start + n) * out_row])
            {
                assert!((a - b).abs() < 1e-5, "start {start}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_sequence_does_not_depend_on_its_tile_or_batch_mates() {
        let s = shape();
        let (width, qk) = (
            s.kv_lora_rank + s.qk_rope_head_dim,
            s.qk_nope_head_dim + s.qk_rope_head_dim,
        );
        let kv_b = AbsorbedKvB::new(
            values(
                s.num_heads * (s.qk_nope_head_dim + s.v_head_dim) * s.kv_lora_rank,
                0.1,
            ),
            s,
        )
        .expect("kv_b");
        let mut cache = PagedKvCache::new(KvLayout::latent(1, latent_kv(s)), 4, 8).expect("cache");
        let (ta, tb) = (
            [BlockId(0), BlockId(1), BlockId(2)],
            [BlockId(7), BlockId(3)],
        );
        cache
            .write_latent(0, &ta, 0, &values(10 * width, 3.0))
            .expect("a");
        cache
            .write_latent(0, &tb, 0, &values(6 * width, 4.0))
            .expect("b");
        let row = s.num_heads * qk;
        let qa = values(10 * row, 5.0);
        let qb = values(6 * row, 6.0);
        let view = cache.latent_layer(0).expect("view");
        let whole = latent_attention(
            view,
            &[LatentQueries {
                q: &qa,
                start_pos: 0,
                block_table: &ta,
            }],
            &kv_b,
        );
        // Token 9 alone (a decode step), next to another sequence.
        let together = latent_attention(
            view,
            &[
                LatentQueries {
                    q: &qb,
                    start_pos: 0,
                    block_table: &tb,
                },
                LatentQueries {
                    q: &qa[9 * row..],
                    start_pos: 9,
                    block_table: &ta,
                },
            ],
            &kv_b,
        );
        let out_row = s.num_heads * s.v_head_dim;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&together[6 * out_row..]), bits(&whole[9 * out_row..]));
    }
}
