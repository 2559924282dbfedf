//! Causal scaled-dot-product attention on the CPU that reads keys and values
//! straight from the paged KV pool through each sequence's block table, with
//! grouped-query attention (several query heads share one kv head).
//!
//! A unit of parallel work is a range of one sequence's query rows for one
//! kv head: the (token, head) pairs of the heads sharing it, token-major, so
//! a kv head's keys and values are read (and widened from f16 or Q8_0) once
//! for all its query heads. Every query row is computed the same way
//! whatever else is in its tile, unit or batch, so a sequence's output does
//! not depend on its batch-mates.
//!
//! A query may see a sliding window of the latest keys only (Gemma 3's and
//! Mistral's local layers): key `k` is seen by the query at position `p`
//! when `p − window < k ≤ p`, as transformers' sliding causal mask and
//! llama.cpp's `LLAMA_SWA_TYPE_STANDARD`; key blocks wholly before every
//! window of a tile are skipped.

use std::sync::Mutex;

use crate::kernels::each_row;
use crate::kernels::vector::softmax_numerators;
use crate::layers::kv_cache::{context_blocks, release_if_large, BlockId, LayerView};

/// One sequence's share of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct SeqQueries<'a> {
    /// Queries of the new tokens, `[len, num_heads * head_dim]`, already rotated.
    pub q: &'a [f32],
    /// Number of positions cached before these tokens.
    pub start_pos: usize,
    /// The sequence's block table (covering `start_pos + len` positions).
    pub block_table: &'a [BlockId],
}

/// Query rows of one unit of parallel work at most (a long prompt's rows
/// of a kv head are split, so that every thread has work).
const UNIT_ROWS: usize = 256;

/// One unit of work: rows `rows` of sequence `seq`'s kv head `kv_head`.
#[derive(Debug, Clone)]
struct Unit {
    seq: usize,
    kv_head: usize,
    rows: std::ops::Range<usize>,
}

/// How scores are scaled and how far back a query sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpan {
    /// The factor on `q · k` (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// The keys a query sees, counting its own position; `None`: all
    /// earlier ones.
    pub window: Option<usize>,
}

impl AttentionSpan {
    /// Every earlier key, scores scaled by `1 / sqrt(head_dim)`.
    pub fn causal(head_dim: usize) -> Self {
        Self {
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        }
    }
}

