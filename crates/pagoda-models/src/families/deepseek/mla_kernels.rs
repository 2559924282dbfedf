//! The kernels of [`super::mla_attention`]'s three steps, each a unit of
//! parallel work compiled for the widest vector unit
//! ([`crate::kernels::vector::fastest!`]):
//! [`absorb_fastest`] (one head's absorbed queries), [`attend_fastest`]
//! (one piece of a sequence and a group of heads over their cached
//! context) and [`up_project_fastest`] (one head's outputs). See that
//! module's doc for the layout and the arithmetic.

use crate::families::deepseek::absorbed_kv_b::AbsorbedKvB;
use crate::kernels::vector::{axpy, dots, softmax_numerators, LANES};
use crate::layers::kv_cache::{context_blocks, release_if_large, BlockId, LatentLayerView};

/// Query rows of a sequence that share each cache-row load.
pub(crate) const TILE: usize = 4;
/// Most (token, head) queries of one unit of work that go through each
/// cache row while it is in L1.
pub(crate) const MAX_QUERIES: usize = 16;

/// The part of one sequence's new tokens that falls into a slab.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'a> {
    /// Its queries, `[len, num_heads, qk_nope + qk_rope]`.
    pub(crate) q: &'a [f32],
    /// Its tokens.
    pub(crate) len: usize,
    /// Positions cached before its first token.
    pub(crate) start_pos: usize,
    /// The sequence's block table.
    pub(crate) block_table: &'a [BlockId],
    /// Its first token's row in the slab.
    pub(crate) row: usize,
}

