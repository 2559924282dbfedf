//! Sampling defaults and stop ids a checkpoint ships (`generation_config.json`).

use serde::Deserialize;

use crate::families::config::OneOrMany;

/// The defaults a model's authors recommend; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    /// Ids that end generation, besides the tokenizer's eos.
    pub eos_token_id: Option<OneOrMany>,
    /// Begin-of-sequence id.
    pub bos_token_id: Option<OneOrMany>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Top-k cut-off.
    pub top_k: Option<u32>,
    /// Repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Whether the authors sample (true) or decode greedily (false).
    pub do_sample: Option<bool>,
}

impl GenerationDefaults {
    /// The extra stop ids, as a list.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default()
    }
}
