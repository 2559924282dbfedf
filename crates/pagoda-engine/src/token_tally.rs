//! The tokens a sequence has seen, kept up to date as it grows, for the
//! repetition, presence and frequency penalties: each step adds only the
//! tokens that are new since the last one, instead of rebuilding a set from
//! the whole prompt and output on every token.

use std::collections::HashMap;

use crate::sampler::History;

/// Distinct tokens of prompt and output, and how often each output token
/// occurred, as of the last [`TokenTally::update`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenTally {
    /// One bit per token id seen in prompt or output.
    seen: Vec<u64>,
    /// The same tokens as a list, in the order first seen.
    distinct: Vec<u32>,
    /// Occurrences of each output token.
    counts: HashMap<u32, u32>,
    /// Prompt and output tokens already counted.
    counted: (usize, usize),
}

impl TokenTally {
    /// Counts the tokens of `history` not yet counted (all of them if the
    /// history is not a continuation of the last one).
    pub(crate) fn update(&mut self, history: &History<'_>) {
        let (prompt, output) = self.counted;
        if history.prompt.len() < prompt || history.output.len() < output {
            *self = Self::default();
        }
        let (prompt, output) = self.counted;
        for &t in &history.prompt[prompt..] {
            self.see(t);
        }
        for &t in &history.output[output..] {
            self.see(t);
            *self.counts.entry(t).or_default() += 1;
        }
        self.counted = (history.prompt.len(), history.output.len());
    }

    fn see(&mut self, t: u32) {
        let (word, bit) = (t as usize / 64, t % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) == 0 {
            self.seen[word] |= 1 << bit;
            self.distinct.push(t);
        }
    }

    /// Every distinct token of prompt and output, once.
    pub(crate) fn distinct(&self) -> &[u32] {
        &self.distinct
    }

    /// Each output token with its number of occurrences.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.counts.iter().map(|(&t, &c)| (t, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history<'a>(prompt: &'a [u32], output: &'a [u32]) -> History<'a> {
        History {
            prompt,
            output,
            suppressed: &[],
        }
    }

    #[test]
    fn growing_histories_are_counted_once_each() {
        let mut tally = TokenTally::default();
        tally.update(&history(&[5, 7, 5], &[]));
        assert_eq!(tally.distinct(), &[5, 7]);
        tally.update(&history(&[5, 7, 5], &[7, 200]));
        tally.update(&history(&[5, 7, 5], &[7, 200, 7]));
        assert_eq!(tally.distinct(), &[5, 7, 200]);
        let mut counts: Vec<_> = tally.counts().collect();
        counts.sort();
        assert_eq!(counts, vec![(7, 2), (200, 1)]);
    }

    #[test]
    fn a_history_that_is_not_a_continuation_is_counted_afresh() {
        let mut tally = TokenTally::default();
        tally.update(&history(&[1, 2], &[3, 4, 5]));
        tally.update(&history(&[9], &[8]));
        assert_eq!(tally.distinct(), &[9, 8]);
        assert_eq!(tally.counts().collect::<Vec<_>>(), vec![(8, 1)]);
    }
}