crate::kernels::vector::fastest! {
    /// [`absorb`] for the widest vector unit (no fused multiply-adds: every
    /// build gives the same bits).
    pub(crate) fn absorb_fastest(
        pieces: &[Piece<'_>],
        row_map: &[(usize, usize)],
        kv_b: &AbsorbedKvB,
        head: usize,
        dst: &mut [f32],
    ) = absorb;
    avx512: "avx512f", avx2: "avx2"
}

crate::kernels::vector::fastest! {
    /// [`attend`] for the widest vector unit (no fused multiply-adds).
    pub(crate) fn attend_fastest(
        kv: LatentLayerView<'_>,
        piece: &Piece<'_>,
        absorbed: &[f32],
        rows: usize,
        kv_b: &AbsorbedKvB,
        heads: std::ops::Range<usize>,
        dst: &mut [f32],
    ) = attend;
    avx512: "avx512f", avx2: "avx2"
}

crate::kernels::vector::fastest! {
    /// [`up_project`] for the widest vector unit (no fused multiply-adds).
    pub(crate) fn up_project_fastest(
        latent: &[f32],
        rows: usize,
        group: usize,
        kv_b: &AbsorbedKvB,
        head: usize,
        dst: &mut [f32],
    ) = up_project;
    avx512: "avx512f", avx2: "avx2"
}

/// Tokens whose absorbed queries share each row of `W_UK,h`.
const ABSORB_TILE: usize = 8;

/// Head `head`'s absorbed query `[W_UK,hᵀ q_nope | q_rope]` of every slab
/// row into `dst` (`[rows, kv_lora_rank + qk_rope]`): `Σ_n q_nope[n] ·
/// W_UK,h[n]` in order of `n`, each row of `W_UK,h` loaded once per tile of
/// tokens.
#[inline(always)]
fn absorb(
    pieces: &[Piece<'_>],
    row_map: &[(usize, usize)],
    kv_b: &AbsorbedKvB,
    head: usize,
    dst: &mut [f32],
) {
    let (heads, nope, rope) = (kv_b.num_heads, kv_b.qk_nope_head_dim, kv_b.qk_rope_head_dim);
    let (lora, qk) = (kv_b.kv_lora_rank, nope + rope);
    let width = lora + rope;
    let w_uk = kv_b.w_uk(head);
    let query = |r: usize| {
        let (p, t) = row_map[r];
        &pieces[p].q[(t * heads + head) * qk..][..qk]
    };
    for (tile, out) in dst.chunks_mut(ABSORB_TILE * width).enumerate() {
        let r0 = tile * ABSORB_TILE;
        for (i, o) in out.chunks_exact_mut(width).enumerate() {
            let (lat, rot) = o.split_at_mut(lora);
            lat.fill(0.0);
            rot.copy_from_slice(&query(r0 + i)[nope..]);
        }
        for (n, w) in w_uk.chunks_exact(lora).enumerate() {
            for (i, o) in out.chunks_exact_mut(width).enumerate() {
                axpy(&mut o[..lora], query(r0 + i)[n], w);
            }
        }
    }
}

/// Queries scored or weighed together against each cache row.
const QUERY_BLOCK: usize = 4;

/// Scores of `K` queries (at `q_at` in `absorbed`) against the `slots` rows
/// of a block, `R` rows at a time: `scores[(k0 + k) · stride + first + s]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn score_rows<const K: usize, const R: usize>(
    absorbed: &[f32],
    q_at: [usize; K],
    block_rows: &[f32],
    width: usize,
    scale: f32,
    scores: &mut [f32],
    (stride, first, k0): (usize, usize, usize),
) {
    let slots = block_rows.len() / width;
    let whole = slots / R * R;
    let mut store = |s: usize, d: &[f32; K]| {
        for (k, &v) in d.iter().enumerate() {
            scores[(k0 + k) * stride + first + s] = v * scale;
        }
    };
    for s in (0..whole).step_by(R) {
        let at: [usize; R] = std::array::from_fn(|r| (s + r) * width);
        let d = dots::<K, R>(absorbed, &q_at, block_rows, &at, width);
        for (r, d) in d.iter().enumerate() {
            store(s + r, d);
        }
    }
    for s in whole..slots {
        let [d] = dots::<K, 1>(absorbed, &q_at, block_rows, &[s * width], width);
        store(s, &d);
    }
}

/// `acc_k += Σ_s p_k(s) · c_s` for `K` queries (`acc`: their `K` rows of
/// `lora` values) over the first `slots` rows `c_s` of a block (their
/// first `lora` values), `p_k(s) = scores[(k0 + k) · stride + first + s]`.
/// [`LANES`] columns of every query stay in registers over the rows; each
/// value gets the same additions in the same order (ascending `s`) as
/// [`axpy`] row by row would give it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weigh_rows<const K: usize>(
    acc: &mut [f32],
    lora: usize,
    block_rows: &[f32],
    width: usize,
    slots: usize,
    scores: &[f32],
    (stride, first, k0): (usize, usize, usize),
) {
    let p_at: [usize; K] = std::array::from_fn(|k| (k0 + k) * stride + first);
    let p: [&[f32]; K] = std::array::from_fn(|k| &scores[p_at[k]..][..slots]);
    let whole = lora / LANES * LANES;
    for c0 in (0..whole).step_by(LANES) {
        let mut a: [[f32; LANES]; K] = std::array::from_fn(|k| {
            acc[k * lora + c0..][..LANES]
                .try_into()
                .expect("a step of columns")
        });
        for s in 0..slots {
            let c: &[f32; LANES] = block_rows[s * width + c0..][..LANES]
                .try_into()
                .expect("a step of columns");
            for k in 0..K {
                let pk = p[k][s];
                for l in 0..LANES {
                    a[k][l] += pk * c[l];
                }
            }
        }
        for (k, a) in a.iter().enumerate() {
            acc[k * lora + c0..][..LANES].copy_from_slice(a);
        }
    }
    for col in whole..lora {
        for k in 0..K {
            for s in 0..slots {
                acc[k * lora + col] += p[k][s] * block_rows[s * width + col];
            }
        }
    }
}

