//! What an engine step costs, learnt online: step time ≈ `a + b·P + c·D`
//! for `P` prompt tokens and `D` decoding sequences, fitted by recursive
//! least squares with forgetting (so the estimate follows a machine whose
//! speed drifts), and the prompt tokens a step can take so that the
//! decoding sequences' next token comes within an inter-token target (the
//! idea of Sarathi-Serve's stall-free batching, with the chunk sized from
//! measured costs instead of fixed).

/// How a step's prompt tokens are bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepLatency {
    /// A fixed token budget per step (`--max-tokens-per-step`).
    Fixed,
    /// Prompt tokens sized so that a step with decoding sequences takes
    /// about this many milliseconds.
    TargetMs(f64),
    /// Target: [`AUTO_TARGET_FACTOR`] × the measured decode-only step of the
    /// same batch.
    Auto,
}

/// The automatic target, as a multiple of the decode-only step: a step
/// that also prefills may take half as long again as one that only
/// decodes.
pub const AUTO_TARGET_FACTOR: f64 = 1.5;

/// Before the estimate is warm, a step with decoding sequences takes this
/// many floors of prompt tokens (a cautious chunk, not the whole cap: on a
/// 1B model 64 tokens already take ~200 ms).
pub const COLD_FLOORS: usize = 1;

/// Steps observed before the estimate is used.
const WARM_UP: u32 = 4;

/// Weight of the past per observation (forgetting factor).
const FORGET: f64 = 0.97;

/// The online cost model.
#[derive(Debug, Clone)]
pub struct StepCost {
    /// `[a, b, c]`, in milliseconds.
    theta: [f64; 3],
    /// The inverse information matrix of recursive least squares.
    p: [[f64; 3]; 3],
    observed: u32,
}

impl Default for StepCost {
    fn default() -> Self {
        Self::new()
    }
}

