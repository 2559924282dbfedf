//! The mixture of experts: a router that picks `top_k` of
//! `n_routed_experts` SwiGLU experts per token and weighs them, plus (in
//! DeepSeek) shared experts every token goes through. DeepSeek-V2's softmax
//! router with greedy choice is also Qwen3-MoE's (`norm_topk_prob` as its
//! config says) and Mixtral's (always renormalised), with no shared
//! experts and a scaling factor of 1; the difference is in the tensor names
//! ([`ExpertNames`]).
//!
//! Papers: DeepSeekMoE and DeepSeek-V2 <https://arxiv.org/abs/2405.04434>
//! (softmax scores, greedy or group-limited greedy selection), DeepSeek-V3
//! <https://arxiv.org/abs/2412.19437> (sigmoid scores; the selection — not
//! the weights — corrected by a per-expert bias for load balancing without
//! an auxiliary loss). Reference implementation: Hugging Face transformers
//! `DeepseekV2TopkRouter`, `DeepseekV3TopkRouter`, `DeepseekV3Experts` and
//! `DeepseekV3MoE` (5.x).
//!
//! The batch is flattened: the router runs once for all tokens, then the
//! tokens are grouped by expert so each expert runs one matrix product over
//! the rows routed to it. The dense kernel computes every output row with
//! the same operations whatever the row count, and each token adds its
//! experts' outputs in ascending expert order, so a token's output does not
//! depend on its batch-mates.

use crate::error::{ModelError, Result};
use crate::formats::tensor_source::{check_shape, TensorSource};
use crate::formats::weight::Weight;
use crate::layers::linear::{Activations, Linear};
use crate::layers::swiglu::SwiGlu;

/// How the softmax router (V2) picks its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxTopk {
    /// The `top_k` highest scores.
    Greedy,
    /// Keep the `topk_group` groups (of `n_routed_experts / n_group`
    /// consecutive experts) whose best score is highest, then the `top_k`
    /// highest scores inside them.
    GroupLimitedGreedy {
        /// Number of groups.
        n_group: usize,
        /// Groups kept per token.
        topk_group: usize,
    },
}

/// How router logits become expert scores, choices and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// DeepSeek-V2: softmax over the logits; the chosen scores are the
    /// weights.
    Softmax {
        /// Which experts are chosen.
        topk: SoftmaxTopk,
        /// DeepSeek's own V2 code normalises the chosen weights to sum to 1
        /// (and then does not apply `routed_scaling_factor`) when this is
        /// set and `top_k > 1`; transformers 5 ignores the flag. Every
        /// released V2 checkpoint has it false, where the two agree.
        norm_topk_prob: bool,
    },
    /// DeepSeek-V3: sigmoid scores; experts are chosen on score +
    /// `e_score_correction_bias`, groups ranked by the sum of their two best
    /// biased scores, and weighed by their unbiased scores.
    Sigmoid {
        /// Number of groups.
        n_group: usize,
        /// Groups kept per token.
        topk_group: usize,
        /// Whether the chosen weights are normalised to sum to 1 (before
        /// `routed_scaling_factor`).
        norm_topk_prob: bool,
    },
}

/// Everything routing needs but the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Routed experts.
    pub n_routed_experts: usize,
    /// Experts per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// Factor on the routed weights.
    pub routed_scaling_factor: f64,
    /// Scores and selection.
    pub gate: Gate,
}

/// One expert chosen for a token, and its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The expert's index.
    pub expert: usize,
    /// What its output is multiplied by.
    pub weight: f32,
}

/// Picks experts from router logits.
#[derive(Debug, Clone)]
pub struct Router {
    config: RouterConfig,
    /// V3's `e_score_correction_bias` (empty for softmax routing).
    e_score_correction_bias: Vec<f32>,
}

/// Indices of the `k` largest `values`, largest first (ties: lower index
/// first; NaN ranks lowest).
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// `scores` with every expert outside the `topk_group` best groups set to
/// `fill`; group `g` is the `scores.len() / group_scores.len()` consecutive
/// experts from `g ·` that size, ranked by `group_scores[g]`.
fn keep_best_groups(
    scores: &[f32],
    group_scores: &[f32],
    topk_group: usize,
    fill: f32,
) -> Vec<f32> {
    let size = scores.len() / group_scores.len();
    let mut masked = vec![fill; scores.len()];
    for g in top_indices(group_scores, topk_group) {
        masked[g * size..(g + 1) * size].copy_from_slice(&scores[g * size..(g + 1) * size]);
    }
    masked
}

