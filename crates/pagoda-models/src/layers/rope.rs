//! Rotary position embeddings (RoFormer, <https://arxiv.org/abs/2104.09864>),
//! with the frequency scalings of Hugging Face's `modeling_rope_utils.py`
//! (linear, llama3, YaRN).
//!
//! The inverse frequencies are computed once per model; the cos/sin of the
//! positions in a batch are computed once per forward pass and shared by all
//! layers ([`RopeAngles`]).

use crate::families::config::{RopeConfig, RopeLayout, RopeScaling};

/// The inverse frequencies of one model's rotary embedding.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// What every cos and sin is multiplied by (YaRN's attention factor; 1 otherwise).
    attention_factor: f32,
    layout: RopeLayout,
    dim: usize,
}

impl Rope {
    /// Computes the (scaled) inverse frequencies for `config`.
    pub fn new(config: &RopeConfig) -> Self {
        let half = config.dim / 2;
        let base: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta_pow(config.theta, i, config.dim))
            .collect();
        let inv_freq = match &config.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(factors) | RopeScaling::LongRope { factors, .. } => {
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
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => yarn_inv_freq(
                &base,
                config.theta,
                config.dim,
                *factor,
                *original_max_position_embeddings,
                (*beta_fast, *beta_slow),
                *truncate,
            ),
        };
        Self {
            inv_freq,
            attention_factor: config.scaling.attention_factor() as f32,
            layout: config.layout,
            dim: config.dim,
        }
    }

    /// The inverse frequencies, one per rotated pair.
    #[cfg(test)]
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The factor applied to every cos and sin.
    #[cfg(test)]
    pub fn attention_factor(&self) -> f32 {
        self.attention_factor
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
        if self.attention_factor != 1.0 {
            let a = self.attention_factor;
            cos.iter_mut().chain(sin.iter_mut()).for_each(|v| *v *= a);
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
        self.apply_at(x, heads, head_dim, 0);
    }

    /// [`Self::apply`] on the rotated dimensions starting at `offset` of
    /// each head (DeepSeek rotates only the last `qk_rope_head_dim` values
    /// of a query head, and the rope key after the latent).
    pub fn apply_at(&self, x: &mut [f32], heads: usize, head_dim: usize, offset: usize) {
        let half = self.half;
        for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let cos = &self.cos[t * half..(t + 1) * half];
            let sin = &self.sin[t * half..(t + 1) * half];
            for head in token.chunks_exact_mut(head_dim) {
                let rotated = &mut head[offset..offset + self.dim];
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

/// YaRN's inverse frequencies, step for step as transformers'
/// `_compute_yarn_parameters` (the ramp bounds in f64 as Python computes
/// them, the tensors in f32): `base` are the plain frequencies `1 / θ^(2i/d)`.
fn yarn_inv_freq(
    base: &[f32],
    theta: f32,
    dim: usize,
    factor: f64,
    original_max_position_embeddings: usize,
    (beta_fast, beta_slow): (f64, f64),
    truncate: bool,
) -> Vec<f32> {
    let (d, theta) = (dim as f64, theta as f64);
    let correction_dim = |rotations: f64| {
        d * (original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI))
            .ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let mut high = high.min(d - 1.0);
    if low == high {
        // Prevents a division by zero, as the reference does.
        high += 0.001;
    }
    let factor = factor as f32;
    let span = (high - low) as f32;
    base.iter()
        .enumerate()
        .map(|(i, &extrapolation)| {
            // `base` is `1 / pos_freq`; the reference divides again for the
            // interpolated frequency, so recompute `pos_freq` the same way.
            let pos_freq = theta_pow(theta as f32, i, dim);
            let interpolation = 1.0 / (factor * pos_freq);
            let ramp = ((i as f32 - low as f32) / span).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}

/// `θ^(2i/d)` in f32.
fn theta_pow(theta: f32, i: usize, dim: usize) -> f32 {
    theta.powf((2 * i) as f32 / dim as f32)
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

    fn yarn(
        dim: usize,
        factor: f64,
        original: usize,
        mscale: f64,
        mscale_all_dim: f64,
    ) -> RopeConfig {
        RopeConfig {
            theta: 10_000.0,
            dim,
            layout: RopeLayout::Interleaved,
            scaling: RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale,
                mscale_all_dim,
                attention_factor: None,
                truncate: true,
            },
        }
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                ((g as f64) - w).abs() <= 1e-6 * w.abs(),
                "inv_freq[{i}]: {g} vs transformers' {w}"
            );
        }
    }

    /// Reference values printed by transformers 5.24's
    /// `ROPE_INIT_FUNCTIONS["yarn"]` on a `DeepseekV3Config`, and
    /// `yarn_apply_mscale` for the softmax scale.
    #[test]
    fn yarn_matches_transformers() {
        // DeepSeek-V3's own rope: 64 dims, factor 40 over 4096 positions,
        // mscale = mscale_all_dim = 1 (so cos/sin are not scaled).
        let v3 = yarn(64, 40.0, 4096, 1.0, 1.0);
        let rope = Rope::new(&v3);
        let picks = [0, 1, 8, 11, 16, 22, 23, 31];
        let want = [
            1.0,
            0.7498942017555237,
            0.10000000149011612,
            0.039006926119327545,
            0.005500000435858965,
            0.00017782794020604342,
            3.333803397254087e-05,
            3.3338035336782923e-06,
        ];
        let got: Vec<f32> = picks.iter().map(|&i| rope.inv_freq()[i]).collect();
        assert_close(&got, &want);
        assert_eq!(rope.attention_factor(), 1.0);
        // Softmax scale of a 128 + 64 query head: 192^-0.5 · mscale².
        let scale = (192f64).powf(-0.5) * v3.scaling.yarn_softmax_mscale();
        assert!((scale - 0.1352337788608801).abs() < 1e-12, "{scale}");

        // Default attention factor 0.1 ln(4) + 1 without mscale.
        let plain = Rope::new(&yarn(16, 4.0, 32, 0.0, 0.0));
        assert_close(
            plain.inv_freq(),
            &[
                1.0,
                0.19764235615730286,
                0.02500000037252903,
                0.007905694656074047,
                0.0024999999441206455,
                0.0007905694656074047,
                0.0002500000118743628,
                7.905694656074047e-05,
            ],
        );
        assert!((plain.attention_factor() as f64 - 1.138629436111989).abs() < 1e-6);
        let mut x = vec![1.0f32; 16];
        plain.angles(&[0]).apply(&mut x, 1, 16);
        assert!(
            x.iter().all(|&v| (v - 1.138_629_4).abs() < 1e-6),
            "cos(0) is scaled"
        );
        // mscale / mscale_all_dim ratio.
        let ratio = Rope::new(&yarn(8, 4.0, 32, 0.707, 1.0));
        assert!((ratio.attention_factor() as f64 - 0.964326914892074).abs() < 1e-6);
        let c = yarn(8, 4.0, 32, 0.707, 1.0);
        assert!(
            (24f64.powf(-0.5) * c.scaling.yarn_softmax_mscale() - 0.2646422579642267).abs() < 1e-12
        );
    }

    #[test]
    fn apply_at_rotates_only_the_named_dimensions() {
        let rope = Rope::new(&RopeConfig {
            theta: 10_000.0,
            dim: 4,
            layout: RopeLayout::Interleaved,
            scaling: RopeScaling::None,
        });
        let angles = rope.angles(&[3]);
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.3).cos()).collect();
        // Two heads of 6: 2 untouched values, then 4 rotated.
        let mut got = x.clone();
        angles.apply_at(&mut got, 2, 6, 2);
        for h in 0..2 {
            assert_eq!(got[h * 6..h * 6 + 2], x[h * 6..h * 6 + 2]);
            let mut tail = x[h * 6 + 2..h * 6 + 6].to_vec();
            angles.apply(&mut tail, 1, 4);
            assert_eq!(got[h * 6 + 2..h * 6 + 6], tail[..]);
        }
    }
}
