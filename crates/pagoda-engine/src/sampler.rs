//! Choosing the next token of one sequence from its row of logits.
//!
//! Order of processing (as vLLM does it): logit bias, suppression of stop
//! tokens before `min_tokens`, repetition / presence / frequency penalties,
//! then log-probabilities are taken (of this adjusted distribution), then
//! temperature, top-k, top-p and min-p restrict the distribution that is
//! sampled from the sequence's own seeded generator — so the same seed gives
//! the same tokens whatever else runs in the batch.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::token_tally::TokenTally;

/// How one sequence picks its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy; otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// Hugging Face's repetition penalty over prompt and output tokens (1: off).
    pub repetition_penalty: f32,
    /// Subtracted once from every token already generated (0: off).
    pub presence_penalty: f32,
    /// Subtracted per occurrence of every token already generated (0: off).
    pub frequency_penalty: f32,
    /// Added to the logits of the given tokens.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the sequence's random generator; `None` draws one.
    pub seed: Option<u64>,
    /// Return the chosen token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding with nothing else applied.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }

    /// Whether this is greedy decoding: a temperature below
    /// [`GREEDY_TEMPERATURE`] is (dividing by it would overflow), as in vLLM.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE || self.top_k == 1
    }
}

/// The chosen token, with its log-probability when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The token id.
    pub token: u32,
    /// Its log-probability, and the most likely alternatives (`logprobs` of them).
    pub logprobs: Option<TokenLogprobs>,
}

/// Temperatures below this decode greedily.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// The floor of a reported log-probability (as vLLM's): a token the
/// processed distribution rules out (masked by a grammar, suppressed) gets
/// this rather than `-inf`, which JSON cannot carry.
pub const MIN_LOGPROB: f32 = -9999.0;

/// Log-probabilities at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token's log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the sampler needs to know of the sequence so far.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Prompt tokens.
    pub prompt: &'a [u32],
    /// Tokens generated so far.
    pub output: &'a [u32],
    /// Tokens that may not be chosen yet (stop tokens before `min_tokens`).
    pub suppressed: &'a [u32],
}

/// A sequence's sampler: its parameters and its own random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// The sequence's tokens so far, for the penalties (kept only when a
    /// penalty is on).
    tally: TokenTally,
    /// Scratch row of the weights of a draw from the whole distribution,
    /// reused from token to token.
    weights: Vec<f32>,
}

/// Index of the largest value; the first one on ties (like `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax_of(logits: &[f32], token: u32) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let log_z = max + sum.ln();
    (logits[token as usize] - log_z, log_z)
}

