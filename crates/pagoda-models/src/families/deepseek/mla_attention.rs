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
//! The batch's tokens go in slabs (a few hundred at most, bounded by the
//! scratch they need) through three parallel steps, each on buffers the
//! threads keep from call to call:
//!
//! 1. absorb: a unit per head computes every token's absorbed query, so
//!    `W_UK,h` is read once for the whole batch;
//! 2. attend: a unit per (sequence, group of heads) — as many heads as keep
//!    every thread busy, up to 16 queries — scores all its queries (the
//!    heads of the group, the tokens of a tile of four) against each cache
//!    row while the row is in L1, four queries and two rows per step with
//!    their partial sums in registers, then sums the rows weighted by the
//!    softmax the same way, sixteen latent columns of four queries in
//!    registers over a block of rows. One pass over a sequence's latent
//!    rows serves up to 16 heads, where it served one (V3 has 128);
//! 3. up-project: a unit per head applies `W_UV,h` to every token's sum.
//!
//! Every value is computed by the same operations in the same order
//! whatever the slab, the tile, the group, the batch or the thread (no
//! fused multiply-adds, sixteen-lane dot products folded in a fixed order,
//! sums in ascending position), so a sequence's output does not depend on
//! its batch-mates and every build gives the same bits.

pub use crate::families::deepseek::absorbed_kv_b::{AbsorbedKvB, MlaShape};
use crate::families::deepseek::mla_kernels::{
    absorb_fastest, attend_fastest, up_project_fastest, Piece, MAX_QUERIES, TILE,
};
use crate::layers::kv_cache::{BlockId, LatentLayerView};

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

/// Values of scratch one slab of tokens may take (absorbed queries, latent
/// sums, head outputs): 16 MB.
const SLAB_VALUES: usize = 1 << 22;
/// Fewest and most tokens in a slab.
const SLAB_TOKENS: (usize, usize) = (16, 256);

/// The calling thread's buffers for one slab, reused across calls (no
/// allocation per head or layer on the per-token path).
#[derive(Default)]
struct SlabScratch {
    /// `[heads][rows][kv_lora_rank + qk_rope]`: absorbed queries.
    absorbed: Vec<f32>,
    /// `[groups][rows][heads of the group][kv_lora_rank]`: each query's
    /// normalised, probability-weighted sum of latents.
    latent: Vec<f32>,
    /// `[heads][rows][v_head_dim]`: the heads' outputs.
    heads_out: Vec<f32>,
    /// Of each slab row: its piece and its token in the piece.
    rows: Vec<(usize, usize)>,
}

