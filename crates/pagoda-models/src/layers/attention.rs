//! Causal scaled-dot-product attention on the CPU that reads keys and values
//! straight from the paged KV pool through each sequence's block table, with
//! grouped-query attention (several query heads share one kv head).
//!
//! Each (sequence, query head) pair is one unit of parallel work; every query
//! row is computed the same way whatever else is in the batch, so a
//! sequence's output does not depend on its batch-mates.

use std::sync::Mutex;

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

/// Computes attention for every sequence and returns the outputs laid out
/// like the queries, concatenated in sequence order.
pub fn paged_attention(
    kv: LayerView<'_>,
    seqs: &[SeqQueries<'_>],
    num_heads: usize,
    num_kv_heads: usize,
) -> Vec<f32> {
    let hd = kv.head_dim();
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let work: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..num_heads).map(move |h| (s, h)))
        .collect();
    let per_head: Vec<Mutex<Vec<f32>>> = work.iter().map(|_| Mutex::default()).collect();
    crate::kernels::team::Team::global().run(work.len(), &|i| {
        let (s, h) = work[i];
        let out = head_attention_fastest(kv, &seqs[s], h, h / group, num_heads, scale);
        *per_head[i].lock().unwrap_or_else(|e| e.into_inner()) = out;
    });
    let per_head: Vec<Vec<f32>> = per_head
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();

    let row = num_heads * hd;
    let total: usize = seqs.iter().map(|s| s.q.len()).sum();
    let mut out = vec![0.0f32; total];
    let mut seq_offset = 0;
    for (s, seq) in seqs.iter().enumerate() {
        let len = seq.q.len() / row;
        for h in 0..num_heads {
            let head_out = &per_head[s * num_heads + h];
            for t in 0..len {
                let dst = seq_offset + t * row + h * hd;
                out[dst..dst + hd].copy_from_slice(&head_out[t * hd..(t + 1) * hd]);
            }
        }
        seq_offset += len * row;
    }
    out
}

crate::kernels::vector::fastest! {
    /// [`head_attention`] built for the widest vector unit this CPU has. The
    /// arithmetic is fused multiply-adds in a fixed order per output value, so
    /// every build gives the same bits.
    fn head_attention_fastest(
        kv: LayerView<'_>,
        seq: &SeqQueries<'_>,
        head: usize,
        kv_head: usize,
        num_heads: usize,
        scale: f32,
    ) -> Vec<f32> = head_attention;
    avx512: "avx512f,fma", avx2: "avx2,fma"
}

/// Query rows that share each key and value load.
const TILE: usize = 4;
/// The block size the key loop is specialised for (the default).
const FAST_BLOCK: usize = 16;

