//! One choice's walk through its grammar: which tokens may come next (a
//! mask over the vocabulary, computed while the forward pass runs), the
//! mask applied to the logits, and the chosen token consumed.

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use crate::grammar::Grammar;

/// A choice's grammar state.
pub(crate) struct Constraint {
    matcher: Matcher,
    /// The allowed next tokens, once computed for the current position.
    mask: Option<Result<SimpleVob, String>>,
}

/// What consuming a token did to the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More output is allowed.
    Open,
    /// The grammar is complete: nothing but the end may follow.
    Complete,
}

impl Constraint {
    /// At the start of the output.
    pub(crate) fn new(grammar: &Grammar) -> Self {
        Self {
            matcher: grammar.start(),
            mask: None,
        }
    }

    /// Computes the mask of the current position, unless already done.
    /// Returns the microseconds it took (0 when it was already there).
    pub(crate) fn prepare(&mut self) -> u64 {
        if self.mask.is_some() {
            return 0;
        }
        let started = std::time::Instant::now();
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| e.to_string());
        self.mask = Some(mask);
        started.elapsed().as_micros() as u64
    }

    /// Forbids every token the grammar does not allow here: their logits
    /// become −∞.
    pub(crate) fn apply(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.prepare();
        match &self.mask {
            Some(Ok(mask)) => {
                mask.iter_unset_entries(|i| {
                    if let Some(l) = logits.get_mut(i) {
                        *l = f32::NEG_INFINITY;
                    }
                });
                // Ids past the mask (never the case when the trie spans the
                // logits) are not allowed either.
                for l in logits.iter_mut().skip(mask.len()) {
                    *l = f32::NEG_INFINITY;
                }
                Ok(())
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err("no mask was computed".into()),
        }
    }

    /// Settles the sampled `token`: an allowed one stands, otherwise (every
    /// allowed logit was −∞, say a stop token suppressed by `min_tokens`)
    /// the grammar wins with its first allowed token. A token that is not
    /// one of `stop_ids` is consumed. Returns the token and whether the
    /// choice ends with it (a stop token, or the grammar is complete).
    pub(crate) fn settle(&mut self, token: u32, stop_ids: &[u32]) -> Result<(u32, bool), String> {
        self.prepare();
        let token = match &self.mask {
            Some(Ok(m)) if !m.is_allowed(token) => m.first_bit_set().map_or(token, |t| t as u32),
            _ => token,
        };
        if stop_ids.contains(&token) {
            return Ok((token, true));
        }
        Ok((token, self.consume(token)? == Progress::Complete))
    }

    /// Moves past `token`, which must be allowed.
    fn consume(&mut self, token: u32) -> Result<Progress, String> {
        self.mask = None;
        self.matcher
            .consume_token(token)
            .map_err(|e| e.to_string())?;
        Ok(if self.matcher.is_stopped() {
            Progress::Complete
        } else {
            Progress::Open
        })
    }
}