impl Sampler {
    /// A sampler seeded from `params.seed`, or from the OS when unset.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            tally: TokenTally::default(),
            weights: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Applies bias, suppression and penalties to `logits` in place.
    fn adjust(&mut self, logits: &mut [f32], history: History<'_>) {
        let p = &self.params;
        for &(token, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(token as usize) {
                *l += bias;
            }
        }
        for &token in history.suppressed {
            if let Some(l) = logits.get_mut(token as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let repetition = p.repetition_penalty != 1.0;
        let presence = p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if repetition || presence {
            self.tally.update(&history);
        }
        if repetition {
            for &t in self.tally.distinct() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if presence {
            for (t, c) in self.tally.counts() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
    }

    /// Picks the next token from `logits` (modified in place).
    pub fn sample(&mut self, logits: &mut [f32], history: History<'_>) -> Sampled {
        self.adjust(logits, history);
        let token = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let logprobs = self.params.logprobs.map(|k| {
            let (logprob, log_z) = log_softmax_of(logits, token);
            let mut top: Vec<(u32, f32)> = Vec::with_capacity(k);
            if k > 0 {
                let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
                let by_desc = |a: &u32, b: &u32| {
                    logits[*b as usize]
                        .total_cmp(&logits[*a as usize])
                        .then(a.cmp(b))
                };
                let k = k.min(idx.len());
                idx.select_nth_unstable_by(k - 1, by_desc);
                idx.truncate(k);
                idx.sort_unstable_by(by_desc);
                top.extend(idx.into_iter().map(|t| (t, logits[t as usize] - log_z)));
            }
            // `max` also turns a NaN into the floor.
            let floor = |l: f32| l.max(MIN_LOGPROB);
            top.iter_mut().for_each(|(_, l)| *l = floor(*l));
            TokenLogprobs {
                logprob: floor(logprob),
                top,
            }
        });
        Sampled { token, logprobs }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let truncated = (p.top_k > 0 && p.top_k < logits.len()) || p.top_p < 1.0 || p.min_p > 0.0;
        if !truncated {
            return self.draw_from_all(logits, inv_t);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v * inv_t))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < candidates.len() {
            candidates.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            candidates.truncate(p.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|&(_, v)| (v - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut draw = self.rng.random::<f32>() * total;
        for (i, q) in probs[..keep].iter().enumerate() {
            draw -= q;
            if draw <= 0.0 {
                return candidates[i].0;
            }
        }
        candidates[keep - 1].0
    }

    /// Draws from the whole distribution (no top-k, top-p or min-p), in
    /// vocabulary order, without sorting: each weight is computed once
    /// into the sampler's scratch row, then walked until the draw is spent.
    fn draw_from_all(&mut self, logits: &[f32], inv_t: f32) -> u32 {
        let max = logits
            .iter()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v * inv_t));
        if max == f32::NEG_INFINITY {
            return argmax(logits);
        }
        let weights = &mut self.weights;
        weights.clear();
        weights.extend(logits.iter().map(|&v| {
            if v.is_finite() {
                (v * inv_t - max).exp()
            } else {
                0.0
            }
        }));
        let total: f32 = weights.iter().sum();
        let mut draw = self.rng.random::<f32>() * total;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                last = i;
                draw -= w;
                if draw <= 0.0 {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: History<'static> = History {
        prompt: &[],
        output: &[],
        suppressed: &[],
    };

    fn sampled(params: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(params);
        (0..n)
            .map(|_| s.sample(&mut logits.to_vec(), NONE).token)
            .collect()
    }

    fn random(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::greedy()
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(
            sampled(SamplingParams::greedy(), &[0.1, 3.0, 3.0, -1.0], 1),
            vec![1]
        );
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let a = sampled(random(1.0, 42), &logits, 20);
        assert_eq!(a, sampled(random(1.0, 42), &logits, 20));
        assert!(
            a.iter().any(|&t| t != a[0]),
            "sampling at temperature 1 should vary"
        );
        assert_ne!(a, sampled(random(1.0, 43), &logits, 20));
    }

    #[test]
    fn the_whole_distribution_is_drawn_from_in_proportion() {
        // Weights 1 : 3 : 0 (a masked token) at temperature 1, unsorted:
        // 2,000 seeded draws land close to a quarter and three quarters.
        let logits = [0.0, 3f32.ln(), f32::NEG_INFINITY];
        let draws = sampled(random(1.0, 7), &logits, 2000);
        let ones = draws.iter().filter(|&&t| t == 1).count();
        assert!(draws.iter().all(|&t| t < 2));
        assert!((1400..1600).contains(&ones), "{ones} of 2000");
    }

    #[test]
    fn top_k_top_p_and_min_p_restrict_the_support() {
        let logits = [5.0, 4.0, 0.0, -2.0, -3.0];
        let top_k = SamplingParams {
            top_k: 2,
            ..random(1.0, 1)
        };
        assert!(sampled(top_k, &logits, 200).iter().all(|&t| t < 2));
        let top_p = SamplingParams {
            top_p: 0.5,
            ..random(1.0, 1)
        };
        assert!(sampled(top_p, &logits, 200).iter().all(|&t| t == 0));
        // p(1)/p(0) = e^-1 ≈ 0.37: min_p 0.3 keeps two tokens, 0.5 keeps one.
        let min_p = SamplingParams {
            min_p: 0.3,
            ..random(1.0, 1)
        };
        let got = sampled(min_p, &logits, 300);
        assert!(got.iter().all(|&t| t < 2) && got.contains(&1));
        let min_p = SamplingParams {
            min_p: 0.5,
            ..random(1.0, 1)
        };
        assert!(sampled(min_p, &logits, 100).iter().all(|&t| t == 0));
    }

    #[test]
    fn bias_suppression_and_penalties() {
        let logits = [1.0, 2.0, 3.0];
        let biased = SamplingParams {
            logit_bias: vec![(0, 5.0)],
            ..SamplingParams::greedy()
        };
        assert_eq!(sampled(biased, &logits, 1), vec![0]);

        let mut s = Sampler::new(SamplingParams::greedy());
        let h = History {
            prompt: &[],
            output: &[],
            suppressed: &[2],
        };
        assert_eq!(s.sample(&mut logits.to_vec(), h).token, 1);

        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.8,
            ..SamplingParams::greedy()
        });
        let h = History {
            prompt: &[],
            output: &[2, 2],
            suppressed: &[],
        };
        assert_eq!(
            s.sample(&mut logits.to_vec(), h).token,
            1,
            "3 - 2·0.8 = 1.4 < 2"
        );

        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 1.5,
            ..SamplingParams::greedy()
        });
        let h = History {
            prompt: &[],
            output: &[2, 2],
            suppressed: &[],
        };
        assert_eq!(
            s.sample(&mut logits.to_vec(), h).token,
            1,
            "3 - 1.5 = 1.5 < 2"
        );

        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        let h = History {
            prompt: &[2],
            output: &[],
            suppressed: &[],
        };
        assert_eq!(
            s.sample(&mut logits.to_vec(), h).token,
            1,
            "3 / 2 = 1.5 < 2"
        );
    }

    #[test]
    fn logprobs_are_normalised_and_ranked() {
        let logits = [0.0f32, 1.0, 2.0];
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy()
        });
        let out = s.sample(&mut logits.to_vec(), NONE);
        let lp = out.logprobs.expect("asked for");
        let z: f32 = logits.iter().map(|v| v.exp()).sum::<f32>().ln();
        assert!((lp.logprob - (2.0 - z)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!((lp.top[1].1 - (1.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn ruled_out_alternatives_get_the_floor_not_minus_infinity() {
        // A grammar left one token: the others are -inf.
        let mut logits = [f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY];
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(3),
            ..SamplingParams::greedy()
        });
        let lp = s.sample(&mut logits, NONE).logprobs.expect("asked for");
        assert_eq!(lp.logprob, 0.0);
        assert_eq!(lp.top[0], (1, 0.0));
        assert!(lp.top[1..].iter().all(|&(_, l)| l == MIN_LOGPROB), "{lp:?}");
    }

    #[test]
    fn a_vanishing_temperature_decodes_greedily() {
        let logits = [0.0f32, 1.0, 0.5];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1e-40,
            seed: Some(1),
            ..SamplingParams::greedy()
        });
        assert!(s.params().is_greedy());
        assert_eq!(s.sample(&mut logits.to_vec(), NONE).token, 1);
    }
}