/// Attention of `heads` of one piece's tokens over their causal contexts:
/// into `dst` (`[len][heads][kv_lora_rank]`) each query's
/// probability-weighted, normalised sum of latent rows. A tile's tokens
/// and the group's heads go through each cache row together (scores by
/// [`dots`], sums by [`weigh_rows`]); each query's values are computed by
/// the same operations in the same order whatever the tile, the group or
/// the batch.
#[inline(always)]
fn attend(
    kv: LatentLayerView<'_>,
    piece: &Piece<'_>,
    absorbed: &[f32],
    rows: usize,
    kv_b: &AbsorbedKvB,
    heads: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let lora = kv_b.kv_lora_rank;
    let width = lora + kv_b.qk_rope_head_dim;
    let bs = kv.block_size();
    let size = heads.len();
    let scale = kv_b.softmax_scale;
    thread_local! {
        /// This thread's scores, reused across calls.
        static SCORES: std::cell::RefCell<Vec<f32>> = Default::default();
        /// This thread's latent rows of an f16 or Q8_0 pool as f32: the
        /// whole context for a prompt, one block for a decode step.
        static WIDENED: std::cell::RefCell<[Vec<f32>; 2]> = Default::default();
    }
    assert!(
        piece.block_table.len() * bs >= piece.start_pos + piece.len,
        "the block table covers the context"
    );
    let mut widened = WIDENED.take();
    let [whole_context, one_block] = &mut widened;
    let blocks = (piece.start_pos + piece.len).div_ceil(bs);
    let row_blocks = context_blocks(
        &piece.block_table[..blocks],
        |b| kv.rows(b, bs),
        piece.len > TILE,
        whole_context,
    );
    let mut scores = SCORES.take();
    for t0 in (0..piece.len).step_by(TILE) {
        let tile = TILE.min(piece.len - t0);
        // Positions every query of the tile sees, and the tile's context.
        let (shared, context) = (piece.start_pos + t0 + 1, piece.start_pos + t0 + tile);
        let queries = tile * size;
        debug_assert!(
            queries <= MAX_QUERIES * TILE,
            "groups of at most MAX_QUERIES heads"
        );
        // Query `k = i · size + g`: token `t0 + i`, head `heads.start + g`.
        let q_at = |k: usize| {
            let (i, g) = (k / size, k % size);
            ((heads.start + g) * rows + piece.row + t0 + i) * width
        };
        let own_context = |k: usize| piece.start_pos + t0 + k / size + 1;
        scores.resize(queries * context, 0.0);
        // Scores of every query against the tile's whole context (a query
        // reads only its own causal part).
        for (b, block) in row_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let block_rows = &block.get(one_block)[..bs.min(context - first) * width];
            let mut k0 = 0;
            while k0 < queries {
                let at = (context, first, k0);
                let sc = scores.as_mut_slice();
                match queries - k0 {
                    1 => score_rows::<1, 4>(absorbed, [q_at(k0)], block_rows, width, scale, sc, at),
                    2 => score_rows::<2, 2>(
                        absorbed,
                        [q_at(k0), q_at(k0 + 1)],
                        block_rows,
                        width,
                        scale,
                        sc,
                        at,
                    ),
                    3 => score_rows::<3, 2>(
                        absorbed,
                        [q_at(k0), q_at(k0 + 1), q_at(k0 + 2)],
                        block_rows,
                        width,
                        scale,
                        sc,
                        at,
                    ),
                    _ => score_rows::<4, 2>(
                        absorbed,
                        [q_at(k0), q_at(k0 + 1), q_at(k0 + 2), q_at(k0 + 3)],
                        block_rows,
                        width,
                        scale,
                        sc,
                        at,
                    ),
                }
                k0 += QUERY_BLOCK;
            }
        }
        // Each query's softmax over its own context.
        let mut sums = [0.0f32; MAX_QUERIES * TILE];
        for (k, sum) in sums.iter_mut().enumerate().take(queries) {
            *sum = softmax_numerators(&mut scores[k * context..k * context + own_context(k)]);
        }
        // Probability-weighted latents: the positions every query sees in
        // blocks of queries, the tile's own positions query by query;
        // `dst`'s rows of the tile are its queries in order.
        let acc = &mut dst[t0 * size * lora..(t0 + tile) * size * lora];
        acc.fill(0.0);
        for (b, block) in row_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let block_rows = &block.get(one_block)[..bs.min(context - first) * width];
            let all = shared.saturating_sub(first).min(bs);
            for (k0, a) in acc.chunks_mut(QUERY_BLOCK * lora).enumerate() {
                let at = (context, first, k0 * QUERY_BLOCK);
                match a.len() / lora {
                    1 => weigh_rows::<1>(a, lora, block_rows, width, all, &scores, at),
                    2 => weigh_rows::<2>(a, lora, block_rows, width, all, &scores, at),
                    3 => weigh_rows::<3>(a, lora, block_rows, width, all, &scores, at),
                    _ => weigh_rows::<4>(a, lora, block_rows, width, all, &scores, at),
                }
            }
            for (s, c) in block_rows.chunks_exact(width).enumerate().skip(all) {
                let pos = first + s;
                for (k, a) in acc.chunks_exact_mut(lora).enumerate() {
                    if pos < own_context(k) {
                        axpy(a, scores[k * context + pos], &c[..lora]);
                    }
                }
            }
        }
        for (a, sum) in acc.chunks_exact_mut(lora).zip(sums) {
            let inv = 1.0 / sum;
            a.iter_mut().for_each(|x| *x *= inv);
        }
    }
    drop(row_blocks);
    release_if_large(&mut widened);
    SCORES.set(scores);
    WIDENED.set(widened);
}