/// Attention of one query head of one sequence over its cached context;
/// returns `[len, head_dim]`. Query rows go in tiles of up to [`TILE`]
/// consecutive tokens that share every key and value load; each score is
/// `Σ_d q_d · k_d` by fused multiply-adds in order of `d` (keys are stored
/// transposed, so one vector op serves a block's slots), each output
/// `Σ_s p_s · v_s` in order of `s`: a row's result does not depend on its
/// tile or batch.
#[inline(always)]
fn head_attention(
    kv: LayerView<'_>,
    seq: &SeqQueries<'_>,
    head: usize,
    kv_head: usize,
    num_heads: usize,
    scale: f32,
) -> Vec<f32> {
    let hd = kv.head_dim();
    let bs = kv.block_size();
    let len = seq.q.len() / (num_heads * hd);
    let mut out = vec![0.0f32; len * hd];
    let longest = seq.start_pos + len;
    thread_local! {
        /// This thread's score rows, reused across calls (no allocation per
        /// head and layer on the per-token path).
        static SCRATCH: std::cell::RefCell<[Vec<f32>; 5]> = Default::default();
    }
    let mut scratch = SCRATCH.take();
    // `widened_*`: a pool's keys and values as f32 — for a prompt (several
    // tiles) the whole context at once, read by every tile; for a decode
    // step one block at a time, kept in L1 (see `context_blocks`).
    let [scores, block_scores, widened_k, widened_v, block_scratch] = &mut scratch;
    scores.resize(TILE * longest, 0.0);
    block_scores.resize(TILE * bs, 0.0);
    assert!(
        seq.block_table.len() * bs >= longest,
        "the block table covers the context"
    );
    let table = &seq.block_table[..longest.div_ceil(bs)];
    let whole = len > TILE;
    let key_blocks = context_blocks(table, |b| kv.keys_t(b, kv_head), whole, widened_k);
    let value_blocks = context_blocks(table, |b| kv.values(b, kv_head, bs), whole, widened_v);
    for t0 in (0..len).step_by(TILE) {
        let rows = TILE.min(len - t0);
        let context = seq.start_pos + t0 + rows;
        let q: [&[f32]; TILE] = std::array::from_fn(|i| {
            let t = t0 + i.min(rows - 1);
            &seq.q[(t * num_heads + head) * hd..(t * num_heads + head + 1) * hd]
        });
        // Scores of every row against the tile's whole context.
        for (b, keys) in key_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let keys = keys.get(block_scratch);
            let slots = bs.min(context - first);
            if bs == FAST_BLOCK {
                let mut store = |acc: &[[f32; FAST_BLOCK]]| {
                    for (i, acc) in acc.iter().enumerate() {
                        for (s, a) in acc.iter().enumerate().take(slots) {
                            scores[i * longest + first + s] = a * scale;
                        }
                    }
                };
                match rows {
                    1 => store(&block_scores_fixed::<1>(&q, keys, hd)),
                    2 => store(&block_scores_fixed::<2>(&q, keys, hd)),
                    3 => store(&block_scores_fixed::<3>(&q, keys, hd)),
                    _ => store(&block_scores_fixed::<TILE>(&q, keys, hd)),
                }
            } else {
                block_scores.fill(0.0);
                for d in 0..hd {
                    let k = &keys[d * bs..(d + 1) * bs];
                    for (i, qi) in q.iter().enumerate().take(rows) {
                        let qd = qi[d];
                        for (a, &kv) in block_scores[i * bs..(i + 1) * bs].iter_mut().zip(k) {
                            *a = qd.mul_add(kv, *a);
                        }
                    }
                }
                for i in 0..rows {
                    for s in 0..slots {
                        scores[i * longest + first + s] = block_scores[i * bs + s] * scale;
                    }
                }
            }
        }
        // Each row's softmax over its own (causal) context.
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
        // Weighted values, each value row loaded once for the tile.
        let tile_out = &mut out[t0 * hd..(t0 + rows) * hd];
        for (b, block_values) in value_blocks.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let slots = bs.min(context - first);
            let values = &block_values.get(block_scratch)[..slots * hd];
            for (s, value) in values.chunks_exact(hd).enumerate() {
                let pos = first + s;
                for (i, o) in tile_out.chunks_exact_mut(hd).enumerate() {
                    if pos <= seq.start_pos + t0 + i {
                        let p = scores[i * longest + pos];
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
    for (d, k) in rows.iter().enumerate() {
        for (acc, qi) in acc.iter_mut().zip(q) {
            let qd = qi[d];
            for (a, &kv) in acc.iter_mut().zip(k) {
                *a = qd.mul_add(kv, *a);
            }
        }
    }
    acc
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
        let len = q.len() / (heads * hd);
        let mut out = vec![0.0; q.len()];
        for t in 0..len {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qv = &q[(t * heads + h) * hd..][..hd];
                let scores: Vec<f32> = (0..=t)
                    .map(|s| dot(qv, &k[(s * kv_heads + kh) * hd..][..hd]) / (hd as f32).sqrt())
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (s, p) in e.iter().enumerate() {
                    for d in 0..hd {
                        out[(t * heads + h) * hd + d] += p / sum * v[(s * kv_heads + kh) * hd + d];
                    }
                }
            }
        }
        out
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
        let (heads, kv_heads, hd, len) = (3, 1, 8, 37);
        let layout = KvLayout::per_head(1, kv_heads, hd);
        let mut cache = PagedKvCache::new(layout, FAST_BLOCK, 4).expect("cache");
        let table = [BlockId(2), BlockId(0), BlockId(3)];
        let q = values(len * heads * hd, 0.3);
        let k = values(len * kv_heads * hd, 1.7);
        let v = values(len * kv_heads * hd, 2.9);
        let expected = reference(&q, &k, &v, heads, kv_heads, hd);
        cache.write(0, &table, 0, &k, &v);
        let row = heads * hd;
        // Starts inside blocks; 1, 2, 3, 4 and 5 query rows (every tile size).
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
                    "start {start}, {rows} rows: {a} vs {b}"
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
