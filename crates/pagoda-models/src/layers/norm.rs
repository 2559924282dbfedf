//! RMSNorm (Zhang & Sennrich, <https://arxiv.org/abs/1910.07467>), as in
//! Hugging Face's `LlamaRMSNorm`: statistics in f32, then the learned scale.

/// Root-mean-square layer normalisation with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// A norm over rows of `weight.len()` values.
    pub fn new(weight: Vec<f32>, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// Normalises every row of `x` (rows as wide as the weight).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.weight.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(dim) {
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            let inv = 1.0 / (mean_sq + self.eps).sqrt();
            out.extend(row.iter().zip(&self.weight).map(|(v, w)| w * (v * inv)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms_rows_keep_their_values() {
        let norm = RmsNorm::new(vec![1.0, 2.0], 0.0);
        let y = norm.forward(&[1.0, -1.0, 3.0, 3.0]);
        assert_eq!(y, vec![1.0, -2.0, 1.0, 2.0]);
    }
}