/// Computes attention for every sequence and returns the outputs laid out
/// like the queries, concatenated in sequence order.
pub fn paged_attention(
    kv: LayerView<'_>,
    seqs: &[SeqQueries<'_>],
    num_heads: usize,
    num_kv_heads: usize,
) -> Vec<f32> {
    paged_attention_in(
        kv,
        seqs,
        num_heads,
        num_kv_heads,
        AttentionSpan::causal(kv.head_dim()),
    )
}

/// [`paged_attention`] with its scale and window given.
pub fn paged_attention_in(
    kv: LayerView<'_>,
    seqs: &[SeqQueries<'_>],
    num_heads: usize,
    num_kv_heads: usize,
    span: AttentionSpan,
) -> Vec<f32> {
    let hd = kv.head_dim();
    let group = num_heads / num_kv_heads;
    let AttentionSpan { scale, window } = span;
    let row = num_heads * hd;
    let mut work = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        let n = seq.q.len() / row * group;
        for kv_head in 0..num_kv_heads {
            for first in (0..n).step_by(UNIT_ROWS) {
                work.push(Unit {
                    seq: s,
                    kv_head,
                    rows: first..n.min(first + UNIT_ROWS),
                });
            }
        }
    }
    let per_unit: Vec<Mutex<Vec<f32>>> = work.iter().map(|_| Mutex::default()).collect();
    crate::kernels::team::Team::global().run(work.len(), &|i| {
        let u = &work[i];
        let shape = GroupShape {
            kv_head: u.kv_head,
            group,
            num_heads,
            scale,
            window,
        };
        let out = group_attention_fastest(kv, &seqs[u.seq], shape, u.rows.clone());
        *per_unit[i].lock().unwrap_or_else(|e| e.into_inner()) = out;
    });

    let mut offsets = Vec::with_capacity(seqs.len());
    let mut total = 0;
    for seq in seqs {
        offsets.push(total);
        total += seq.q.len();
    }
    let mut out = vec![0.0f32; total];
    for (u, unit_out) in work.iter().zip(per_unit) {
        let unit_out = unit_out.into_inner().unwrap_or_else(|e| e.into_inner());
        for (r, src) in u.rows.clone().zip(unit_out.chunks_exact(hd)) {
            let (t, head) = (r / group, u.kv_head * group + r % group);
            let dst = offsets[u.seq] + t * row + head * hd;
            out[dst..dst + hd].copy_from_slice(src);
        }
    }
    out
}

/// Which query heads a unit serves: the `group` heads of kv head `kv_head`.
#[derive(Debug, Clone, Copy)]
struct GroupShape {
    kv_head: usize,
    group: usize,
    num_heads: usize,
    scale: f32,
    window: Option<usize>,
}

crate::kernels::vector::fastest! {
    /// [`group_attention`] built for the widest vector unit this CPU has.
    /// The arithmetic is the same in every build (fused multiply-adds in a
    /// fixed order per output value), so every build gives the same bits.
    fn group_attention_fastest(
        kv: LayerView<'_>,
        seq: &SeqQueries<'_>,
        shape: GroupShape,
        rows: std::ops::Range<usize>,
    ) -> Vec<f32> = group_attention;
    avx512: "avx512f,fma", avx2: "avx2,fma"
}

/// Query rows that share each key and value load.
const TILE: usize = 8;
/// The block size the key loop is specialised for (the default).
const FAST_BLOCK: usize = 16;
/// Output values of a row kept in registers at once while values are
/// weighed.
const CHUNK: usize = 16;

/// Attention of query rows `rows` of one sequence for one kv head (row `r`
/// is token `r / group`'s query head `kv_head · group + r % group`) over
/// its cached context; returns `[rows, head_dim]`. Rows go in tiles of up
/// to [`TILE`] that share every key and value load. Each score is
/// `Σ_d q_d · k_d` by fused multiply-adds in order of `d` (keys are stored
/// transposed, so one vector op serves a block's slots), the softmax is
/// [`softmax_numerators`], each output `Σ_s p_s · v_s` in order of `s`: a
/// row's result does not depend on its tile, unit or batch.
#[inline(always)]
fn group_attention(
    kv: LayerView<'_>,
    seq: &SeqQueries<'_>,
    shape: GroupShape,
    rows: std::ops::Range<usize>,
) -> Vec<f32> {
    let GroupShape {
        kv_head,
        group,
        num_heads,
        scale,
        window,
    } = shape;
    let hd = kv.head_dim();
    let bs = kv.block_size();
    let mut out = vec![0.0f32; rows.len() * hd];
    if rows.is_empty() {
        return out;
    }
    // Row `r`'s causal context, and the longest of the unit's rows.
    let context_of = |r: usize| seq.start_pos + r / group + 1;
    let longest = context_of(rows.end - 1);
    thread_local! {
        /// This thread's score rows, reused across calls (no allocation per
        /// head and layer on the per-token path).
        static SCRATCH: std::cell::RefCell<[Vec<f32>; 5]> = Default::default();
    }
    let mut scratch = SCRATCH.take();
    // `widened_*`: a pool's keys and values as f32 — for several tiles the
    // whole context at once, read by every tile; for one tile (a decode
    // step) one block at a time, kept in L1 (see `context_blocks`).
    let [scores, block_scores, widened_k, widened_v, block_scratch] = &mut scratch;
    scores.resize(TILE * longest, 0.0);
    block_scores.resize(TILE * bs, 0.0);
    assert!(
        seq.block_table.len() * bs >= longest,
        "the block table covers the context"
    );
    let table = &seq.block_table[..longest.div_ceil(bs)];
    let whole = rows.len() > TILE;
    let key_blocks = context_blocks(table, |b| kv.keys_t(b, kv_head), whole, widened_k);
    let value_blocks = context_blocks(table, |b| kv.values(b, kv_head, bs), whole, widened_v);
    for (tile_at, r0) in rows.clone().step_by(TILE).enumerate() {
        let n = TILE.min(rows.end - r0);
        // Rows past `n` repeat the last one (computed, never stored).
        let ctx: [usize; TILE] = std::array::from_fn(|i| context_of(r0 + i.min(n - 1)));
        let context = ctx[n - 1];
        // The first key each row sees; rows go in position order, so the
        // first row's is the tile's lowest.
        let low: [usize; TILE] =
            std::array::from_fn(|i| window.map_or(0, |w| ctx[i].saturating_sub(w)));
        let seen_from = low[0] / bs * bs;
        let q: [&[f32]; TILE] = std::array::from_fn(|i| {
            let r = r0 + i.min(n - 1);
            let head = kv_head * group + r % group;
            &seq.q[((r / group) * num_heads + head) * hd..][..hd]
        });
        // Scores of every row against its own context.
        for (b, keys) in key_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            if first < seen_from {
                continue;
            }
            let keys = keys.get(block_scratch);
            if bs == FAST_BLOCK {
                let mut store = |acc: &[[f32; FAST_BLOCK]]| {
                    for (i, acc) in acc.iter().enumerate() {
                        let slots = bs.min(ctx[i].saturating_sub(first));
                        for (s, a) in acc.iter().enumerate().take(slots) {
                            scores[i * longest + first + s] = a * scale;
                        }
                    }
                };
                match n {
                    1 => store(&block_scores_fixed::<1>(&q, keys, hd)),
                    2 => store(&block_scores_fixed::<2>(&q, keys, hd)),
                    3 => store(&block_scores_fixed::<3>(&q, keys, hd)),
                    4 => store(&block_scores_fixed::<4>(&q, keys, hd)),
                    5 => store(&block_scores_fixed::<5>(&q, keys, hd)),
                    6 => store(&block_scores_fixed::<6>(&q, keys, hd)),
                    7 => store(&block_scores_fixed::<7>(&q, keys, hd)),
                    _ => store(&block_scores_fixed::<TILE>(&q, keys, hd)),
                }
            } else {
                block_scores.fill(0.0);
                for d in 0..hd {
                    let k = &keys[d * bs..(d + 1) * bs];
                    for (i, qi) in q.iter().enumerate().take(n) {
                        let qd = qi[d];
                        for (a, &kv) in block_scores[i * bs..(i + 1) * bs].iter_mut().zip(k) {
                            *a = qd.mul_add(kv, *a);
                        }
                    }
                }
                for (i, &c) in ctx.iter().enumerate().take(n) {
                    for s in 0..bs.min(c.saturating_sub(first)) {
                        scores[i * longest + first + s] = block_scores[i * bs + s] * scale;
                    }
                }
            }
        }
        // Each row's softmax over its own (causal, windowed) context; the
        // keys before its window weigh nothing.
        let mut sums = [0.0f32; TILE];
        for (i, sum) in sums.iter_mut().enumerate().take(n) {
            let row = &mut scores[i * longest..i * longest + ctx[i]];
            *sum = softmax_numerators(&mut row[low[i]..]);
            row[seen_from.min(low[i])..low[i]].fill(0.0);
        }
        // Weighted values, each value row loaded once for the tile.
        let tile_out = &mut out[tile_at * TILE * hd..(tile_at * TILE + n) * hd];
        for (b, block_values) in value_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            if first < seen_from {
                continue;
            }
            let values = &block_values.get(block_scratch)[..bs.min(context - first) * hd];
            let limit: [usize; TILE] =
                std::array::from_fn(|i| bs.min(ctx[i].saturating_sub(first)));
            // Row `i`'s probabilities of the block's slots (`limit[i]` of them).
            let p: [&[f32]; TILE] =
                std::array::from_fn(|i| &scores[i * longest + first.min(ctx[i])..][..limit[i]]);
            if hd.is_multiple_of(CHUNK) {
                match n {
                    1 => weigh_block::<1>(tile_out, values, &p, hd),
                    2 => weigh_block::<2>(tile_out, values, &p, hd),
                    3 => weigh_block::<3>(tile_out, values, &p, hd),
                    4 => weigh_block::<4>(tile_out, values, &p, hd),
                    5 => weigh_block::<5>(tile_out, values, &p, hd),
                    6 => weigh_block::<6>(tile_out, values, &p, hd),
                    7 => weigh_block::<7>(tile_out, values, &p, hd),
                    _ => weigh_block::<TILE>(tile_out, values, &p, hd),
                }
            } else {
                for (i, o) in tile_out.chunks_exact_mut(hd).enumerate() {
                    for (value, &p) in values.chunks_exact(hd).zip(p[i]) {
                        for (o, &v) in o.iter_mut().zip(value) {
                            *o = p.mul_add(v, *o);
                        }
                    }
                }
            }
        }
        for (o, sum) in tile_out.chunks_exact_mut(hd).zip(sums) {
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
    drop((key_blocks, value_blocks));
    release_if_large(&mut scratch);
    SCRATCH.set(scratch);
    out
}

/// Scores (unscaled) of the first `R` query rows against one block of
/// [`FAST_BLOCK`] transposed keys, in registers.
#[inline(always)]
fn block_scores_fixed<const R: usize>(
    q: &[&[f32]; TILE],
    keys: &[f32],
    hd: usize,
) -> [[f32; FAST_BLOCK]; R] {
    let mut acc = [[0.0f32; FAST_BLOCK]; R];
    let (rows, _) = keys[..hd * FAST_BLOCK].as_chunks::<FAST_BLOCK>();
    assert!(q.iter().all(|q| q.len() >= rows.len()));
    for (d, k) in rows.iter().enumerate() {
        // Written out per row, with no bounds check: the rows' 16 sums each
        // stay one vector register.
        each_row!(R, i => {
            // SAFETY: `d < rows.len() ≤ q[i].len()` (asserted above).
            let qd = unsafe { *q[i].get_unchecked(d) };
            for (a, &kv) in acc[i].iter_mut().zip(k) {
                *a = qd.mul_add(kv, *a);
            }
        });
    }
    acc
}

/// `out_i += Σ_s p_i[s] · values[s]` for the first `R` rows of a tile, in
/// order of `s` (row `i` has `p_i.len()` slots): [`CHUNK`] output values of
/// every row stay in registers while the block's slots go by, each value
/// chunk loaded once for the rows.
#[inline(always)]
fn weigh_block<const R: usize>(out: &mut [f32], values: &[f32], p: &[&[f32]; TILE], hd: usize) {
    let common = p[..R].iter().map(|p| p.len()).min().unwrap_or(0);
    // Chunk `j` of a row: `&[f32; CHUNK]`, so that every operation on it
    // is one vector instruction.
    let chunk = |row: &[f32], j: usize| -> [f32; CHUNK] { row.as_chunks::<CHUNK>().0[j] };
    for j in 0..hd / CHUNK {
        let mut acc: [[f32; CHUNK]; R] = std::array::from_fn(|i| chunk(&out[i * hd..], j));
        for (s, v) in values.chunks_exact(hd).take(common).enumerate() {
            let v = chunk(v, j);
            // Written out per row, with no bounds check: each row's chunk
            // stays one vector register.
            each_row!(R, i => {
                // SAFETY: `s < common ≤ p[i].len()`.
                let p = unsafe { *p[i].get_unchecked(s) };
                for (a, &v) in acc[i].iter_mut().zip(&v) {
                    *a = p.mul_add(v, *a);
                }
            });
        }
        for (acc, p) in acc.iter_mut().zip(p) {
            for (v, &p) in values.chunks_exact(hd).zip(*p).skip(common) {
                for (a, &v) in acc.iter_mut().zip(&chunk(v, j)) {
                    *a = p.mul_add(v, *a);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            out[i * hd + j * CHUNK..i * hd + (j + 1) * CHUNK].copy_from_slice(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::vector::dot;
    use crate::layers::kv_cache::{KvDtype, KvLayout, PagedKvCache};

    /// Plain attention over contiguous K/V, the reference for the paged kernel.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        heads: usize,
        kv_heads: usize,
        hd: usize,
    ) -> Vec<f32> {
        windowed_reference(q, k, v, (heads, kv_heads, hd), usize::MAX)
    }

    /// [`reference`] where the query at `t` sees keys `t − window < s ≤ t`.
    fn windowed_reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (heads, kv_heads, hd): (usize, usize, usize),
        window: usize,
    ) -> Vec<f32> {
        let len = q.len() / (heads * hd);
        let mut out = vec![0.0; q.len()];
        for t in 0..len {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qv = &q[(t * heads + h) * hd..][..hd];
                let first = (t + 1).saturating_sub(window);
                let scores: Vec<f32> = (first..=t)
                    .map(|s| dot(qv, &k[(s * kv_heads + kh) * hd..][..hd]) / (hd as f32).sqrt())
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (s, p) in (first..=t).zip(&e) {
                    for d in 0..hd {
                        out[(t * heads + h) * hd + d] += p / sum * v[(s * kv_heads + kh) * hd + d];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_sliding_window_sees_only_the_latest_keys_and_rows_stay_invariant() {
        let (heads, kv_heads, hd, len) = (4, 2, 16, 45usize);
        for (bs, window) in [(FAST_BLOCK, 7), (FAST_BLOCK, 16), (FAST_BLOCK, 20), (4, 5)] {
            let layout = KvLayout::per_head(1, kv_heads, hd);
            let blocks = len.div_ceil(bs);
            let mut cache = PagedKvCache::new(layout, bs, blocks + 1).expect("cache");
            let table: Vec<BlockId> = (0..blocks as u32).rev().map(BlockId).collect();
            let q = values(len * heads * hd, 0.4);
            let k = values(len * kv_heads * hd, 1.3);
            let v = values(len * kv_heads * hd, 2.2);
            let expected = windowed_reference(&q, &k, &v, (heads, kv_heads, hd), window);
            cache.write(0, &table, 0, &k, &v);
            let span = AttentionSpan {
                scale: 1.0 / (hd as f32).sqrt(),
                window: Some(window),
            };
            let row = heads * hd;
            let run = |start: usize, rows: usize| {
                paged_attention_in(
                    cache.layer(0),
                    &[SeqQueries {
                        q: &q[start * row..(start + rows) * row],
                        start_pos: start,
                        block_table: &table,
                    }],
                    heads,
                    kv_heads,
                    span,
                )
            };
            let whole = run(0, len);
            for (a, b) in whole.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "bs {bs} window {window}: {a} vs {b}");
            }
            // One token at a time gives the same bits as the whole prompt.
            for t in [0, window - 1, window, 33, len - 1] {
                assert_eq!(
                    run(t, 1),
                    whole[t * row..(t + 1) * row].to_vec(),
                    "bs {bs} window {window}: token {t} alone"
                );
            }
        }
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
    }

    #[test]
    fn paged_matches_contiguous_for_prefill_and_chunked_continuation() {
        let (heads, kv_heads, hd, len) = (4, 2, 8, 11);
        let layout = KvLayout::per_head(1, kv_heads, hd);
        let mut cache = PagedKvCache::new(layout, 4, 8).expect("cache");
        // Blocks deliberately out of order.
        let table = [BlockId(5), BlockId(0), BlockId(7)];
        let q = values(len * heads * hd, 0.0);
        let k = values(len * kv_heads * hd, 1.0);
        let v = values(len * kv_heads * hd, 2.0);
        let expected = reference(&q, &k, &v, heads, kv_heads, hd);

        // Whole prompt at once.
        cache.write(0, &table, 0, &k, &v);
        let got = paged_attention(
            cache.layer(0),
            &[SeqQueries {
                q: &q,
                start_pos: 0,
                block_table: &table,
            }],
            heads,
            kv_heads,
        );
        for (a, b) in got.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }

        // The last 5 tokens as a continuation over the cached first 6.
        let split = 6;
        let row = heads * hd;
        let got_tail = paged_attention(
            cache.layer(0),
            &[SeqQueries {
                q: &q[split * row..],
                start_pos: split,
                block_table: &table,
            }],
            heads,
            kv_heads,
        );
        for (a, b) in got_tail.iter().zip(&expected[split * row..]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn the_sixteen_slot_path_matches_the_reference_in_every_tile_shape() {
        // Head dims off and on the value pass's chunk; one kv head for
        // three or eight query heads (296 rows: two units), two for four.
        for (heads, kv_heads, hd) in [(3, 1, 8), (8, 1, 32), (4, 2, 16)] {
            let len = 37;
            let layout = KvLayout::per_head(1, kv_heads, hd);
            let mut cache = PagedKvCache::new(layout, FAST_BLOCK, 4).expect("cache");
            let table = [BlockId(2), BlockId(0), BlockId(3)];
            let q = values(len * heads * hd, 0.3);
            let k = values(len * kv_heads * hd, 1.7);
            let v = values(len * kv_heads * hd, 2.9);
            let expected = reference(&q, &k, &v, heads, kv_heads, hd);
            cache.write(0, &table, 0, &k, &v);
            let row = heads * hd;
            // Starts inside blocks; from one query row to many.
            for (start, rows) in [(0, len), (21, 5), (17, 3), (30, 2), (36, 1), (15, 4)] {
                let got = paged_attention(
                    cache.layer(0),
                    &[SeqQueries {
                        q: &q[start * row..(start + rows) * row],
                        start_pos: start,
                        block_table: &table,
                    }],
                    heads,
                    kv_heads,
                );
                for (a, b) in got.iter().zip(&expected[start * row..(start + rows) * row]) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{heads}/{kv_heads} heads of {hd}, start {start}, {rows} rows: {a} vs {b}"
                    );
                }
                // A row's result does not depend on the tile it was computed in.
                let last = paged_attention(
                    cache.layer(0),
                    &[SeqQueries {
                        q: &q[(start + rows - 1) * row..(start + rows) * row],
                        start_pos: start + rows - 1,
                        block_table: &table,
                    }],
                    heads,
                    kv_heads,
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&last), bits(&got[(rows - 1) * row..]), "start {start}");
            }
        }
    }

    #[test]
    fn an_f16_pool_attends_as_an_f32_pool_holding_the_rounded_values() {
        let (heads, kv_heads, hd, len) = (4, 2, 8, 23);
        let k = values(len * kv_heads * hd, 1.3);
        let v = values(len * kv_heads * hd, 2.1);
        let q = values(len * heads * hd, 0.7);
        let round = |x: &[f32]| -> Vec<f32> {
            x.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        };
        let table: Vec<BlockId> = (0..6).rev().map(BlockId).collect();
        let layout = KvLayout::per_head(1, kv_heads, hd);
        let mut half = PagedKvCache::new(layout.with_dtype(KvDtype::F16), 4, 6).expect("cache");
        let mut exact = PagedKvCache::new(layout, 4, 6).expect("cache");
        half.write(0, &table, 0, &k, &v);
        exact.write(0, &table, 0, &round(&k), &round(&v));
        // A prompt in two chunks (tiles re-read every block, widened
        // once), then a decode step (blocks widened one at a time).
        for (start, end) in [(0, 9), (9, len - 1), (len - 1, len)] {
            let seq = |cache: &PagedKvCache| {
                paged_attention(
                    cache.layer(0),
                    &[SeqQueries {
                        q: &q[start * heads * hd..end * heads * hd],
                        start_pos: start,
                        block_table: &table,
                    }],
                    heads,
                    kv_heads,
                )
            };
            assert_eq!(seq(&half), seq(&exact), "positions {start}..{end}");
        }
        assert_eq!(half.size_in_bytes() * 2, exact.size_in_bytes());
    }

    #[test]
    fn a_q8_0_pool_attends_as_an_f32_pool_holding_its_values() {
        let (heads, kv_heads, hd, len) = (4, 2, 8, 19);
        let k = values(len * kv_heads * hd, 0.4);
        let v = values(len * kv_heads * hd, 2.6);
        let q = values(len * heads * hd, 1.9);
        let table: Vec<BlockId> = (0..5).map(BlockId).collect();
        let layout = KvLayout::per_head(1, kv_heads, hd);
        let mut q8 = PagedKvCache::new(layout.with_dtype(KvDtype::Q8_0), 4, 5).expect("cache");
        q8.write(0, &table, 0, &k, &v);
        // The same values, as the Q8_0 pool holds them, in an f32 pool.
        let mut exact = PagedKvCache::new(layout, 4, 5).expect("cache");
        let view = q8.layer(0);
        let (mut k8, mut v8) = (vec![0.0; k.len()], vec![0.0; v.len()]);
        for pos in 0..len {
            for h in 0..kv_heads {
                let (block, slot) = (table[pos / 4], pos % 4);
                let keys = view.keys_t(block, h).to_vec();
                let vals = view.values(block, h, 4).to_vec();
                for d in 0..hd {
                    k8[(pos * kv_heads + h) * hd + d] = keys[d * 4 + slot];
                    v8[(pos * kv_heads + h) * hd + d] = vals[slot * hd + d];
                }
            }
        }
        exact.write(0, &table, 0, &k8, &v8);
        let run = |cache: &PagedKvCache| {
            paged_attention(
                cache.layer(0),
                &[SeqQueries {
                    q: &q,
                    start_pos: 0,
                    block_table: &table,
                }],
                heads,
                kv_heads,
            )
        };
        assert_eq!(run(&q8), run(&exact));
    }

    #[test]
    fn a_sequence_does_not_depend_on_its_batch_mates() {
        let (heads, kv_heads, hd) = (2, 1, 4);
        let layout = KvLayout::per_head(1, kv_heads, hd);
        let mut cache = PagedKvCache::new(layout, 2, 8).expect("cache");
        let (ta, tb) = (
            [BlockId(0), BlockId(1)],
            [BlockId(2), BlockId(3), BlockId(4)],
        );
        cache.write(0, &ta, 0, &values(3 * hd, 3.0), &values(3 * hd, 4.0));
        cache.write(0, &tb, 0, &values(5 * hd, 5.0), &values(5 * hd, 6.0));
        let qa = values(heads * hd, 7.0);
        let qb = values(heads * hd, 8.0);
        let alone = paged_attention(
            cache.layer(0),
            &[SeqQueries {
                q: &qa,
                start_pos: 2,
                block_table: &ta,
            }],
            heads,
            kv_heads,
        );
        let together = paged_attention(
            cache.layer(0),
            &[
                SeqQueries {
                    q: &qb,
                    start_pos: 4,
                    block_table: &tb,
                },
                SeqQueries {
                    q: &qa,
                    start_pos: 2,
                    block_table: &ta,
                },
            ],
            heads,
            kv_heads,
        );
        assert_eq!(alone, together[heads * hd..].to_vec());
    }
}