/// Computes latent attention for every sequence; returns `[tokens,
/// num_heads · v_head_dim]` in sequence order (the input of `o_proj`).
///
/// The batch's tokens go in slabs of at most a few hundred, each in three
/// parallel steps (see the module doc): absorb every query (a unit per
/// head, so each `W_UK,h` is read once for all tokens), attend (a unit per
/// sequence and group of heads, which score and sum each latent row
/// together), up-project (a unit per head, each `W_UV,h` read once).
pub fn latent_attention(
    kv: LatentLayerView<'_>,
    seqs: &[LatentQueries<'_>],
    kv_b: &AbsorbedKvB,
) -> Vec<f32> {
    let width = kv_b.kv_lora_rank + kv_b.qk_rope_head_dim;
    let per_token = kv_b.num_heads * (width + kv_b.kv_lora_rank + kv_b.v_head_dim);
    let slab = (SLAB_VALUES / per_token.max(1)).clamp(SLAB_TOKENS.0, SLAB_TOKENS.1);
    split_attention(kv, seqs, kv_b, slab, None)
}

/// [`latent_attention`] in slabs of `slab` tokens, `group` heads per unit
/// of the attention step (or [`group_size`]'s choice): neither changes a
/// bit of the result.
fn split_attention(
    kv: LatentLayerView<'_>,
    seqs: &[LatentQueries<'_>],
    kv_b: &AbsorbedKvB,
    slab: usize,
    group: Option<usize>,
) -> Vec<f32> {
    let (heads, qk) = (
        kv_b.num_heads,
        kv_b.qk_nope_head_dim + kv_b.qk_rope_head_dim,
    );
    let (q_row, out_row) = (heads * qk, heads * kv_b.v_head_dim);
    let total: usize = seqs.iter().map(|s| s.q.len() / q_row).sum();
    let mut out = vec![0.0f32; total * out_row];
    let slab = slab.max(1);
    thread_local! {
        static SCRATCH: std::cell::RefCell<SlabScratch> = Default::default();
    }
    let mut scratch = SCRATCH.take();
    let mut pieces = Vec::new();
    let (mut rows, mut done) = (0, 0);
    for seq in seqs {
        let len = seq.q.len() / q_row;
        let mut t = 0;
        while t < len {
            let n = (len - t).min(slab - rows);
            pieces.push(Piece {
                q: &seq.q[t * q_row..(t + n) * q_row],
                len: n,
                start_pos: seq.start_pos + t,
                block_table: seq.block_table,
                row: rows,
            });
            (rows, t) = (rows + n, t + n);
            if rows == slab {
                let dst = &mut out[done * out_row..(done + rows) * out_row];
                slab_attention(kv, &pieces, kv_b, group, &mut scratch, dst);
                (done, rows) = (done + rows, 0);
                pieces.clear();
            }
        }
    }
    if rows > 0 {
        let dst = &mut out[done * out_row..(done + rows) * out_row];
        slab_attention(kv, &pieces, kv_b, group, &mut scratch, dst);
    }
    SCRATCH.set(scratch);
    out
}

/// Heads per unit of the attention step: as many as share a row load well
/// ([`MAX_QUERIES`] queries with a tile's tokens), as few as give every
/// thread a unit.
fn group_size(heads: usize, pieces: &[Piece<'_>], threads: usize) -> usize {
    let tile = pieces.iter().map(|p| p.len).max().unwrap_or(1).min(TILE);
    let most = (MAX_QUERIES / tile).clamp(1, heads.max(1));
    (heads * pieces.len() / threads.max(1)).clamp(1, most)
}

/// Latent attention of the tokens of one slab (`out`: `[rows, num_heads ·
/// v_head_dim]`).
fn slab_attention(
    kv: LatentLayerView<'_>,
    pieces: &[Piece<'_>],
    kv_b: &AbsorbedKvB,
    group: Option<usize>,
    scratch: &mut SlabScratch,
    out: &mut [f32],
) {
    let team = crate::kernels::team::Team::global();
    let (heads, lora, vd) = (kv_b.num_heads, kv_b.kv_lora_rank, kv_b.v_head_dim);
    let width = lora + kv_b.qk_rope_head_dim;
    let SlabScratch {
        absorbed,
        latent,
        heads_out,
        rows: row_map,
    } = scratch;
    row_map.clear();
    for (p, piece) in pieces.iter().enumerate() {
        row_map.extend((0..piece.len).map(|t| (p, t)));
    }
    let rows = row_map.len();

    // Absorbed queries, a unit per head.
    absorbed.resize(heads * rows * width, 0.0);
    let mut parts: Vec<&mut [f32]> = absorbed.chunks_mut(rows * width).collect();
    team.run_parts(&mut parts, &|h, dst| {
        absorb_fastest(pieces, row_map, kv_b, h, dst);
    });
    drop(parts);

    // Attention, a unit per (group of heads, piece): unit `g · pieces + p`
    // owns `[piece rows][group heads][lora]` of group `g`'s block.
    let group = group
        .unwrap_or_else(|| group_size(heads, pieces, team.threads()))
        .clamp(1, heads.clamp(1, MAX_QUERIES));
    latent.resize(heads * rows * lora, 0.0);
    let mut parts: Vec<&mut [f32]> = Vec::with_capacity(heads.div_ceil(group) * pieces.len());
    let mut rest = latent.as_mut_slice();
    for h0 in (0..heads).step_by(group) {
        let size = group.min(heads - h0);
        for piece in pieces {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(piece.len * size * lora);
            parts.push(part);
            rest = tail;
        }
    }
    let absorbed = absorbed.as_slice();
    team.run_parts(&mut parts, &|u, dst| {
        let (h0, piece) = ((u / pieces.len()) * group, &pieces[u % pieces.len()]);
        let heads_of = h0..(h0 + group).min(heads);
        attend_fastest(kv, piece, absorbed, rows, kv_b, heads_of, dst);
    });
    drop(parts);

    // Up-projection, a unit per head, then into `out`'s rows.
    heads_out.resize(heads * rows * vd, 0.0);
    let mut parts: Vec<&mut [f32]> = heads_out.chunks_mut(rows * vd).collect();
    let latent = latent.as_slice();
    team.run_parts(&mut parts, &|h, dst| {
        up_project_fastest(latent, rows, group, kv_b, h, dst);
    });
    drop(parts);
    let out_row = heads * vd;
    for (h, head) in heads_out.chunks_exact(rows * vd).enumerate() {
        for (t, o) in head.chunks_exact(vd).enumerate() {
            out[t * out_row + h * vd..][..vd].copy_from_slice(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::kv_cache::{KvDtype, KvLayout, LatentKv, PagedKvCache};

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

    /// A latent row's width and a query head's width.
    fn widths(s: MlaShape) -> (usize, usize) {
        (
            s.kv_lora_rank + s.qk_rope_head_dim,
            s.qk_nope_head_dim + s.qk_rope_head_dim,
        )
    }

    /// `kv_b_proj` of shape `s` filled from `seed`, absorbed.
    fn absorbed_kv_b(s: MlaShape, seed: f32) -> AbsorbedKvB {
        let len = s.num_heads * (s.qk_nope_head_dim + s.v_head_dim) * s.kv_lora_rank;
        AbsorbedKvB::new(values(len, seed), s).expect("kv_b")
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
        for s in [shape(), odd_shape()] {
            let (width, qk) = widths(s);
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
            let mut cache =
                PagedKvCache::new(KvLayout::latent(1, latent_kv(s)), 4, 6).expect("cache");
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
    }

    /// A shape whose widths are not multiples of the dot products' lanes.
    fn odd_shape() -> MlaShape {
        MlaShape {
            num_heads: 5,
            qk_nope_head_dim: 12,
            qk_rope_head_dim: 6,
            v_head_dim: 7,
            kv_lora_rank: 20,
            softmax_scale: 0.25,
        }
    }

    #[test]
    fn slabs_and_head_groups_change_no_bit() {
        for s in [shape(), odd_shape()] {
            let (width, qk) = widths(s);
            let kv_b = absorbed_kv_b(s, 0.7);
            let mut cache =
                PagedKvCache::new(KvLayout::latent(1, latent_kv(s)), 4, 16).expect("cache");
            let tables = [
                vec![BlockId(3), BlockId(9), BlockId(0), BlockId(12), BlockId(5)],
                vec![BlockId(7), BlockId(1)],
                vec![BlockId(2), BlockId(15), BlockId(4)],
            ];
            let lens = [19usize, 6, 11];
            for (t, (table, &len)) in tables.iter().zip(&lens).enumerate() {
                cache
                    .write_latent(0, table, 0, &values(len * width, 10.0 + t as f32))
                    .expect("write");
            }
            let row = s.num_heads * qk;
            // A prefill continuation, a prompt, and a decode step.
            let qs: Vec<Vec<f32>> = (0..3)
                .map(|t| values(lens[t] * row, 20.0 + t as f32))
                .collect();
            let starts = [5usize, 0, 10];
            let view = cache.latent_layer(0).expect("view");
            let seqs: Vec<LatentQueries> = (0..3)
                .map(|t| LatentQueries {
                    q: &qs[t][starts[t] * row..],
                    start_pos: starts[t],
                    block_table: &tables[t],
                })
                .collect();
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let reference = bits(split_attention(view, &seqs, &kv_b, 1000, Some(1)));
            for slab in [1, 3, 7, 1000] {
                for group in [None, Some(2), Some(3), Some(s.num_heads)] {
                    let got = bits(split_attention(view, &seqs, &kv_b, slab, group));
                    assert_eq!(got, reference, "slab {slab}, group {group:?}");
                }
            }
            assert_eq!(bits(latent_attention(view, &seqs, &kv_b)), reference);
        }
    }

    #[test]
    fn an_f16_latent_pool_attends_as_an_f32_pool_holding_the_rounded_rows() {
        let s = shape();
        let (width, qk) = widths(s);
        let kv_b = absorbed_kv_b(s, 0.2);
        let layout = KvLayout::latent(1, latent_kv(s));
        let mut half = PagedKvCache::new(layout.with_dtype(KvDtype::F16), 4, 4).expect("cache");
        let mut exact = PagedKvCache::new(layout, 4, 4).expect("cache");
        let table = [BlockId(2), BlockId(0), BlockId(3)];
        let rows = values(11 * width, 1.5);
        let rounded: Vec<f32> = rows
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
        half.write_latent(0, &table, 0, &rows).expect("f16");
        exact.write_latent(0, &table, 0, &rounded).expect("f32");
        let q = values(11 * s.num_heads * qk, 2.5);
        let run = |cache: &PagedKvCache| {
            latent_attention(
                cache.latent_layer(0).expect("view"),
                &[LatentQueries {
                    q: &q,
                    start_pos: 0,
                    block_table: &table,
                }],
                &kv_b,
            )
        };
        assert_eq!(run(&half), run(&exact));
    }

    #[test]
    fn a_sequence_does_not_depend_on_its_tile_or_batch_mates() {
        let s = shape();
        let (width, qk) = widths(s);
        let kv_b = absorbed_kv_b(s, 0.1);
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
