//! Speculative sampling's verification of one drafted token (Leviathan et
//! al. 2023, <https://arxiv.org/abs/2211.17192>; Chen et al. 2023,
//! <https://arxiv.org/abs/2302.01318>): a token drafted from `q` is kept
//! with probability `min(1, p(x) / q(x))` under the target's `p`; when it
//! is not, the token is drawn from the residual `max(0, p − q)`,
//! renormalised. Whatever the draft, the token that comes out follows `p`
//! exactly. A deterministic drafter (prompt lookup: `q` all on its token)
//! is the case `q = δ(x)`: kept with probability `p(x)`, else drawn from
//! `p` without `x`. Under greedy decoding the drafted token is kept exactly
//! when it is the target's argmax, so the output is the target's own.
//!
//! The engine's speculative decoding (issue [12]) builds on this step; the
//! drafting and the batched verification are not written yet.

use rand::Rng;

/// What verifying a drafted token decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The drafted token stands; the next drafted one is verified next.
    Accepted(u32),
    /// The drafted token is replaced by this one, drawn from the residual;
    /// the drafts after it are dropped.
    Replaced(u32),
}

/// Verifies the drafted `token` against the target's probabilities `p` and
/// the drafter's `q` (`None`: a deterministic drafter, all of `q` on
/// `token`); `p` and `q` are distributions over the same vocabulary.
pub fn verify(token: u32, p: &[f32], q: Option<&[f32]>, rng: &mut impl Rng) -> Verdict {
    let t = token as usize;
    let p_t = p.get(t).copied().unwrap_or(0.0).max(0.0);
    let q_t = match q {
        Some(q) => q.get(t).copied().unwrap_or(0.0).max(0.0),
        None => 1.0,
    };
    let keep = if q_t > 0.0 { (p_t / q_t).min(1.0) } else { 1.0 };
    if rng.random::<f32>() < keep {
        return Verdict::Accepted(token);
    }
    // The residual max(0, p − q), drawn by inverse transform.
    let residual = |i: usize| -> f32 {
        let q_i = match q {
            Some(q) => q.get(i).copied().unwrap_or(0.0),
            None if i == t => 1.0,
            None => 0.0,
        };
        (p[i] - q_i).max(0.0)
    };
    let total: f32 = (0..p.len()).map(residual).sum();
    if total <= 0.0 {
        // p ≤ q everywhere means p = q: the draft could not have been refused.
        return Verdict::Accepted(token);
    }
    let mut u = rng.random::<f32>() * total;
    let mut last = t;
    for i in 0..p.len() {
        let r = residual(i);
        if r > 0.0 {
            last = i;
            if u < r {
                return Verdict::Replaced(i as u32);
            }
            u -= r;
        }
    }
    Verdict::Replaced(last as u32)
}

/// Greedy verification: the drafted token stands when it is the target's
/// argmax (the first of equal maxima: the sampler's own [`argmax`]), else
/// the argmax replaces it.
///
/// [`argmax`]: crate::sampler::argmax
pub fn verify_greedy(token: u32, p: &[f32]) -> Verdict {
    let best = crate::sampler::argmax(p);
    if best == token {
        Verdict::Accepted(token)
    } else {
        Verdict::Replaced(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn draw(q: &[f32], rng: &mut StdRng) -> u32 {
        let mut u: f32 = rng.random();
        for (i, &x) in q.iter().enumerate() {
            if u < x {
                return i as u32;
            }
            u -= x;
        }
        (q.len() - 1) as u32
    }

    fn token(v: Verdict) -> u32 {
        match v {
            Verdict::Accepted(t) | Verdict::Replaced(t) => t,
        }
    }

    /// Total variation between the empirical distribution of `counts` and `p`.
    fn tv(counts: &[u32], p: &[f32]) -> f64 {
        let n: u32 = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .map(|(&c, &x)| (c as f64 / n as f64 - x as f64).abs())
            .sum::<f64>()
            / 2.0
    }

    /// A fixed seed and count: the same outcome on every run. 200,000 draws
    /// put the sampling noise of the total variation near 0.002; the bound
    /// is 0.01, and a verifier that kept every draft would sit at the
    /// distance between q and p (0.35 here).
    #[test]
    fn the_output_follows_the_target_whatever_the_draft() {
        let p = [0.5f32, 0.2, 0.15, 0.1, 0.05];
        let q = [0.1f32, 0.4, 0.1, 0.2, 0.2];
        let mut rng = StdRng::seed_from_u64(12);
        let (mut counts, mut accepted) = ([0u32; 5], 0u32);
        for _ in 0..200_000 {
            let x = draw(&q, &mut rng);
            let v = verify(x, &p, Some(&q), &mut rng);
            accepted += matches!(v, Verdict::Accepted(_)) as u32;
            counts[token(v) as usize] += 1;
        }
        assert!(tv(&counts, &p) < 0.01, "{counts:?}");
        // The acceptance rate is Σ min(p, q) = 0.1+0.2+0.1+0.1+0.05 = 0.55.
        let rate = accepted as f64 / 200_000.0;
        assert!((rate - 0.55).abs() < 0.01, "{rate}");
        // Without the residual (drafts kept as drawn) the output is q's.
        let kept: Vec<u32> = (0..5).map(|i| (q[i] * 200_000.0) as u32).collect();
        assert!(tv(&kept, &p) > 0.3);
    }

    #[test]
    fn a_deterministic_draft_is_kept_with_the_targets_probability() {
        let p = [0.6f32, 0.3, 0.1];
        let mut rng = StdRng::seed_from_u64(5);
        let (mut counts, mut accepted) = ([0u32; 3], 0u32);
        for _ in 0..200_000 {
            let v = verify(1, &p, None, &mut rng);
            accepted += matches!(v, Verdict::Accepted(_)) as u32;
            counts[token(v) as usize] += 1;
        }
        assert!(tv(&counts, &p) < 0.01, "{counts:?}");
        assert!((accepted as f64 / 200_000.0 - 0.3).abs() < 0.01);
    }

    #[test]
    fn greedy_keeps_exactly_the_targets_argmax() {
        assert_eq!(verify_greedy(2, &[0.1, 0.2, 0.7]), Verdict::Accepted(2));
        assert_eq!(verify_greedy(1, &[0.1, 0.2, 0.7]), Verdict::Replaced(2));
        // Ties go to the first maximum, as greedy sampling does.
        assert_eq!(verify_greedy(1, &[0.4, 0.4, 0.2]), Verdict::Replaced(0));
        assert_eq!(verify_greedy(0, &[0.4, 0.4, 0.2]), Verdict::Accepted(0));
    }
}
