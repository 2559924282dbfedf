//! Causal scaled-dot-product attention on the CPU that reads keys and values
//! straight from the paged KV pool through each sequence's block table, with
//! grouped-query attention (several query heads share one kv head).
//!
//! Each (sequence, query head) pair is one unit of parallel work; every query
//! row is computed the same way whatever else is in the batch, so a
//! sequence's output does not depend on its batch-mates.

use std::sync::Mutex;

use crate::kv_cache::{BlockId, LayerView};

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
    crate::team::Team::global().run(work.len(), &|i| {
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

/// [`head_attention`] built for the widest vector unit this CPU has. The
/// arithmetic is written in fixed lanes without fused multiply-adds, so
/// every build gives the same bits.
fn head_attention_fastest(
    kv: LayerView<'_>,
    seq: &SeqQueries<'_>,
    head: usize,
    kv_head: usize,
    num_heads: usize,
    scale: f32,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(
            kv: LayerView<'_>,
            seq: &SeqQueries<'_>,
            head: usize,
            kv_head: usize,
            num_heads: usize,
            scale: f32,
        ) -> Vec<f32> {
            head_attention(kv, seq, head, kv_head, num_heads, scale)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(
            kv: LayerView<'_>,
            seq: &SeqQueries<'_>,
            head: usize,
            kv_head: usize,
            num_heads: usize,
            scale: f32,
        ) -> Vec<f32> {
            head_attention(kv, seq, head, kv_head, num_heads, scale)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512(kv, seq, head, kv_head, num_heads, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(kv, seq, head, kv_head, num_heads, scale) };
        }
    }
    head_attention(kv, seq, head, kv_head, num_heads, scale)
}

/// Attention of one query head of one sequence over its cached context;
/// returns `[len, head_dim]`.
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
    let mut scores = Vec::with_capacity(seq.start_pos + len);
    for t in 0..len {
        let q = &seq.q[(t * num_heads + head) * hd..(t * num_heads + head + 1) * hd];
        let context = seq.start_pos + t + 1;
        scores.clear();
        for (b, &block) in seq.block_table.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let slots = bs.min(context - first);
            let (keys, _) = kv.block(block, kv_head, slots);
            for key in keys.chunks_exact(hd) {
                scores.push(dot(q, key) * scale);
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let o = &mut out[t * hd..(t + 1) * hd];
        for (b, &block) in seq.block_table.iter().enumerate() {
            let first = b * bs;
            if first >= context {
                break;
            }
            let slots = bs.min(context - first);
            let (_, values) = kv.block(block, kv_head, slots);
            for (value, &p) in values.chunks_exact(hd).zip(&scores[first..first + slots]) {
                for (o, v) in o.iter_mut().zip(value) {
                    *o += p * v;
                }
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
    out
}

/// Lanes of the dot product's partial sums (one AVX-512 register).
const LANES: usize = 16;

/// `a · b` in [`LANES`] partial sums folded pairwise, then the tail.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..LANES {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for k in 0..width {
            lanes[k] += lanes[k + width];
        }
    }
    lanes[0] + at.iter().zip(bt).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::{KvLayout, PagedKvCache};

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
        let layout = KvLayout {
            num_layers: 1,
            kv_heads,
            head_dim: hd,
        };
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
    fn a_sequence_does_not_depend_on_its_batch_mates() {
        let (heads, kv_heads, hd) = (2, 1, 4);
        let layout = KvLayout {
            num_layers: 1,
            kv_heads,
            head_dim: hd,
        };
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
