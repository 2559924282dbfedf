//! Rotary position embeddings (RoFormer, <https://arxiv.org/abs/2104.09864>),
//! with the frequency scalings of Hugging Face's `modeling_rope_utils.py`.
//!
//! The inverse frequencies are computed once per model; the cos/sin of the
//! positions in a batch are computed once per forward pass and shared by all
//! layers ([`RopeAngles`]).

use crate::config::{RopeConfig, RopeLayout, RopeScaling};

/// The inverse frequencies of one model's rotary embedding.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    layout: RopeLayout,
    dim: usize,
}

impl Rope {
    /// Computes the (scaled) inverse frequencies for `config`.
    pub fn new(config: &RopeConfig) -> Self {
        let half = config.dim / 2;
        let base: Vec<f32> = (0..half)
            .map(|i| 1.0 / config.theta.powf((2 * i) as f32 / config.dim as f32))
            .collect();
        let inv_freq = match &config.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(factors) => {
                base.iter().zip(factors).map(|(f, d)| f / d).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old_len = *original_max_position_embeddings as f32;
                let low_wavelen = old_len / low_freq_factor;
                let high_wavelen = old_len / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_len / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Self {
            inv_freq,
            layout: config.layout,
            dim: config.dim,
        }
    }

    /// The cos/sin of every position in `positions`, one row per token.
    pub fn angles(&self, positions: &[usize]) -> RopeAngles {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeAngles {
            cos,
            sin,
            half,
            layout: self.layout,
            dim: self.dim,
        }
    }
}

/// The cos/sin of a batch's positions, ready to rotate queries and keys.
#[derive(Debug, Clone)]
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    layout: RopeLayout,
    dim: usize,
}

impl RopeAngles {
    /// Rotates `x`, laid out `[tokens, heads, head_dim]`, in place. Token `t`
    /// uses the `t`-th position the angles were computed for.
    pub fn apply(&self, x: &mut [f32], heads: usize, head_dim: usize) {
        let half = self.half;
        for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let cos = &self.cos[t * half..(t + 1) * half];
            let sin = &self.sin[t * half..(t + 1) * half];
            for head in token.chunks_exact_mut(head_dim) {
                let rotated = &mut head[..self.dim];
                match self.layout {
                    RopeLayout::Interleaved => {
                        for (i, pair) in rotated.chunks_exact_mut(2).enumerate() {
                            let (a, b) = (pair[0], pair[1]);
                            pair[0] = a * cos[i] - b * sin[i];
                            pair[1] = a * sin[i] + b * cos[i];
                        }
                    }
                    RopeLayout::Halves => {
                        let (lo, hi) = rotated.split_at_mut(half);
                        for i in 0..half {
                            let (a, b) = (lo[i], hi[i]);
                            lo[i] = a * cos[i] - b * sin[i];
                            hi[i] = b * cos[i] + a * sin[i];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layout: RopeLayout, scaling: RopeScaling) -> RopeConfig {
        RopeConfig {
            theta: 10_000.0,
            dim: 8,
            layout,
            scaling,
        }
    }

    #[test]
    fn position_zero_is_identity() {
        let rope = Rope::new(&config(RopeLayout::Halves, RopeScaling::None));
        let mut x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let before = x.clone();
        rope.angles(&[0]).apply(&mut x, 2, 8);
        assert_eq!(x, before);
    }

    #[test]
    fn rotation_preserves_norm_and_layouts_agree_up_to_permutation() {
        let halves = Rope::new(&config(RopeLayout::Halves, RopeScaling::None));
        let inter = Rope::new(&config(RopeLayout::Interleaved, RopeScaling::None));
        let x: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
        // The interleaved layout is the halves layout on permuted dimensions.
        let perm: Vec<usize> = (0..4).flat_map(|i| [i, i + 4]).collect();
        let mut a = x.clone();
        halves.angles(&[7]).apply(&mut a, 1, 8);
        let mut b: Vec<f32> = perm.iter().map(|&i| x[i]).collect();
        inter.angles(&[7]).apply(&mut b, 1, 8);
        for (j, &i) in perm.iter().enumerate() {
            assert!((a[i] - b[j]).abs() < 1e-6);
        }
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((norm(&a) - norm(&x)).abs() < 1e-5);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_slows_low_frequencies() {
        let scaled = Rope::new(&RopeConfig {
            theta: 500_000.0,
            dim: 128,
            layout: RopeLayout::Halves,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
        });
        let plain = Rope::new(&RopeConfig {
            theta: 500_000.0,
            dim: 128,
            layout: RopeLayout::Halves,
            scaling: RopeScaling::None,
        });
        assert_eq!(scaled.inv_freq[0], plain.inv_freq[0]);
        let last = plain.inv_freq.len() - 1;
        assert!((scaled.inv_freq[last] - plain.inv_freq[last] / 8.0).abs() < 1e-12);
    }
}