/// Checks that `n_group` groups of equal size cover `n` experts and that
/// `topk_group` of them hold at least `top_k` experts.
fn check_groups(n: usize, top_k: usize, n_group: usize, topk_group: usize) -> Result<()> {
    if n_group == 0 || !n.is_multiple_of(n_group) || topk_group == 0 || topk_group > n_group {
        return Err(ModelError::Shape(format!(
            "{topk_group} of {n_group} expert groups over {n} experts"
        )));
    }
    if top_k > topk_group * (n / n_group) {
        return Err(ModelError::Shape(format!(
            "{top_k} experts per token from {topk_group} groups of {}",
            n / n_group
        )));
    }
    Ok(())
}

impl Router {
    /// A router; sigmoid routing needs `e_score_correction_bias` (one value
    /// per routed expert), softmax routing takes none. The configuration
    /// is checked (`top_k` and the groups fit the experts).
    pub fn new(config: RouterConfig, e_score_correction_bias: Option<Vec<f32>>) -> Result<Self> {
        let (n, top_k) = (config.n_routed_experts, config.top_k);
        if top_k == 0 || top_k > n {
            return Err(ModelError::Shape(format!(
                "{top_k} experts per token of {n} routed experts"
            )));
        }
        match config.gate {
            Gate::Softmax {
                topk:
                    SoftmaxTopk::GroupLimitedGreedy {
                        n_group,
                        topk_group,
                    },
                ..
            }
            | Gate::Sigmoid {
                n_group,
                topk_group,
                ..
            } => check_groups(n, top_k, n_group, topk_group)?,
            Gate::Softmax { .. } => {}
        }
        let bias = match (&config.gate, e_score_correction_bias) {
            (Gate::Sigmoid { .. }, Some(b)) if b.len() == config.n_routed_experts => b,
            (Gate::Sigmoid { .. }, b) => {
                return Err(ModelError::Shape(format!(
                    "sigmoid routing needs an e_score_correction_bias of {} values, got {:?}",
                    config.n_routed_experts,
                    b.map(|b| b.len())
                )))
            }
            (Gate::Softmax { .. }, _) => Vec::new(),
        };
        Ok(Self {
            config,
            e_score_correction_bias: bias,
        })
    }

    /// The routing parameters.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The experts of one token from its `n_routed_experts` router logits,
    /// in ascending expert order.
    pub fn route(&self, logits: &[f32]) -> Vec<Choice> {
        let c = &self.config;
        let scale = c.routed_scaling_factor as f32;
        // (experts, their weights, normalise?, then scale?)
        let (chosen, mut weights, normalise, scale_after) = match c.gate {
            Gate::Softmax {
                topk,
                norm_topk_prob,
            } => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut scores: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
                let sum: f32 = scores.iter().sum();
                scores.iter_mut().for_each(|s| *s /= sum);
                let candidates: std::borrow::Cow<'_, [f32]> = match topk {
                    SoftmaxTopk::Greedy => std::borrow::Cow::Borrowed(&scores),
                    SoftmaxTopk::GroupLimitedGreedy {
                        n_group,
                        topk_group,
                    } => {
                        let size = c.n_routed_experts / n_group;
                        let group_scores: Vec<f32> = scores
                            .chunks_exact(size)
                            .map(|g| g.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                            .collect();
                        // Experts of dropped groups score 0, as in transformers'
                        // `DeepseekV2TopkRouter` (`masked_fill(~mask, 0.0)`) and
                        // DeepSeek's own V2 `MoEGate`. Softmax scores are
                        // positive and the kept groups hold at least `top_k`
                        // experts, so a dropped expert can only tie with a kept
                        // one whose score underflowed to 0, and weighs 0 too.
                        keep_best_groups(&scores, &group_scores, topk_group, 0.0).into()
                    }
                };
                let chosen = top_indices(&candidates, c.top_k);
                let weights: Vec<f32> = chosen.iter().map(|&e| candidates[e]).collect();
                // DeepSeek's V2 code: normalised weights are not scaled.
                let normalise = norm_topk_prob && c.top_k > 1;
                (chosen, weights, normalise, !normalise)
            }
            Gate::Sigmoid {
                n_group,
                topk_group,
                norm_topk_prob,
            } => {
                let scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
                let biased: Vec<f32> = scores
                    .iter()
                    .zip(&self.e_score_correction_bias)
                    .map(|(s, b)| s + b)
                    .collect();
                let size = c.n_routed_experts / n_group;
                let group_scores: Vec<f32> = biased
                    .chunks_exact(size)
                    .map(|g| {
                        let best = top_indices(g, 2);
                        best.iter().map(|&i| g[i]).sum()
                    })
                    .collect();
                // Experts of dropped groups score -inf, as in transformers'
                // `DeepseekV3TopkRouter` (`masked_fill(~mask, -inf)`, the
                // fixtures' reference) and DeepSeek-V3's `inference/model.py`
                // `Gate`. The `modeling_deepseek.py` shipped with the V3
                // checkpoints fills 0.0 instead: there an expert of a dropped
                // group can win a place whenever fewer than `top_k` experts of
                // the kept groups have a positive biased score (the bias may
                // be negative).
                let masked =
                    keep_best_groups(&biased, &group_scores, topk_group, f32::NEG_INFINITY);
                let chosen = top_indices(&masked, c.top_k);
                // The bias steers the choice only: weights are the plain scores.
                let weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
                (chosen, weights, norm_topk_prob, true)
            }
        };
        if normalise {
            let denominator = weights.iter().sum::<f32>() + 1e-20;
            weights.iter_mut().for_each(|w| *w /= denominator);
        }
        if scale_after {
            weights.iter_mut().for_each(|w| *w *= scale);
        }
        let mut out: Vec<Choice> = chosen
            .into_iter()
            .zip(weights)
            .map(|(expert, weight)| Choice { expert, weight })
            .collect();
        out.sort_by_key(|c| c.expert);
        out
    }
}