/// Head `head`'s output `W_UV,h · latent` of every slab row into `dst`
/// (`[rows, v_head_dim]`); `latent` is laid out as the attention step of
/// [`super::mla_attention`] leaves it (groups of `group` heads). A few
/// tokens and rows of `W_UV,h` go together through [`dots`].
#[inline(always)]
fn up_project(
    latent: &[f32],
    rows: usize,
    group: usize,
    kv_b: &AbsorbedKvB,
    head: usize,
    dst: &mut [f32],
) {
    let (lora, vd) = (kv_b.kv_lora_rank, kv_b.v_head_dim);
    let (g, hg) = (head / group, head % group);
    let size = group.min(kv_b.num_heads - g * group);
    // Four tokens and two rows of `W_UV,h` at a time.
    let w_uv = kv_b.w_uv(head);
    let lat_at = |t: usize| (g * group * rows + t * size + hg) * lora;
    let mut t0 = 0;
    while t0 < rows {
        let n = (rows - t0).min(4);
        for j0 in (0..vd).step_by(2) {
            let w_at: [usize; 2] = [j0 * lora, (j0 + 1).min(vd - 1) * lora];
            let mut put = |d: &[f32]| {
                for (r, row) in d.chunks_exact(n).enumerate().take(vd - j0) {
                    for (i, &v) in row.iter().enumerate() {
                        dst[(t0 + i) * vd + j0 + r] = v;
                    }
                }
            };
            match n {
                1 => put(dots::<1, 2>(latent, &[lat_at(t0)], w_uv, &w_at, lora).as_flattened()),
                2 => put(
                    dots::<2, 2>(latent, &[lat_at(t0), lat_at(t0 + 1)], w_uv, &w_at, lora)
                        .as_flattened(),
                ),
                3 => put(dots::<3, 2>(
                    latent,
                    &[lat_at(t0), lat_at(t0 + 1), lat_at(t0 + 2)],
                    w_uv,
                    &w_at,
                    lora,
                )
                .as_flattened()),
                _ => put(dots::<4, 2>(
                    latent,
                    &[lat_at(t0), lat_at(t0 + 1), lat_at(t0 + 2), lat_at(t0 + 3)],
                    w_uv,
                    &w_at,
                    lora,
                )
                .as_flattened()),
            }
        }
        t0 += n;
    }
}
