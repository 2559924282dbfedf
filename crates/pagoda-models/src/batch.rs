//! The input of one forward pass: the new tokens of several sequences,
//! flattened, each with where it starts and where its KV lives.

use crate::error::{ModelError, Result};
use crate::layers::kv_cache::{BlockId, KvLayout, PagedKvCache};

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
    /// The blocks of the window pool for the layers that attend over a
    /// sliding window, when the cache has one
    /// ([`PagedKvCache::with_window_pool`]): covering the same positions,
    /// the entries before the oldest query's window may be any block (they
    /// are not read). Empty otherwise.
    pub window_table: &'a [BlockId],
    /// Which rows of logits to return.
    pub logits: LogitsWanted,
}

impl<'a> SeqChunk<'a> {
    /// The table layer `layer` of `cache` reads and writes.
    pub fn table_for(&self, cache: &PagedKvCache, layer: usize) -> &'a [BlockId] {
        if cache.uses_window_table(layer) {
            self.window_table
        } else {
            self.block_table
        }
    }

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

/// Checks a batch before a forward pass: the cache was built for `layout`
/// (in any element type),
/// every chunk has tokens, stays inside a context of `context` positions,
/// and has a block table that covers it.
pub(crate) fn check_batch(
    batch: &[SeqChunk<'_>],
    cache: &PagedKvCache,
    layout: KvLayout,
    context: usize,
) -> Result<()> {
    if cache.layout().with_dtype(layout.dtype) != layout {
        return Err(ModelError::InvalidBatch(format!(
            "the KV cache was built for {:?}, the model needs {layout:?}",
            cache.layout(),
        )));
    }
    for chunk in batch {
        if chunk.tokens.is_empty() {
            return Err(ModelError::InvalidBatch("a chunk with no tokens".into()));
        }
        let end = chunk.start_pos + chunk.tokens.len();
        if end > context {
            return Err(ModelError::InvalidBatch(format!(
                "position {} is past the context window of {context}",
                end - 1,
            )));
        }
        cache.check_table(chunk.block_table, end)?;
        cache.check_window_table(chunk.window_table, end)?;
    }
    Ok(())
}

/// The token ids of a batch, flattened, and the position of each.
pub(crate) fn flat_tokens(batch: &[SeqChunk<'_>]) -> (Vec<u32>, Vec<usize>) {
    let tokens = batch
        .iter()
        .flat_map(|s| s.tokens.iter().copied())
        .collect();
    let positions = batch
        .iter()
        .flat_map(|s| s.start_pos..s.start_pos + s.tokens.len())
        .collect();
    (tokens, positions)
}

/// The rows of `x` (`hidden` values per token of the flattened batch) whose
/// logits the chunks asked for, in order.
pub(crate) fn rows_wanting_logits(batch: &[SeqChunk<'_>], x: &[f32], hidden: usize) -> Vec<f32> {
    let mut selected = Vec::new();
    let mut offset = 0;
    for chunk in batch {
        let n = chunk.tokens.len();
        let range = match chunk.logits {
            LogitsWanted::None => offset..offset,
            LogitsWanted::Last => offset + n - 1..offset + n,
            LogitsWanted::All => offset..offset + n,
        };
        selected.extend_from_slice(&x[range.start * hidden..range.end * hidden]);
        offset += n;
    }
    selected
}