/// A mixture-of-experts block: router, routed experts, shared experts.
#[derive(Debug)]
pub struct Moe {
    /// `mlp.gate`: `[n_routed_experts, hidden]` router logits.
    gate: Linear,
    router: Router,
    experts: Vec<SwiGlu>,
    shared_experts: Option<SwiGlu>,
    hidden: usize,
}

impl Moe {
    /// Assembles a block; `experts` must hold one MLP per routed expert.
    pub fn new(
        gate: Linear,
        router: Router,
        experts: Vec<SwiGlu>,
        shared_experts: Option<SwiGlu>,
    ) -> Result<Self> {
        let n = router.config().n_routed_experts;
        if experts.len() != n || gate.out_features() != n {
            return Err(ModelError::Shape(format!(
                "{} experts and a gate of {} outputs for {n} routed experts",
                experts.len(),
                gate.out_features()
            )));
        }
        let hidden = gate.in_features();
        Ok(Self {
            gate,
            router,
            experts,
            shared_experts,
            hidden,
        })
    }

    /// The block applied to `rows` rows of `x`: each token's routed experts,
    /// weighed and summed in ascending expert order, plus the shared experts.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let h = self.hidden;
        let n = self.experts.len();
        let logits = self.gate.forward(x, rows)?;
        // Tokens (and their weights) per expert, in token order.
        let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
        for (t, row) in logits.chunks_exact(n).enumerate() {
            for choice in self.router.route(row) {
                routed[choice.expert].push((t, choice.weight));
            }
        }
        let mut out = vec![0.0f32; rows * h];
        let mut gathered = Vec::new();
        for (expert, tokens) in self.experts.iter().zip(&routed) {
            if tokens.is_empty() {
                continue;
            }
            gathered.clear();
            for &(t, _) in tokens {
                gathered.extend_from_slice(&x[t * h..(t + 1) * h]);
            }
            let y = expert.forward(&gathered, tokens.len())?;
            for (&(t, w), y) in tokens.iter().zip(y.chunks_exact(h)) {
                for (o, &v) in out[t * h..(t + 1) * h].iter_mut().zip(y) {
                    *o += v * w;
                }
            }
        }
        if let Some(shared) = &self.shared_experts {
            let s = shared.forward(x, rows)?;
            crate::families::decoder::add_in_place(&mut out, &s);
        }
        Ok(out)
    }
}

/// The names of one expert's three projections in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertNames {
    /// The gate (`gate_proj`; Mixtral's `w1`).
    pub gate: &'static str,
    /// The up projection (`up_proj`; Mixtral's `w3`).
    pub up: &'static str,
    /// The down projection (`down_proj`; Mixtral's `w2`).
    pub down: &'static str,
}

impl ExpertNames {
    /// DeepSeek's and Qwen3-MoE's `gate_proj`, `up_proj`, `down_proj`.
    pub const PROJ: Self = Self {
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    };
    /// Mixtral's `w1` (gate), `w3` (up), `w2` (down).
    pub const MIXTRAL: Self = Self {
        gate: "w1",
        up: "w3",
        down: "w2",
    };
}

