//! Which activation path a model's block-quantized layers take: one named
//! for every model, or chosen per model at load by its size.
//!
//! The rule behind [`ActivationChoice::Auto`] comes from `pagoda quality`
//! (next-token distributions against f32 activations over
//! `tests/fixtures/quality_text.txt`): one 8-bit pass moves them most on
//! small models — SmolLM2-135M: mean KL 2.9e-3 nats, 97.6% of most-likely
//! tokens kept, enough to turn its answer to "What is the capital of
//! France?" from Paris into nonsense — and two passes stay within f32
//! noise everywhere (mean KL ~1e-8). Two passes cost twice the integer
//! arithmetic: little in absolute time on a small model, but most of
//! pagoda's prefill lead over llama.cpp on 1B-class ones, where one pass
//! keeps 99%+ of the most-likely tokens. So small models get two passes
//! and larger ones one; `--activations` overrides either way.

use crate::layers::linear::Activations;

/// How the activation path is picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActivationChoice {
    /// Per model: [`Activations::Int8x2`] below
    /// [`ActivationChoice::INT8_FROM_PARAMETERS`] weights, [`Activations::Int8`]
    /// from there.
    #[default]
    Auto,
    /// The same path for every model.
    Fixed(Activations),
}

impl ActivationChoice {
    /// The size from which [`ActivationChoice::Auto`] takes one 8-bit pass.
    pub const INT8_FROM_PARAMETERS: u64 = 1_000_000_000;

    /// The path for a model of `parameters` weights.
    pub fn resolve(self, parameters: u64) -> Activations {
        match self {
            ActivationChoice::Fixed(a) => a,
            ActivationChoice::Auto if parameters < Self::INT8_FROM_PARAMETERS => {
                Activations::Int8x2
            }
            ActivationChoice::Auto => Activations::Int8,
        }
    }

    /// The name in flags and logs (`auto`, or the fixed path's).
    pub fn name(self) -> &'static str {
        match self {
            ActivationChoice::Auto => "auto",
            ActivationChoice::Fixed(a) => a.name(),
        }
    }
}

impl From<Activations> for ActivationChoice {
    fn from(a: Activations) -> Self {
        ActivationChoice::Fixed(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_two_passes_below_a_billion_weights() {
        let auto = ActivationChoice::Auto;
        assert_eq!(auto.resolve(134_515_008), Activations::Int8x2);
        assert_eq!(auto.resolve(999_999_999), Activations::Int8x2);
        assert_eq!(auto.resolve(1_235_814_400), Activations::Int8);
        let fixed = ActivationChoice::from(Activations::F32);
        assert_eq!(fixed.resolve(10), Activations::F32);
        assert_eq!(fixed.name(), "f32");
    }
}
