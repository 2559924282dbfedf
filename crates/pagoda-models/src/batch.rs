//! The input of one forward pass: the new tokens of several sequences,
//! flattened, each with where it starts and where its KV lives.

use crate::kv_cache::BlockId;

/// Which positions of a chunk need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None: an intermediate chunk of a long prompt (the output head is skipped).
    None,
    /// The last token only: the next-token distribution.
    Last,
    /// Every token of the chunk (prompt logprobs, reference tests).
    All,
}

/// The new tokens of one sequence in a batch.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// Token ids to process, at positions `start_pos..start_pos + tokens.len()`.
    pub tokens: &'a [u32],
    /// Positions of this sequence already in the KV cache.
    pub start_pos: usize,
    /// Blocks holding this sequence's KV, covering at least `start_pos + tokens.len()` positions.
    pub block_table: &'a [BlockId],
    /// Which rows of logits to return.
    pub logits: LogitsWanted,
}

impl SeqChunk<'_> {
    /// Number of logit rows this chunk yields.
    pub fn logit_rows(&self) -> usize {
        match self.logits {
            LogitsWanted::None => 0,
            LogitsWanted::Last => 1,
            LogitsWanted::All => self.tokens.len(),
        }
    }
}

/// Logits of a forward pass: rows in the order of the batch's chunks, each
/// chunk contributing [`SeqChunk::logit_rows`] rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Row width.
    pub vocab_size: usize,
    /// `rows * vocab_size` values.
    pub data: Vec<f32>,
}

impl Logits {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab_size.max(1)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab_size..(i + 1) * self.vocab_size]
    }
}