/// Loads the `n` routed experts of `prefix` (`{prefix}.experts.{i}.{name}`,
/// as checkpoints store them, or transformers' fused
/// `{prefix}.experts.gate_up_proj` `[E, 2·inner, hidden]` and
/// `{prefix}.experts.down_proj` `[E, hidden, inner]`).
pub fn load_experts(
    src: &dyn TensorSource,
    prefix: &str,
    (n, hidden, inner): (usize, usize, usize),
    names: ExpertNames,
    act: Activations,
) -> Result<Vec<SwiGlu>> {
    let fused = format!("{prefix}.experts.gate_up_proj");
    if src
        .get(&format!("{prefix}.experts.0.{}.weight", names.gate))?
        .is_none()
    {
        if let Some(gate_up) = src.get(&fused)? {
            check_shape(src.path(), &fused, &gate_up, &[n, 2 * inner, hidden])?;
            let down_name = format!("{prefix}.experts.down_proj");
            let down = src.require_shape(&down_name, &[n, hidden, inner])?;
            let as_tensor = |w: Weight, name: &str| match w {
                Weight::Dense(t) => Ok(t),
                other => Err(ModelError::Tensor {
                    path: src.path().to_path_buf(),
                    name: name.to_string(),
                    reason: format!("fused experts stored as {}", other.type_name()),
                }),
            };
            let (gate_up, down) = (as_tensor(gate_up, &fused)?, as_tensor(down, &down_name)?);
            return (0..n)
                .map(|e| {
                    let part = |from: usize| -> Result<Linear> {
                        let t = gate_up.get(e)?.narrow(0, from, inner)?.contiguous()?;
                        Linear::with_activations(Weight::Dense(t), None, act)
                    };
                    let gate_proj = part(0).map_err(|e| e.for_tensor(src.path(), &fused))?;
                    let up_proj = part(inner).map_err(|e| e.for_tensor(src.path(), &fused))?;
                    let down_proj = down
                        .get(e)
                        .and_then(|d| d.contiguous())
                        .map_err(ModelError::from)
                        .and_then(|d| Linear::with_activations(Weight::Dense(d), None, act))
                        .map_err(|e| e.for_tensor(src.path(), &down_name))?;
                    Ok(SwiGlu::new(gate_proj, up_proj, down_proj))
                })
                .collect();
        }
    }
    (0..n)
        .map(|e| {
            let proj = |name: &str, out: usize, inp: usize| {
                Linear::load(
                    src,
                    &format!("{prefix}.experts.{e}.{name}"),
                    out,
                    inp,
                    false,
                    act,
                )
            };
            Ok(SwiGlu::new(
                proj(names.gate, inner, hidden)?,
                proj(names.up, inner, hidden)?,
                proj(names.down, hidden, inner)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(gate: Gate, top_k: usize, scale: f64, bias: Option<Vec<f32>>) -> Router {
        let n = 8;
        Router::new(
            RouterConfig {
                n_routed_experts: n,
                top_k,
                routed_scaling_factor: scale,
                gate,
            },
            bias,
        )
        .expect("router")
    }

    fn experts(choices: &[Choice]) -> Vec<usize> {
        choices.iter().map(|c| c.expert).collect()
    }

    /// Logits whose sigmoid is `p` (so hand-made scores are exact enough).
    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn softmax_greedy_scales_the_top_scores() {
        let r = router(
            Gate::Softmax {
                topk: SoftmaxTopk::Greedy,
                norm_topk_prob: false,
            },
            2,
            1.5,
            None,
        );
        let logits = [0.0, 3.0, 0.5, 2.0, -1.0, 0.0, 2.5, 0.0];
        let got = r.route(&logits);
        assert_eq!(experts(&got), vec![1, 6]);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((got[0].weight - 1.5 * 3f32.exp() / z).abs() < 1e-6);
        assert!((got[1].weight - 1.5 * 2.5f32.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn softmax_group_limited_greedy_ranks_groups_by_their_best_expert() {
        // Four groups of two: best scores 3.0 (g0), 2.9 (g1), 2.95 (g2), 2.0 (g3).
        // Group 1 holds the two next-best experts overall but is dropped.
        let logits = [3.0, -5.0, 2.9, 2.9, 2.95, -5.0, 2.0, 1.0];
        let r = router(
            Gate::Softmax {
                topk: SoftmaxTopk::GroupLimitedGreedy {
                    n_group: 4,
                    topk_group: 2,
                },
                norm_topk_prob: false,
            },
            2,
            1.0,
            None,
        );
        assert_eq!(experts(&r.route(&logits)), vec![0, 4]);
        // With a third expert: the rest of the kept groups (expert 1 before
        // 5 on a tie) beats the dropped group's 2.9s.
        let r3 = router(
            Gate::Softmax {
                topk: SoftmaxTopk::GroupLimitedGreedy {
                    n_group: 4,
                    topk_group: 2,
                },
                norm_topk_prob: false,
            },
            3,
            1.0,
            None,
        );
        assert_eq!(experts(&r3.route(&logits)), vec![0, 1, 4]);
        let greedy3 = router(
            Gate::Softmax {
                topk: SoftmaxTopk::Greedy,
                norm_topk_prob: false,
            },
            3,
            1.0,
            None,
        );
        assert_eq!(experts(&greedy3.route(&logits)), vec![0, 2, 4]);
    }

    #[test]
    fn softmax_normalisation_replaces_the_scaling_factor() {
        let r = router(
            Gate::Softmax {
                topk: SoftmaxTopk::Greedy,
                norm_topk_prob: true,
            },
            2,
            16.0,
            None,
        );
        let got = r.route(&[1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(experts(&got), vec![0, 3]);
        assert!((got[0].weight + got[1].weight - 1.0).abs() < 1e-6);
        let e = 1f32.exp();
        assert!((got[0].weight - e / (e + e * e)).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_bias_steers_the_choice_but_not_the_weights() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
        let logits: Vec<f32> = scores.iter().map(|&p| logit(p)).collect();
        let gate = Gate::Sigmoid {
            n_group: 1,
            topk_group: 1,
            norm_topk_prob: false,
        };
        let plain = router(gate, 2, 1.0, Some(vec![0.0; 8]));
        assert_eq!(experts(&plain.route(&logits)), vec![0, 1]);
        // A bias lifts experts 6 and 7 above the rest; their weights stay
        // their own sigmoid scores.
        let mut bias = vec![0.0; 8];
        bias[6] = 1.0;
        bias[7] = 0.9;
        let biased = router(gate, 2, 2.5, Some(bias));
        let got = biased.route(&logits);
        assert_eq!(experts(&got), vec![6, 7]);
        assert!((got[0].weight - 2.5 * 0.3).abs() < 1e-6);
        assert!((got[1].weight - 2.5 * 0.2).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_groups_rank_by_the_sum_of_their_two_best_biased_scores() {
        // Four groups of two. Group sums: g0 0.95+0.05=1.0, g1 0.6+0.6=1.2,
        // g2 0.7+0.45=1.15, g3 0.3+0.2=0.5. Expert 0 alone scores best, but
        // only groups 1 and 2 are kept.
        let scores = [0.95, 0.05, 0.6, 0.6, 0.7, 0.45, 0.3, 0.2];
        let logits: Vec<f32> = scores.iter().map(|&p| logit(p)).collect();
        let gate = Gate::Sigmoid {
            n_group: 4,
            topk_group: 2,
            norm_topk_prob: true,
        };
        let r = router(gate, 3, 2.5, Some(vec![0.0; 8]));
        let got = r.route(&logits);
        assert_eq!(experts(&got), vec![2, 3, 4]);
        // Normalised over the chosen (unbiased) scores, then scaled.
        let sum = 0.6 + 0.6 + 0.7;
        for (c, s) in got.iter().zip([0.6, 0.6, 0.7]) {
            assert!((c.weight - 2.5 * s / sum).abs() < 1e-6, "{c:?}");
        }
        let total: f32 = got.iter().map(|c| c.weight).sum();
        assert!((total - 2.5).abs() < 1e-5);
        // A bias on group 0's weaker expert makes group 0 win its place.
        let mut bias = vec![0.0; 8];
        bias[1] = 0.3;
        let r = router(gate, 3, 1.0, Some(bias));
        let got = r.route(&logits);
        assert_eq!(experts(&got), vec![0, 2, 3]);
        let sum = 0.95 + 0.6 + 0.6;
        assert!((got[0].weight - 0.95 / sum).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_routing_needs_its_bias() {
        let config = RouterConfig {
            n_routed_experts: 8,
            top_k: 2,
            routed_scaling_factor: 1.0,
            gate: Gate::Sigmoid {
                n_group: 1,
                topk_group: 1,
                norm_topk_prob: true,
            },
        };
        assert!(Router::new(config.clone(), None).is_err());
        assert!(Router::new(config, Some(vec![0.0; 7])).is_err());
    }
}