impl StepCost {
    /// A model that knows nothing yet.
    pub fn new() -> Self {
        let mut p = [[0.0; 3]; 3];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = 1e4;
        }
        Self {
            theta: [0.0; 3],
            p,
            observed: 0,
        }
    }

    /// Records a step of `prompt` prompt tokens and `decoding` decoding
    /// sequences that took `ms` milliseconds.
    pub fn observe(&mut self, prompt: usize, decoding: usize, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let x = [1.0, prompt as f64, decoding as f64];
        let px: [f64; 3] = std::array::from_fn(|i| (0..3).map(|j| self.p[i][j] * x[j]).sum());
        let denom = FORGET + (0..3).map(|i| x[i] * px[i]).sum::<f64>();
        if denom <= 0.0 || !denom.is_finite() {
            return;
        }
        let gain: [f64; 3] = std::array::from_fn(|i| px[i] / denom);
        let err = ms - self.predict(prompt, decoding);
        for (t, g) in self.theta.iter_mut().zip(gain) {
            *t += g * err;
        }
        for (row, g) in self.p.iter_mut().zip(gain) {
            for (value, pxj) in row.iter_mut().zip(px) {
                *value = (*value - g * pxj) / FORGET;
            }
        }
        self.observed = self.observed.saturating_add(1);
    }

    /// The predicted time of a step, in milliseconds.
    pub fn predict(&self, prompt: usize, decoding: usize) -> f64 {
        let [a, b, c] = self.theta;
        a + b * prompt as f64 + c * decoding as f64
    }

    /// Whether enough steps were seen to trust the estimate.
    pub fn warmed_up(&self) -> bool {
        self.observed >= WARM_UP
    }

    /// The milliseconds of a step with `decoding` decoding sequences under
    /// `latency`, or `None` when nothing bounds it.
    pub fn target_ms(&self, latency: StepLatency, decoding: usize) -> Option<f64> {
        match latency {
            StepLatency::Fixed => None,
            StepLatency::TargetMs(ms) => Some(ms),
            StepLatency::Auto => Some(AUTO_TARGET_FACTOR * self.predict(0, decoding).max(0.0)),
        }
    }

    /// Prompt tokens a step with `decoding` decoding sequences may take
    /// under `latency`: what fits the target by the estimate, at least
    /// `floor` (prefill always moves on), at most `cap`. Without decoding
    /// sequences, `cap`; before the estimate is warm, [`COLD_FLOORS`]
    /// floors.
    pub fn prompt_budget(
        &self,
        latency: StepLatency,
        decoding: usize,
        floor: usize,
        cap: usize,
    ) -> usize {
        let per_token = self.theta[1];
        match self.target_ms(latency, decoding) {
            Some(_) if decoding > 0 && !self.warmed_up() => (COLD_FLOORS * floor).min(cap),
            Some(target) if decoding > 0 && per_token > 0.0 => {
                let room = (target - self.predict(0, decoding)) / per_token;
                if room.is_finite() {
                    (room.max(0.0) as usize).clamp(floor.min(cap), cap)
                } else {
                    cap
                }
            }
            _ => cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps of a machine where `t = 20 + 0.5·P + 2·D` ms, with a
    /// deterministic wobble of ±1 ms.
    fn machine(cost: &mut StepCost, steps: usize) {
        for i in 0..steps {
            let (p, d) = ((i * 37) % 129, (i * 11) % 17);
            let wobble = ((i % 5) as f64 - 2.0) * 0.5;
            cost.observe(p, d, 20.0 + 0.5 * p as f64 + 2.0 * d as f64 + wobble);
        }
    }

    #[test]
    fn the_costs_are_learnt_from_the_steps() {
        let mut cost = StepCost::new();
        assert!(!cost.warmed_up());
        machine(&mut cost, 200);
        assert!(cost.warmed_up());
        let [a, b, c] = cost.theta;
        assert!((a - 20.0).abs() < 1.0, "{a}");
        assert!((b - 0.5).abs() < 0.02, "{b}");
        assert!((c - 2.0).abs() < 0.1, "{c}");
    }

    #[test]
    fn the_prompt_budget_fits_the_target() {
        let mut cost = StepCost::new();
        // Cold: a cautious floor while streams decode, the cap otherwise.
        assert_eq!(
            cost.prompt_budget(StepLatency::TargetMs(50.0), 8, 16, 512),
            16
        );
        assert_eq!(
            cost.prompt_budget(StepLatency::TargetMs(50.0), 0, 16, 512),
            512
        );
        machine(&mut cost, 200);
        // 8 decoding: 36 ms; a 50 ms target leaves 14 ms, 28 tokens.
        let n = cost.prompt_budget(StepLatency::TargetMs(50.0), 8, 16, 512);
        assert!((26..=30).contains(&n), "{n}");
        // Auto: 1.5 × 36 ms leaves 18 ms, 36 tokens.
        let n = cost.prompt_budget(StepLatency::Auto, 8, 16, 512);
        assert!((33..=39).contains(&n), "{n}");
        // A target below the decode step still prefills the floor.
        assert_eq!(
            cost.prompt_budget(StepLatency::TargetMs(10.0), 8, 16, 512),
            16
        );
        // Nobody decoding, or a fixed budget: the cap.
        assert_eq!(
            cost.prompt_budget(StepLatency::TargetMs(50.0), 0, 16, 512),
            512
        );
        assert_eq!(cost.prompt_budget(StepLatency::Fixed, 8, 16, 128), 128);
        // Garbage timings are ignored.
        let before = cost.theta;
        cost.observe(1, 1, f64::NAN);
        cost.observe(1, 1, -3.0);
        assert_eq!(cost.theta, before);
    }

    #[test]
    fn the_estimate_follows_a_machine_that_slows_down() {
        let mut cost = StepCost::new();
        machine(&mut cost, 100);
        for i in 0..200 {
            let (p, d) = ((i * 37) % 129, (i * 11) % 17);
            cost.observe(p, d, 2.0 * (20.0 + 0.5 * p as f64 + 2.0 * d as f64));
        }
        assert!((cost.theta[1] - 1.0).abs() < 0.05, "{:?}", cost.theta);
    }
}
