//! How far one way of computing a model (int8 activations, a quantized KV
//! cache) moves its next-token distributions from another (f32 throughout):
//! both run over the same tokens, and at every position the candidate's
//! distribution is compared with the reference's — the KL divergence
//! `KL(reference ‖ candidate)`, whether their most likely tokens agree, and
//! each one's perplexity on the text itself. llama.cpp's `perplexity
//! --kl-divergence` reports the same figures.

use crate::batch::{LogitsWanted, SeqChunk};
use crate::error::{ModelError, Result};
use crate::layers::kv_cache::{BlockId, KvDtype, PagedKvCache};
use crate::model::CausalLm;

/// One side of a comparison: a model and the KV element type it runs with.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The network.
    pub model: &'a dyn CausalLm,
    /// What its KV cache stores.
    pub kv: KvDtype,
}

/// The figures of a comparison over a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// Positions compared (every token of every window but its first is a
    /// prediction target; the first token's logits predict the second).
    pub positions: usize,
    /// Mean KL divergence of the candidate's next-token distribution from
    /// the reference's, in nats.
    pub mean_kl: f64,
    /// The 99th percentile of the per-position KL divergence, in nats.
    pub p99_kl: f64,
    /// The largest per-position KL divergence, in nats.
    pub max_kl: f64,
    /// Fraction of positions where both pick the same most likely token.
    pub top1_agreement: f64,
    /// The reference's perplexity on the text.
    pub reference_perplexity: f64,
    /// The candidate's perplexity on the text.
    pub candidate_perplexity: f64,
}

/// Positions processed per forward pass (bounds the logits held at once:
/// `CHUNK × vocab` per side).
const CHUNK: usize = 128;

/// Positions per cache block.
const BLOCK: usize = 16;

/// Compares `candidate` with `reference` over `tokens`, cut into windows of
/// `window` tokens that each start from an empty cache (a window must fit
/// the model's context).
pub fn compare(
    reference: Side<'_>,
    candidate: Side<'_>,
    tokens: &[u32],
    window: usize,
) -> Result<Divergence> {
    let vocab = reference.model.config().vocab_size;
    if candidate.model.config().vocab_size != vocab {
        return Err(ModelError::InvalidBatch(
            "the two models have different vocabularies".into(),
        ));
    }
    if window < 2 || tokens.len() < 2 {
        return Err(ModelError::InvalidBatch(
            "a comparison needs windows and a text of at least 2 tokens".into(),
        ));
    }
    let mut kls = Vec::with_capacity(tokens.len());
    let (mut agree, mut nll_ref, mut nll_cand) = (0usize, 0f64, 0f64);
    for text in tokens.chunks(window).filter(|w| w.len() >= 2) {
        let mut runs = [
            Run::new(reference, text.len())?,
            Run::new(candidate, text.len())?,
        ];
        let mut start = 0;
        while start < text.len() {
            let chunk = &text[start..(start + CHUNK).min(text.len())];
            let [r, c] = &mut runs;
            let (lr, lc) = (r.forward(chunk, start)?, c.forward(chunk, start)?);
            for (i, (row_r, row_c)) in lr.chunks(vocab).zip(lc.chunks(vocab)).enumerate() {
                let Some(&next) = text.get(start + i + 1) else {
                    break;
                };
                let (pr, pc) = (log_softmax(row_r), log_softmax(row_c));
                kls.push(kl(&pr, &pc));
                agree += usize::from(argmax(&pr) == argmax(&pc));
                nll_ref -= pr[next as usize];
                nll_cand -= pc[next as usize];
            }
            start += chunk.len();
        }
    }
    let n = kls.len();
    let mean_kl = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    Ok(Divergence {
        positions: n,
        mean_kl,
        p99_kl: kls[((n - 1) as f64 * 0.99).round() as usize],
        max_kl: kls[n - 1],
        top1_agreement: agree as f64 / n as f64,
        reference_perplexity: (nll_ref / n as f64).exp(),
        candidate_perplexity: (nll_cand / n as f64).exp(),
    })
}

/// One side's sequence in its own cache.
struct Run<'a> {
    model: &'a dyn CausalLm,
    cache: PagedKvCache,
    table: Vec<BlockId>,
}

impl<'a> Run<'a> {
    fn new(side: Side<'a>, len: usize) -> Result<Self> {
        let blocks = len.div_ceil(BLOCK);
        let layout = side.model.kv_layout().with_dtype(side.kv);
        Ok(Self {
            model: side.model,
            cache: PagedKvCache::new(layout, BLOCK, blocks)?,
            table: (0..blocks as u32).map(BlockId).collect(),
        })
    }

    /// The logits of every position of `tokens`, placed at `start_pos`.
    fn forward(&mut self, tokens: &[u32], start_pos: usize) -> Result<Vec<f32>> {
        let chunk = SeqChunk {
            tokens,
            start_pos,
            block_table: &self.table,
            window_table: &[],
            logits: LogitsWanted::All,
        };
        Ok(self.model.forward(&[chunk], &mut self.cache)?.data)
    }
}

/// `log softmax(row)` in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    row.iter().map(|&x| x as f64 - log_sum).collect()
}

/// `KL(p ‖ q)` of two log-distributions.
fn kl(log_p: &[f64], log_q: &[f64]) -> f64 {
    let d: f64 = log_p
        .iter()
        .zip(log_q)
        .map(|(&lp, &lq)| lp.exp() * (lp - lq))
        .sum();
    d.max(0.0)
}

/// Index of the first maximum.
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_distributions_and_positive_otherwise() {
        let p = log_softmax(&[1.0, 2.0, 3.0]);
        let q = log_softmax(&[3.0, 2.0, 1.0]);
        assert!(kl(&p, &p).abs() < 1e-12);
        // Σ p (log p − log q) by hand: p = softmax(1,2,3).
        let by_hand: f64 = (0..3).map(|i| p[i].exp() * (p[i] - q[i])).sum();
        assert!((kl(&p, &q) - by_hand).abs() < 1e-12);
        assert!(kl(&p, &q) > 1.0);
        // A shift of every logit is the same distribution.
        let shifted = log_softmax(&[11.0, 12.0, 13.0]);
        assert!(kl(&p, &shifted).abs() < 1e-9);
        assert_eq!(argmax(&p), 2);
        assert_eq!(argmax(&q), 0);
    }
}
